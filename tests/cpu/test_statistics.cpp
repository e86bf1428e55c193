// Calibration statistics: measurements against their definitions, the file round trip, merging.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "scratch.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/error.h"
#include "xattn/ops.h"

namespace xattn::calibrate {
namespace {

struct Sample {
  at::Tensor q, k, v;
};

Sample random_sample(int64_t len, uint64_t seed) {
  at::manual_seed(seed);
  // A few strong keys make the attention peaked, as in real models.
  at::Tensor k = at::randn({1, 2, len, 16});
  k.slice(2, 0, 4).mul_(4.0);
  return {at::randn({1, 4, len, 16}) * 2.0, k, at::randn({1, 2, len, 16})};
}

StatisticsSettings small_settings() {
  StatisticsSettings settings;
  settings.block_size = 64;
  settings.taus = {0.3, 0.6, 0.9, 1.0};
  return settings;
}

TEST(Statistics, ProjectedErrorIsTheSparseErrorThroughOProj) {
  // mean over tokens of |W_O,h (o_sparse - o_dense)|^2, against explicit sparse attention; one
  // head's o_proj columns scaled by 10 multiplies its projected error by 100.
  const Sample s = random_sample(300, 3);
  StatisticsSettings settings = small_settings();
  at::manual_seed(5);
  at::Tensor w_o = at::randn({24, 4 * 16}) * 0.2;  // [hidden, heads * d]
  const LayerMeasurement m = measure_layer(s.q, s.k, s.v, settings, w_o);
  runtime::EstimateOptions options;
  options.block_size = 64;
  const at::Tensor scores = runtime::antidiagonal_scores(s.q, s.k, options);
  auto [dense, lse] = runtime::dense_attention(s.q, s.k, s.v, true, std::nullopt);
  const int64_t taus = int64_t(settings.taus.size());
  for (int64_t t = 0; t < taus; ++t) {
    auto [mask, count, index] = runtime::select_blocks(
        scores, at::full({4}, float(settings.taus[t])), 300, 300, options);
    auto [out, out_lse] = runtime::block_sparse_attention(s.q, s.k, s.v, mask, true, std::nullopt, 64);
    for (int64_t h = 0; h < 4; ++h) {
      const at::Tensor w_h = w_o.slice(1, h * 16, (h + 1) * 16).to(at::kDouble);
      const at::Tensor delta = (out[0][h] - dense[0][h]).to(at::kDouble);  // [len, d]
      const double expected = at::matmul(delta, w_h.t()).pow(2).sum().item<double>() / 300.0;
      EXPECT_NEAR(m.projected_error[h * taus + t], expected, 1e-5 * (1.0 + expected))
          << "head " << h << " tau " << settings.taus[t];
    }
  }
  at::Tensor scaled = w_o.clone();
  scaled.slice(1, 16, 32).mul_(10.0);
  const LayerMeasurement m10 = measure_layer(s.q, s.k, s.v, settings, scaled);
  for (int64_t t = 0; t < taus; ++t) {
    EXPECT_NEAR(m10.projected_error[1 * taus + t], 100.0 * m.projected_error[1 * taus + t],
                1e-4 * (1.0 + 100.0 * m.projected_error[1 * taus + t]));
    EXPECT_NEAR(m10.projected_error[0 * taus + t], m.projected_error[0 * taus + t],
                1e-6 * (1.0 + m.projected_error[0 * taus + t]));
  }
  // Without a projection nothing is claimed.
  EXPECT_TRUE(std::isnan(measure_layer(s.q, s.k, s.v, settings).projected_error[0]));
}

TEST(Statistics, PrefixSumPathEqualsMaskedProductPath) {
  // An ascending ladder takes the prefix-sum path (nested selections); the same candidates out of
  // order are not nested and take the masked products. Same figures either way.
  const Sample s = random_sample(333, 9);
  StatisticsSettings ascending = small_settings();
  StatisticsSettings shuffled = ascending;
  shuffled.taus = {0.9, 0.3, 1.0, 0.6};
  const std::vector<int> from_shuffled = {2, 0, 3, 1};  // ascending index of each shuffled entry
  at::manual_seed(2);
  const at::Tensor w_o = at::randn({20, 4 * 16});
  const LayerMeasurement a = measure_layer(s.q, s.k, s.v, ascending, w_o);
  const LayerMeasurement b = measure_layer(s.q, s.k, s.v, shuffled, w_o);
  for (int64_t h = 0; h < 4; ++h)
    for (int t = 0; t < 4; ++t) {
      const int64_t i = h * 4 + from_shuffled[t], j = h * 4 + t;
      EXPECT_EQ(a.density[i], b.density[j]);
      EXPECT_NEAR(a.output_error[i], b.output_error[j], 1e-6);
      EXPECT_NEAR(a.projected_error[i], b.projected_error[j], 1e-6 * (1 + a.projected_error[i]));
    }
}

TEST(Statistics, MeasurementsFollowTheirDefinitions) {
  const Sample s = random_sample(400, 1);
  const StatisticsSettings settings = small_settings();
  const LayerMeasurement m = measure_layer(s.q, s.k, s.v, settings);
  const int64_t taus = 4;
  runtime::EstimateOptions options;
  options.block_size = 64;
  const at::Tensor scores = runtime::antidiagonal_scores(s.q, s.k, options);
  const at::Tensor mass = runtime::exact_block_mass(s.q, s.k, true, 64, std::nullopt);
  auto [dense, lse] = runtime::dense_attention(s.q, s.k, s.v, true, std::nullopt);
  for (int64_t t = 0; t < taus; ++t) {
    auto [mask, count, index] = runtime::select_blocks(
        scores, at::full({4}, float(settings.taus[t])), 400, 400, options);
    auto [out, out_lse] = runtime::block_sparse_attention(s.q, s.k, s.v, mask, true, std::nullopt, 64);
    for (int64_t h = 0; h < 4; ++h) {
      const at::Tensor kept = mask[0][h].to(at::kDouble);
      const double allowed = 7.0 * 8.0 / 2.0;  // 7 query blocks, causal triangle
      EXPECT_NEAR(m.density[h * taus + t], kept.sum().item<double>() / allowed, 1e-6);
      const at::Tensor recall = (mass[0][h].to(at::kDouble) * kept).sum(-1);
      EXPECT_NEAR(m.recall_mean[h * taus + t], recall.mean().item<double>(), 1e-5);
      EXPECT_NEAR(m.recall_min[h * taus + t], recall.min().item<double>(), 1e-5);
      const double error = (out[0][h] - dense[0][h]).norm().item<double>() /
                           dense[0][h].norm().item<double>();
      EXPECT_NEAR(m.output_error[h * taus + t], error, 1e-5);
    }
  }
  // Exact attention in query chunks gives the same figures.
  StatisticsSettings chunked = settings;
  chunked.query_chunk = 64;
  const LayerMeasurement c = measure_layer(s.q, s.k, s.v, chunked);
  for (size_t i = 0; i < m.density.size(); ++i) {
    EXPECT_EQ(c.density[i], m.density[i]);
    EXPECT_NEAR(c.recall_mean[i], m.recall_mean[i], 1e-6);
    EXPECT_NEAR(c.recall_min[i], m.recall_min[i], 1e-6);
    EXPECT_NEAR(c.output_error[i], m.output_error[i], 1e-6);
  }
  // Dense candidate: everything kept, nothing lost.
  for (int64_t h = 0; h < 4; ++h) {
    EXPECT_FLOAT_EQ(m.density[h * taus + 3], 1.f);
    EXPECT_NEAR(m.recall_mean[h * taus + 3], 1.f, 1e-5);
    EXPECT_NEAR(m.output_error[h * taus + 3], 0.f, 1e-6);
    for (int64_t t = 1; t < taus; ++t)
      EXPECT_GE(m.density[h * taus + t], m.density[h * taus + t - 1]);
  }
}

Statistics statistics_of(const std::vector<int64_t>& lengths, uint64_t seed) {
  Statistics stats;
  stats.settings = small_settings();
  stats.model_name = "test";
  stats.model_signature = "test-signature";
  stats.heads_q = 4;
  stats.heads_kv = 2;
  stats.head_dim = 16;
  stats.layers = {0, 3};
  for (int64_t len : lengths) {
    const Sample a = random_sample(len, seed++), b = random_sample(len, seed++);
    stats.add_sample({len, len, "random"}, {measure_layer(a.q, a.k, a.v, stats.settings),
                                            measure_layer(b.q, b.k, b.v, stats.settings)});
  }
  return stats;
}

TEST(Statistics, FileRoundTripMergeAndMismatch) {
  const Statistics a = statistics_of({200, 300}, 10), b = statistics_of({129}, 20);
  const std::string path_a = test_files::scratch_file("stats_a.h5"),
                    path_b = test_files::scratch_file("stats_b.h5");
  write_statistics(path_a, a, false);
  write_statistics(path_b, b, false);
  EXPECT_THROW(write_statistics(path_a, b, false), Error);  // never overwritten without force
  EXPECT_THROW(write_statistics("/dev/null", b, true), Error);  // not a regular file, even forced
  const Statistics merged = merge_statistics({read_statistics(path_a), read_statistics(path_b)});
  ASSERT_EQ(merged.samples.size(), 3u);
  EXPECT_EQ(merged.samples[2].len_q, 129);
  EXPECT_EQ(merged.layers, a.layers);
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t t = 0; t < 4; ++t) {
        EXPECT_EQ(merged.density[merged.entry(1, l, h, t)], a.density[a.entry(1, l, h, t)]);
        EXPECT_EQ(merged.output_error[merged.entry(2, l, h, t)], b.output_error[b.entry(0, l, h, t)]);
      }
  Statistics other = b;
  other.settings.stride = 16;
  try {
    merge_statistics({a, other});
    FAIL() << "expected a mismatch";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stride"), std::string::npos) << e.what();
  }
  EXPECT_EQ(merged.settings.dense_last_query_block, a.settings.dense_last_query_block);
  other = b;
  other.settings.dense_last_query_block = !b.settings.dense_last_query_block;
  try {
    merge_statistics({a, other});
    FAIL() << "expected a mismatch";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("last-query-block"), std::string::npos) << e.what();
  }
  std::remove(path_a.c_str());
  std::remove(path_b.c_str());
}

TEST(Statistics, PrefixDensityIsTheFirstHalfAsItsOwnPrefill) {
  const Sample s = random_sample(520, 3);  // 9 query blocks of 64: prefix 4 blocks = 256 tokens
  const StatisticsSettings settings = small_settings();
  const LayerMeasurement m = measure_layer(s.q, s.k, s.v, settings);
  ASSERT_EQ(m.prefix_len, 256);
  const LayerMeasurement half =
      measure_layer(s.q.narrow(2, 0, 256), s.k.narrow(2, 0, 256), s.v.narrow(2, 0, 256), settings);
  ASSERT_EQ(m.prefix_density.size(), half.density.size());
  for (size_t i = 0; i < half.density.size(); ++i) EXPECT_EQ(m.prefix_density[i], half.density[i]);
  // Too short for a prefix (fewer than 4 query blocks), and chunked prefill: none.
  EXPECT_EQ(measure_layer(s.q.narrow(2, 0, 190), s.k.narrow(2, 0, 190), s.v.narrow(2, 0, 190),
                          settings).prefix_len, 0);
  EXPECT_TRUE(measure_layer(s.q.narrow(2, 0, 300), s.k, s.v, settings).prefix_density.empty());
}

TEST(Statistics, DensityFitThroughLengthsAndPrefixes) {
  Statistics stats = statistics_of({520}, 40);
  ASSERT_EQ(stats.samples[0].prefix_len, 256);
  const std::string path = test_files::scratch_file("stats_prefix.h5");
  write_statistics(path, stats, true);
  const Statistics back = read_statistics(path);
  std::remove(path.c_str());
  EXPECT_EQ(back.samples[0].prefix_len, 256);
  ASSERT_EQ(back.prefix_density.size(), stats.prefix_density.size());
  for (size_t i = 0; i < stats.prefix_density.size(); ++i)
    EXPECT_EQ(back.prefix_density[i], stats.prefix_density[i]);

  // Hand-made densities: layer slot 0 (model layer 0) halves from 256 to 1024 tokens (exponent
  // 0.5), slot 1 (model layer 3) stays at 0.8 (exponent 0).
  Statistics s = stats;
  s.samples = {{1024, 1024, "a", 256}};
  const std::vector<int32_t> choice(8, 2);
  s.density.assign(2 * 4 * 4, 0.f);
  s.prefix_density.assign(2 * 4 * 4, 0.f);
  for (int64_t h = 0; h < 4; ++h) {
    s.density[size_t(s.entry(0, 0, h, 2))] = 0.2f;
    s.prefix_density[size_t(s.entry(0, 0, h, 2))] = 0.4f;
    s.density[size_t(s.entry(0, 1, h, 2))] = 0.8f;
    s.prefix_density[size_t(s.entry(0, 1, h, 2))] = 0.8f;
  }
  const io::DensityFit fit = fit_density_against_length(s, choice, 5);
  EXPECT_EQ(fit.reference_len, 1024);
  EXPECT_EQ(fit.lengths, (std::vector<int64_t>{256, 1024}));
  ASSERT_EQ(fit.density.size(), 5u);
  EXPECT_NEAR(fit.density[0], 0.2, 1e-6);
  EXPECT_NEAR(fit.exponent[0], 0.5, 1e-6);
  EXPECT_NEAR(fit.density[3], 0.8, 1e-6);
  EXPECT_NEAR(fit.exponent[3], 0.0, 1e-6);
  EXPECT_EQ(fit.density[1], 1.0);  // not in the statistics
  // One length only (no prefixes): no fit.
  s.samples[0].prefix_len = 0;
  EXPECT_TRUE(fit_density_against_length(s, choice, 5).empty());
}

TEST(Statistics, SearchProblemWeightsSamplesByAttentionCost) {
  const Statistics stats = statistics_of({128, 512}, 30);
  const SearchProblem p = search_problem_from(stats, {0, 1}, ErrorMetric::kOutputError, 0.05, {});
  ASSERT_EQ(p.num_heads, 8);
  const double w0 = allowed_blocks(128, 128, 64, true), w1 = allowed_blocks(512, 512, 64, true);
  EXPECT_EQ(w0, 3.0);
  EXPECT_EQ(w1, 36.0);
  const int64_t head = 5, layer = head / 4, h = head % 4, t = 1;
  const double expected = (w0 * stats.density[stats.entry(0, layer, h, t)] +
                           w1 * stats.density[stats.entry(1, layer, h, t)]) / (w0 + w1);
  EXPECT_NEAR(p.density[head * 4 + t], expected, 1e-9);
  const SearchProblem worst =
      search_problem_from(stats, {0, 1}, ErrorMetric::kOutputError, 0.05, {}, /*worst_case=*/true);
  EXPECT_NEAR(worst.error[head * 4 + t],
              std::max(stats.output_error[stats.entry(0, layer, h, t)],
                       stats.output_error[stats.entry(1, layer, h, t)]),
              1e-7);
  EXPECT_NEAR(worst.density[head * 4 + t], expected, 1e-9);  // density stays the weighted mean
  const SearchProblem recall = search_problem_from(stats, {1}, ErrorMetric::kRecallLoss, 0.05, {});
  EXPECT_NEAR(recall.error[head * 4 + t], 1.0 - stats.recall_mean[stats.entry(1, layer, h, t)], 1e-7);
}

}  // namespace
}  // namespace xattn::calibrate

namespace xattn::calibrate {
namespace {

TEST(Statistics, BudgetMetricNamesRoundTrip) {
  for (ErrorMetric metric : {ErrorMetric::kOutputError, ErrorMetric::kRecallLoss})
    for (bool worst : {false, true}) {
      const BudgetMetric parsed = parse_budget_metric(budget_metric_name({metric, worst}));
      EXPECT_EQ(parsed.metric, metric);
      EXPECT_EQ(parsed.worst_case, worst);
    }
  EXPECT_EQ(budget_metric_name({ErrorMetric::kOutputError, true}), "output_error_worst_sample");
  EXPECT_THROW(parse_budget_metric("entropy_worst_sample"), Error);
}

}  // namespace
}  // namespace xattn::calibrate
