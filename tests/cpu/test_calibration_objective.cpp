// The kl objective and the quality frontier: a head whose o_proj slice is scaled up provably
// matters more and gets the tighter threshold; frontier interpolation against hand-made curves.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "test_model_util.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/calibrate/frontier.h"
#include "xattn/model/safetensors.h"

namespace xattn::calibrate {
namespace {

using io::Frontier;
using io::FrontierPoint;

using model::testing::TempDir;
using model::testing::TinySpec;

// A tiny Llama whose layer-0 query heads 0 and 1 are identical (same q_proj rows, same KV head),
// except that head 1's o_proj columns are 10x head 0's: same attention, same density, 100x the
// projected error at every τ.
std::string write_twin_head_model(const std::string& dir) {
  TinySpec spec;
  spec.vocab = 64;
  spec.hidden = 32;
  spec.layers = 2;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.head_dim = 8;
  auto weights = model::testing::tiny_weights(spec, 11, at::kFloat);
  for (auto& [name, tensor] : weights) {
    if (name == "model.layers.0.self_attn.q_proj.weight") {
      tensor = tensor.clone();
      tensor.slice(0, 8, 16).copy_(tensor.slice(0, 0, 8) * 3.0);  // peaked, equal attention
      tensor.slice(0, 0, 8).mul_(3.0);
    }
    if (name == "model.layers.0.self_attn.o_proj.weight") {
      tensor = tensor.clone();
      tensor.slice(1, 8, 16).copy_(tensor.slice(1, 0, 8) * 10.0);
    }
  }
  io::make_folders(dir);
  model::testing::write_text(dir + "/config.json", model::testing::tiny_config(spec).dump(2));
  model::write_safetensors(dir + "/model.safetensors", weights, {{"format", "pt"}}, true);
  // Token ids with local structure (repeats), so attention is not uniform.
  std::mt19937 rng(3);
  std::ofstream ids(dir + "/ids.txt");
  for (int i = 0; i < 4 * 512; ++i) ids << (i % 97 < 40 ? int(rng() % 8) : int(rng() % 64)) << " ";
  return dir + "/ids.txt";
}

TEST(CalibrationObjective, HeadScaledUpInOProjGetsTheTighterThreshold) {
  TempDir dir;
  const std::string data = write_twin_head_model(dir.path() + "/m");
  CalibrationConfig config;
  config.model_dir = dir.path() + "/m";
  config.data_files = {data};
  config.data_format = "ids";
  config.sample_len = 512;
  config.max_samples = 4;
  config.settings.block_size = 64;
  config.settings.taus = {0.3, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0};
  config.sensitivity_samples = 1;
  config.frontier_points = 0;
  const CalibrationResult r = run_calibration(config, nullptr);
  EXPECT_EQ(r.metric, ErrorMetric::kKL);
  ASSERT_EQ(r.statistics.layer_kl_sensitivity.size(), 2u);
  const Statistics& s = r.statistics;
  const int64_t T = s.num_taus();
  // Identical attention: equal density and relative output error (the old proxy cannot tell the
  // heads apart), 100x the projected error.
  bool some_error = false;
  for (int64_t sample = 0; sample < 4; ++sample)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t a = s.entry(sample, 0, 0, t), b = s.entry(sample, 0, 1, t);
      EXPECT_FLOAT_EQ(s.density[a], s.density[b]);
      EXPECT_NEAR(s.output_error[a], s.output_error[b], 1e-4 * (1 + s.output_error[a]));
      EXPECT_NEAR(s.projected_error[b], 100.0 * s.projected_error[a],
                  1e-3 * (1e-12 + 100.0 * s.projected_error[a]));
      some_error = some_error || s.projected_error[a] > 0;
    }
  ASSERT_TRUE(some_error) << "the test model's attention is too flat to test anything";
  // Layer 0, heads 0 and 1 in the [layers, heads] table.
  const float tau_plain = r.profile.thresholds[0], tau_loud = r.profile.thresholds[1];
  EXPECT_GE(tau_loud, tau_plain);
  // And with a budget that forces some sparsity the two really differ.
  CalibrationConfig tight = config;
  const double predicted_dense_free = r.search.optimal.error;
  tight.epsilon = std::max(predicted_dense_free, 1e-12) * 0.5;
  // Sensitivity on at most 3 samples and 1100 tokens: two samples of 512.
  tight.sensitivity_samples = 3;
  tight.sensitivity_tokens = 1100;
  const CalibrationResult t = run_calibration(tight, nullptr);
  EXPECT_GE(t.profile.thresholds[1], t.profile.thresholds[0]);
  EXPECT_EQ(t.statistics.sensitivity_samples, 2);
  EXPECT_EQ(r.statistics.sensitivity_samples, 1);
}

FrontierPoint point(double density, double kl) { return {0, density, density, kl, 0}; }

TEST(Frontier, InterpolatesKlGeometricallyBetweenMeasuredDensities) {
  const std::vector<FrontierPoint> uniform = {point(0.4, 0.001), point(0.1, 0.1), point(0.2, 0.01)};
  EXPECT_NEAR(*kl_at_density(uniform, 0.15), std::sqrt(0.1 * 0.01), 1e-12);
  EXPECT_NEAR(*kl_at_density(uniform, 0.2), 0.01, 1e-15);
  EXPECT_NEAR(*kl_at_density(uniform, 0.3), std::sqrt(0.01 * 0.001), 1e-12);
  EXPECT_FALSE(kl_at_density(uniform, 0.05));  // no extrapolation
  EXPECT_FALSE(kl_at_density(uniform, 0.5));
  EXPECT_NEAR(*density_at_kl(uniform, std::sqrt(0.1 * 0.01)), 0.15, 1e-12);
  EXPECT_NEAR(*density_at_kl(uniform, 0.2), 0.1, 1e-15);  // already met at the sparsest point
  EXPECT_FALSE(density_at_kl(uniform, 1e-4));               // never that good
  // A zero-KL (dense) end interpolates linearly.
  const std::vector<FrontierPoint> to_dense = {point(0.5, 0.002), point(1.0, 0.0)};
  EXPECT_NEAR(*kl_at_density(to_dense, 0.75), 0.001, 1e-15);
  const FrontierComparison c = compare_with_uniform(point(0.15, 0.001), uniform);
  EXPECT_NEAR(*c.uniform_kl_at_equal_density, std::sqrt(0.1 * 0.01), 1e-12);
  EXPECT_NEAR(*c.uniform_density_at_equal_kl, 0.4, 1e-12);
}

TEST(Frontier, NonMonotoneCurveTakesTheFirstCrossing) {
  // Uniform KL can rise with density on noisy data: the smallest density reaching the KL counts.
  const std::vector<FrontierPoint> noisy = {point(0.1, 0.1), point(0.2, 0.01), point(0.3, 0.02),
                                            point(0.4, 0.005)};
  EXPECT_NEAR(*density_at_kl(noisy, 0.01), 0.2, 1e-12);
  EXPECT_NEAR(*density_at_kl(noisy, 0.006), 0.3 + 0.1 * std::log(0.006 / 0.02) / std::log(0.25),
              1e-12);
}

}  // namespace
}  // namespace xattn::calibrate
