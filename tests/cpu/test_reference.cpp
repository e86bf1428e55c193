// CPU reference of XAttention against literal formulas, brute force and ATen.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "xattn/error.h"
#include "xattn/kernels/cpu.h"
#include "xattn/ops.h"

namespace xattn {
namespace {

using runtime::EstimateOptions;

double relative_l2(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  return (x - y).norm().item<double>() / std::max(1e-30, y.norm().item<double>());
}

at::Tensor random_qkv(int64_t batch, int64_t heads, int64_t len, int64_t d, at::ScalarType dtype,
                      uint64_t seed) {
  at::manual_seed(seed);
  return at::randn({batch, heads, len, d}, at::kFloat).to(dtype);
}

// Literal definition: score(r, c) = sum_t q[r*S + S-1-t] . k[c*S + t] (zero outside), softmax per
// strided row over the allowed strided keys, probabilities summed per block.
at::Tensor literal_block_scores(const at::Tensor& q, const at::Tensor& k, int64_t S, int64_t Bs,
                                bool causal, double scale) {
  const auto qd = q.to(at::kDouble), kd = k.to(at::kDouble);
  const int64_t batch = q.size(0), hq = q.size(1), lq = q.size(2), lk = k.size(2), d = q.size(3);
  const int64_t group = hq / k.size(1), offset = lk - lq;
  const int64_t rows = (lq + S - 1) / S, cols = (lk + S - 1) / S;
  const int64_t nqb = (lq + Bs - 1) / Bs, nkb = (lk + Bs - 1) / Bs;
  at::Tensor out = at::zeros({batch, hq, nqb, nkb}, at::kDouble);
  auto qa = qd.accessor<double, 4>();
  auto ka = kd.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<double> logit;
        for (int64_t c = 0; c < cols; ++c) {
          if (causal && c * S > offset + r * S + S - 1) break;
          double sum = 0;
          for (int64_t t = 0; t < S; ++t) {
            const int64_t qi = r * S + S - 1 - t, ki = c * S + t;
            if (qi >= lq || ki >= lk) continue;
            for (int64_t e = 0; e < d; ++e) sum += qa[b][h][qi][e] * ka[b][h / group][ki][e];
          }
          logit.push_back(sum * scale);
        }
        const double m = *std::max_element(logit.begin(), logit.end());
        double total = 0;
        for (double x : logit) total += std::exp(x - m);
        for (size_t c = 0; c < logit.size(); ++c)
          oa[b][h][r * S / Bs][int64_t(c) * S / Bs] += std::exp(logit[c] - m) / total;
      }
  return out.to(at::kFloat);
}

struct ScoringCase {
  int64_t stride, block, len_q, len_k;
  bool causal;
};

class AntidiagonalScoring : public ::testing::TestWithParam<ScoringCase> {};

TEST_P(AntidiagonalScoring, MatchesLiteralAntidiagonalSums) {
  const auto c = GetParam();
  const at::Tensor q = random_qkv(1, 4, c.len_q, 16, at::kFloat, 11);
  const at::Tensor k = random_qkv(1, 2, c.len_k, 16, at::kFloat, 12);
  EstimateOptions options;
  options.stride = c.stride;
  options.block_size = c.block;
  options.causal = c.causal;
  const at::Tensor scores = runtime::antidiagonal_scores(q, k, options);
  const double scale = 1.0 / (std::sqrt(16.0) * double(c.stride));
  const at::Tensor expected = literal_block_scores(q, k, c.stride, c.block, c.causal, scale);
  ASSERT_EQ(scores.sizes(), expected.sizes());
  EXPECT_LT(relative_l2(scores, expected), 1e-5);
  EXPECT_FALSE(scores.isnan().any().item<bool>());
  // Each block row sums to the number of strided rows it holds.
  const at::Tensor row_sum = scores.sum(-1);
  const int64_t rows = (c.len_q + c.stride - 1) / c.stride, per_block = c.block / c.stride;
  for (int64_t i = 0; i < scores.size(2); ++i) {
    const int64_t expected_rows = std::min(per_block, rows - i * per_block);
    EXPECT_NEAR(row_sum[0][0][i].item<float>(), float(expected_rows), 1e-3);
  }
}

std::vector<ScoringCase> scoring_cases() {
  std::vector<ScoringCase> cases;
  for (int64_t s : {2, 4, 8, 16, 32})
    for (bool causal : {true, false}) {
      cases.push_back({s, 64, 129, 129, causal});
      cases.push_back({s, 64, 17, 300, causal});
    }
  cases.push_back({8, 128, 1, 1, true});
  cases.push_back({8, 128, 127, 127, true});
  cases.push_back({8, 128, 1000, 1000, false});
  cases.push_back({4, 256, 300, 613, true});
  cases.push_back({8, 64, 100, 413, true});  // offset not a multiple of the stride
  return cases;
}

INSTANTIATE_TEST_SUITE_P(StridesAndLengths, AntidiagonalScoring,
                         ::testing::ValuesIn(scoring_cases()));

TEST(AntidiagonalScoring, ChunkedEqualsUnchunked) {
  const at::Tensor q = random_qkv(2, 2, 700, 32, at::kBFloat16, 3);
  const at::Tensor k = random_qkv(2, 1, 700, 32, at::kBFloat16, 4);
  std::vector<float> whole(2 * 2 * 11 * 11), chunked(whole.size());
  kernels::ScoringParams p;
  p.problem = {2, 2, 1, 32, 700, 700, nullptr, nullptr, true};
  p.q = {q.data_ptr(), kernels::DType::kBFloat16, q.stride(0), q.stride(1), q.stride(2)};
  p.k = {k.data_ptr(), kernels::DType::kBFloat16, k.stride(0), k.stride(1), k.stride(2)};
  p.stride = 8;
  p.block_size = 64;
  p.scale = 0.05f;
  p.block_scores = whole.data();
  kernels::cpu::antidiagonal_scores(p);
  p.chunk_len_q = 64;
  p.block_scores = chunked.data();
  kernels::cpu::antidiagonal_scores(p);
  EXPECT_EQ(whole, chunked);
}

TEST(AntidiagonalScoring, BatchEqualsPerItemAndGqaEqualsRepeatedKeys) {
  const at::Tensor q = random_qkv(3, 8, 333, 16, at::kHalf, 5);
  const at::Tensor k = random_qkv(3, 2, 333, 16, at::kHalf, 6);
  EstimateOptions options;
  options.block_size = 64;
  const at::Tensor all = runtime::antidiagonal_scores(q, k, options);
  for (int64_t b = 0; b < 3; ++b) {
    const at::Tensor one = runtime::antidiagonal_scores(q.slice(0, b, b + 1), k.slice(0, b, b + 1), options);
    EXPECT_TRUE(at::equal(all.slice(0, b, b + 1), one));
  }
  const at::Tensor repeated =
      runtime::antidiagonal_scores(q, k.repeat_interleave(4, 1), options);
  EXPECT_TRUE(at::equal(all, repeated));
}

// ---- Selection -------------------------------------------------------------------------------

// Smallest number of blocks (forced ones included) whose mass reaches tau * total, by brute force.
int brute_force_min_blocks(const std::vector<float>& scores, const std::vector<int>& forced,
                           double tau) {
  const int n = int(scores.size());
  double total = 0;
  for (float s : scores) total += s;
  int best = n;
  for (uint32_t subset = 0; subset < (1u << n); ++subset) {
    bool has_forced = true;
    for (int f : forced) has_forced &= bool(subset & (1u << f));
    if (!has_forced) continue;
    double mass = 0;
    for (int j = 0; j < n; ++j)
      if (subset & (1u << j)) mass += scores[j];
    if (mass >= tau * total) best = std::min(best, __builtin_popcount(subset));
  }
  return best;
}

TEST(BlockSelection, MatchesBruteForceSmallestSet) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t nkb = 1 + trial % 10;
    const bool causal = trial % 2 == 0;
    const float tau = uniform(rng);
    // One query block at the bottom row of a causal square: every block allowed.
    std::vector<float> scores(nkb);
    for (auto& s : scores) s = std::pow(uniform(rng), 3.f);
    at::Tensor score_tensor = at::from_blob(scores.data(), {1, 1, 1, nkb}, at::kFloat).clone();
    at::Tensor block_scores = at::zeros({1, 1, nkb, nkb}, at::kFloat);
    block_scores.select(2, nkb - 1).copy_(score_tensor.select(2, 0));
    EstimateOptions options;
    options.block_size = 64;
    options.causal = causal;
    options.keep_sink = options.keep_diagonal = causal;
    options.dense_last_query_block = false;  // the row under test is the last one
    auto [mask, count, index] = runtime::select_blocks(block_scores, at::full({1}, tau),
                                                       nkb * 64, nkb * 64, options);
    std::vector<int> forced;
    if (causal) forced = nkb > 1 ? std::vector<int>{0, int(nkb - 1)} : std::vector<int>{0};
    const int expected = brute_force_min_blocks(scores, forced, tau);
    EXPECT_EQ(count[0][0][nkb - 1].item<int>(), expected) << "trial " << trial;
    // The kept blocks are the forced ones plus the highest scores.
    const at::Tensor kept = mask[0][0][nkb - 1];
    EXPECT_EQ(kept.sum().item<int64_t>(), expected);
    float lowest_kept = 2.f, highest_dropped = -1.f;
    for (int64_t j = 0; j < nkb; ++j) {
      if (std::find(forced.begin(), forced.end(), int(j)) != forced.end()) continue;
      if (kept[j].item<bool>()) lowest_kept = std::min(lowest_kept, scores[j]);
      else highest_dropped = std::max(highest_dropped, scores[j]);
    }
    EXPECT_GE(lowest_kept, highest_dropped);
  }
}

TEST(BlockSelection, TiesGoToTheLowerIndex) {
  at::Tensor scores = at::zeros({1, 1, 1, 6}, at::kFloat);
  scores[0][0][0] = at::tensor({0.1f, 0.2f, 0.2f, 0.2f, 0.2f, 0.1f});
  EstimateOptions options;
  options.block_size = 64;
  options.causal = false;
  options.keep_sink = options.keep_diagonal = false;
  // 0.5 of the total 1.0: three of the four tied 0.2 blocks, the lowest indices.
  auto [mask, count, index] = runtime::select_blocks(scores, at::full({1}, 0.5f), 64, 6 * 64, options);
  EXPECT_EQ(count.item<int>(), 3);
  EXPECT_TRUE(at::equal(mask[0][0][0].to(at::kInt), at::tensor({0, 1, 1, 1, 0, 0}, at::kInt)));
  EXPECT_TRUE(at::equal(index[0][0][0], at::tensor({1, 2, 3, -1, -1, -1}, at::kInt)));
}

TEST(BlockSelection, ThresholdExtremesAndMonotoneDensity) {
  const at::Tensor q = random_qkv(1, 4, 1000, 32, at::kFloat, 21);
  const at::Tensor k = random_qkv(1, 4, 1000, 32, at::kFloat, 22);
  for (bool causal : {true, false}) {
    EstimateOptions options;
    options.block_size = 64;
    options.causal = causal;
    options.dense_last_query_block = false;  // the method's rule alone
    const at::Tensor scores = runtime::antidiagonal_scores(q, k, options);
    const int64_t nqb = scores.size(2);
    auto density = [&](float tau) {
      auto [mask, count, index] = runtime::select_blocks(scores, at::full({4}, tau), 1000, 1000, options);
      return runtime::head_density(count, 1000, 1000, 64, causal);
    };
    EXPECT_TRUE(at::allclose(density(1.f), at::ones({4}, at::kDouble)));
    // tau = 0: only the forced blocks (sink + diagonal in causal mode, both kept by default).
    const double forced_rows = causal ? double(2 * nqb - 1) / double(nqb * (nqb + 1) / 2)
                                      : double(2 * nqb - 1) / double(nqb * nqb);
    EXPECT_TRUE(at::allclose(density(0.f), at::full({4}, forced_rows, at::kDouble)));
    at::Tensor previous = density(0.f);
    for (float tau = 0.05f; tau <= 1.0f; tau += 0.05f) {
      const at::Tensor now = density(tau);
      EXPECT_TRUE((now >= previous).all().item<bool>()) << "tau " << tau;
      previous = now;
    }
  }
}

TEST(BlockSelection, DenseLastQueryBlockKeepsEveryAllowedBlockOfThatRowOnly) {
  const at::Tensor k = random_qkv(1, 2, 1000, 32, at::kFloat, 32);
  for (const int64_t len_q : {1000, 300, 64, 1}) {  // square, chunked prefill, one block, decode
    const at::Tensor q = random_qkv(1, 4, len_q, 32, at::kFloat, 31);
    for (bool causal : {true, false}) {
      EstimateOptions options;
      options.block_size = 64;
      options.causal = causal;
      const at::Tensor scores = runtime::antidiagonal_scores(q, k, options);
      const at::Tensor tau = at::tensor({0.f, 0.3f, 0.6f, 0.9f});
      options.dense_last_query_block = false;
      const at::Tensor plain = std::get<0>(runtime::select_blocks(scores, tau, len_q, 1000, options));
      options.dense_last_query_block = true;
      const at::Tensor dense_last =
          std::get<0>(runtime::select_blocks(scores, tau, len_q, 1000, options));
      const int64_t nqb = plain.size(2), last = nqb - 1;
      if (!causal) {  // no last token to protect: the rule does not apply
        EXPECT_TRUE(at::equal(plain, dense_last)) << "len_q " << len_q;
        continue;
      }
      if (nqb > 1) {
        EXPECT_TRUE(at::equal(plain.slice(2, 0, last), dense_last.slice(2, 0, last)))
            << "len_q " << len_q << ": rows before the last changed";
      }
      // The last query block (bottom-right aligned) sees every key block.
      const kernels::BlockGeometry geometry{len_q, 1000, 64, 1000 - len_q, true};
      const int64_t allowed = geometry.allowed_blocks(last);
      EXPECT_TRUE(dense_last.select(2, last).slice(2, 0, allowed).all().item<bool>());
      EXPECT_FALSE(dense_last.select(2, last).slice(2, allowed).any().item<bool>());
      EXPECT_FALSE(plain.select(2, last)[0].all().item<bool>() && allowed > 2)
          << "tau 0 should drop blocks of the last row without the rule";
    }
  }
}

// ---- Attention -------------------------------------------------------------------------------

at::Tensor aten_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          bool causal) {
  const int64_t group = q.size(1) / k.size(1), lq = q.size(2), lk = k.size(2);
  const at::Tensor kd = k.to(at::kDouble).repeat_interleave(group, 1);
  const at::Tensor vd = v.to(at::kDouble).repeat_interleave(group, 1);
  at::Tensor logits = at::matmul(q.to(at::kDouble), kd.transpose(2, 3)) / std::sqrt(double(q.size(3)));
  if (causal) {
    const at::Tensor future = at::arange(lk).unsqueeze(0) > (at::arange(lq) + (lk - lq)).unsqueeze(1);
    logits.masked_fill_(future, -std::numeric_limits<double>::infinity());
  }
  return at::matmul(at::softmax(logits, -1), vd);
}

struct AttentionCase {
  int64_t len_q, len_k, heads_q, heads_kv;
  bool causal;
  at::ScalarType dtype;
};

class ReferenceAttention : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(ReferenceAttention, DenseMatchesAtenAndAllBlocksSparseMatchesDense) {
  const auto c = GetParam();
  const at::Tensor q = random_qkv(2, c.heads_q, c.len_q, 32, c.dtype, 31);
  const at::Tensor k = random_qkv(2, c.heads_kv, c.len_k, 32, c.dtype, 32);
  const at::Tensor v = random_qkv(2, c.heads_kv, c.len_k, 32, c.dtype, 33);
  auto [dense, dense_lse] = runtime::dense_attention(q, k, v, c.causal, std::nullopt);
  const at::Tensor expected = aten_attention(q, k, v, c.causal);
  // Output rounding to the input dtype bounds the error for 16-bit types.
  const double tolerance = c.dtype == at::kFloat ? 1e-5 : (c.dtype == at::kHalf ? 2e-3 : 1e-2);
  EXPECT_LT(relative_l2(dense, expected), tolerance);
  EXPECT_FALSE(dense_lse.isinf().any().item<bool>());

  const int64_t nqb = (c.len_q + 63) / 64, nkb = (c.len_k + 63) / 64;
  const at::Tensor all = at::ones({2, c.heads_q, nqb, nkb}, at::kBool);
  auto [sparse, sparse_lse] = runtime::block_sparse_attention(q, k, v, all, c.causal, std::nullopt, 64);
  EXPECT_LT(relative_l2(sparse.to(at::kFloat), dense.to(at::kFloat)), 1e-5);
  EXPECT_LT(relative_l2(sparse_lse, dense_lse), 1e-6);

  // GQA equals the result with K and V repeated per query head.
  const int64_t group = c.heads_q / c.heads_kv;
  auto [repeated, repeated_lse] = runtime::dense_attention(q, k.repeat_interleave(group, 1),
                                                           v.repeat_interleave(group, 1), c.causal,
                                                           std::nullopt);
  EXPECT_TRUE(at::equal(repeated, dense));
  // Batch > 1 equals per-item runs.
  auto [first, first_lse] = runtime::dense_attention(q.slice(0, 1, 2), k.slice(0, 1, 2),
                                                     v.slice(0, 1, 2), c.causal, std::nullopt);
  EXPECT_TRUE(at::equal(first, dense.slice(0, 1, 2)));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ReferenceAttention,
    ::testing::Values(AttentionCase{1, 1, 2, 1, true, at::kFloat},
                      AttentionCase{17, 17, 4, 4, true, at::kFloat},
                      AttentionCase{127, 127, 4, 1, true, at::kFloat},
                      AttentionCase{129, 129, 8, 2, false, at::kFloat},
                      AttentionCase{100, 300, 4, 2, true, at::kFloat},
                      AttentionCase{200, 200, 4, 2, true, at::kHalf},
                      AttentionCase{200, 333, 4, 2, false, at::kBFloat16}));

TEST(ReferenceAttention, SparseSkipsDroppedBlocksExactly) {
  // Dropping blocks equals dense attention over the kept keys only (masked logits in ATen).
  const at::Tensor q = random_qkv(1, 2, 256, 16, at::kFloat, 41);
  const at::Tensor k = random_qkv(1, 2, 256, 16, at::kFloat, 42);
  const at::Tensor v = random_qkv(1, 2, 256, 16, at::kFloat, 43);
  at::Tensor mask = at::ones({1, 2, 4, 4}, at::kBool);
  mask[0][0][3][1] = false;
  mask[0][1][2][0] = false;
  auto [out, lse] = runtime::block_sparse_attention(q, k, v, mask, true, std::nullopt, 64);
  at::Tensor logits = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(2, 3)) / 4.0;
  at::Tensor token_mask = mask.repeat_interleave(64, 2).repeat_interleave(64, 3).logical_not();
  token_mask = token_mask.logical_or(at::triu(at::ones({256, 256}, at::kBool), 1));
  logits.masked_fill_(token_mask, -std::numeric_limits<double>::infinity());
  const at::Tensor expected = at::matmul(at::softmax(logits, -1), v.to(at::kDouble));
  EXPECT_LT(relative_l2(out, expected), 1e-5);
  EXPECT_LT(relative_l2(lse, at::logsumexp(logits, -1)), 1e-6);
}

TEST(ReferenceAttention, ExactBlockMassMatchesAtenSoftmax) {
  const at::Tensor q = random_qkv(1, 4, 300, 16, at::kFloat, 51);
  const at::Tensor k = random_qkv(1, 2, 400, 16, at::kFloat, 52);
  const at::Tensor mass = runtime::exact_block_mass(q, k, true, 64, std::nullopt);
  at::Tensor logits = at::matmul(q.to(at::kDouble), k.to(at::kDouble).repeat_interleave(2, 1).transpose(2, 3)) / 4.0;
  const at::Tensor future = at::arange(400).unsqueeze(0) > (at::arange(300) + 100).unsqueeze(1);
  logits.masked_fill_(future, -std::numeric_limits<double>::infinity());
  const at::Tensor probs = at::constant_pad_nd(at::softmax(logits, -1), {0, 448 - 400});
  const at::Tensor padded = at::constant_pad_nd(probs.reshape({1, 4, 300, 7, 64}).sum(-1), {0, 0, 0, 320 - 300});
  at::Tensor expected = padded.reshape({1, 4, 5, 64, 7}).sum(3);
  const at::Tensor rows = at::tensor({64.0, 64.0, 64.0, 64.0, 44.0}, at::kDouble).reshape({1, 1, 5, 1});
  expected = expected / rows;
  EXPECT_LT(relative_l2(mass, expected), 1e-5);
  EXPECT_TRUE(at::allclose(mass.sum(-1), at::ones({1, 4, 5}), 1e-4));
}

TEST(ReferenceInputs, BadShapesAreRejectedWithClearMessages) {
  const at::Tensor q = at::randn({1, 6, 64, 16});
  const at::Tensor k = at::randn({1, 4, 64, 16});
  try {
    runtime::antidiagonal_scores(q, k, EstimateOptions{});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of heads of k"), std::string::npos) << e.what();
  }
  EXPECT_THROW(runtime::antidiagonal_scores(at::randn({1, 4, 128, 16}), at::randn({1, 4, 64, 16}),
                                            EstimateOptions{}),
               Error);
  EstimateOptions bad_stride;
  bad_stride.stride = 3;
  EXPECT_THROW(runtime::antidiagonal_scores(at::randn({1, 4, 64, 16}), at::randn({1, 4, 64, 16}),
                                            bad_stride),
               Error);
  EXPECT_THROW(runtime::antidiagonal_scores(at::randn({1, 4, 64, 16}).to(at::kDouble),
                                            at::randn({1, 4, 64, 16}).to(at::kDouble),
                                            EstimateOptions{}),
               Error);
}

}  // namespace
}  // namespace xattn
