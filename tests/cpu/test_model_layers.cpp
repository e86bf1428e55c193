// Rotary embeddings, Llama 3 rope scaling, RMSNorm and attention backends against their formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "xattn/error.h"
#include "xattn/model/attention.h"
#include "xattn/model/layers.h"
#include "xattn/model/niah.h"
#include "xattn/model/tokens.h"

namespace xattn::model {
namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(ModelLayers, RotaryMatchesPairwiseRotationFormula) {
  const int64_t d = 16, len = 37, heads = 3;
  RopeConfig rope;
  rope.theta = 500000.0;
  const at::Tensor x = at::randn({1, heads, len, d});
  const int64_t start = 1000;  // positions start .. start + len - 1
  const at::Tensor y = apply_rotary(x, rotary_tables(rope_inv_freq(rope, d), start, len));
  auto xa = x.accessor<float, 4>();
  auto ya = y.accessor<float, 4>();
  double worst = 0.0;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t t = 0; t < len; ++t)
      for (int64_t i = 0; i < d / 2; ++i) {
        // Pair (i, i + d/2) rotates by angle pos * theta^(-2i/d).
        const double angle = static_cast<double>(start + t) * std::pow(rope.theta, -2.0 * i / d);
        const double a = xa[0][h][t][i], b = xa[0][h][t][i + d / 2];
        worst = std::max(worst, std::abs(ya[0][h][t][i] - (a * std::cos(angle) - b * std::sin(angle))));
        worst = std::max(worst, std::abs(ya[0][h][t][i + d / 2] - (b * std::cos(angle) + a * std::sin(angle))));
      }
  // float32 angles near 1000 rad carry ~1e-4 absolute error; inputs are O(1).
  EXPECT_LT(worst, 5e-4);
}

TEST(ModelLayers, Llama3RopeScalingMatchesFormula) {
  RopeConfig rope;
  rope.type = RopeType::kLlama3;
  rope.theta = 500000.0;
  rope.factor = 8.0;
  rope.low_freq_factor = 1.0;
  rope.high_freq_factor = 4.0;
  rope.original_max_position_embeddings = 8192;
  const int64_t d = 128;
  const at::Tensor got = rope_inv_freq(rope, d);
  ASSERT_EQ(got.size(0), d / 2);
  int n_high = 0, n_low = 0, n_mid = 0;
  for (int64_t i = 0; i < d / 2; ++i) {
    const double f = std::pow(rope.theta, -2.0 * i / d);
    const double wavelen = 2 * M_PI / f;
    const double low_wl = 8192.0 / 1.0, high_wl = 8192.0 / 4.0;
    double expected;
    if (wavelen < high_wl) {
      expected = f;  // high frequencies unchanged
      ++n_high;
    } else if (wavelen > low_wl) {
      expected = f / 8.0;  // low frequencies stretched by the factor
      ++n_low;
    } else {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      expected = (1 - smooth) * f / 8.0 + smooth * f;
      ++n_mid;
    }
    EXPECT_NEAR(got[i].item<double>(), expected, 2e-6 * expected) << "i=" << i;
  }
  EXPECT_GT(n_high, 0);
  EXPECT_GT(n_low, 0);
  EXPECT_GT(n_mid, 0);

  RopeConfig linear;
  linear.type = RopeType::kLinear;
  linear.factor = 4.0;
  EXPECT_NEAR(rope_inv_freq(linear, 8)[1].item<double>(), std::pow(10000.0, -0.25) / 4.0, 1e-7);
}

TEST(ModelLayers, RmsNormMatchesFormula) {
  const at::Tensor x = at::randn({5, 24}) * 3.0;
  const at::Tensor w = at::randn({24});
  const double eps = 1e-5;
  const at::Tensor y = rms_norm(x, w, eps);
  for (int64_t r = 0; r < 5; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < 24; ++j) ms += std::pow(x[r][j].item<double>(), 2);
    ms /= 24;
    for (int64_t j = 0; j < 24; ++j)
      EXPECT_NEAR(y[r][j].item<double>(),
                  w[j].item<double>() * x[r][j].item<double>() / std::sqrt(ms + eps), 1e-5);
  }
  // bf16 input: normalised in float32, cast back before the weight multiplies.
  const at::Tensor xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
  EXPECT_EQ(rms_norm(xb, wb, eps).scalar_type(), at::kBFloat16);
  EXPECT_LT(max_abs_diff(rms_norm(xb, wb, eps), rms_norm(xb.to(at::kFloat), wb.to(at::kFloat), eps)),
            0.05);
}

// Plain reference: repeat K/V per query head, full softmax with a bottom-right causal mask, float64.
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t group = q.size(1) / k.size(1), lq = q.size(2), lk = k.size(2);
  const at::Tensor kr = k.to(at::kDouble).repeat_interleave(group, 1);
  const at::Tensor vr = v.to(at::kDouble).repeat_interleave(group, 1);
  at::Tensor s = at::matmul(q.to(at::kDouble), kr.transpose(-1, -2)) / std::sqrt(double(q.size(3)));
  const at::Tensor mask = at::ones({lq, lk}, at::kBool).triu(lk - lq + 1);
  s.masked_fill_(mask, -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(s, -1), vr);
}

TEST(ModelAttention, DenseGqaMatchesRepeatedKv) {
  for (auto [hq, hkv, lq, lk] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
           {4, 4, 17, 17}, {6, 2, 33, 33}, {8, 1, 5, 40}, {4, 2, 1, 9}}) {
    const at::Tensor q = at::randn({1, hq, lq, 16}), k = at::randn({1, hkv, lk, 16}),
                     v = at::randn({1, hkv, lk, 16});
    const at::Tensor expected = reference_attention(q, k, v);
    EXPECT_LT(max_abs_diff(dense_causal_attention(q, k, v), expected), 1e-5)
        << hq << "/" << hkv << " " << lq << "x" << lk;
    // A tiny score budget forces one query row per chunk.
    EXPECT_LT(max_abs_diff(dense_causal_attention(q, k, v, 1), expected), 1e-5);
  }
}

TEST(ModelAttention, XAttentionAtTauOneEqualsDense) {
  const at::Tensor q = at::randn({1, 4, 300, 32}), k = at::randn({1, 2, 300, 32}),
                   v = at::randn({1, 2, 300, 32});
  runtime::EstimateOptions opts;
  opts.block_size = 64;
  XAttentionBackend dense_like = XAttentionBackend::uniform(2, 4, 1.0, opts);
  const at::Tensor out = dense_like.attend(1, q, k, v);
  EXPECT_LT(max_abs_diff(out, reference_attention(q, k, v)), 1e-4);
  EXPECT_FALSE(dense_like.last_density(0).defined());
  EXPECT_NEAR(dense_like.last_density(1).mean().item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(dense_like.mean_density(), 1.0, 1e-12);

  // tau = 0 keeps only the sink and diagonal blocks: strictly sparser at this length.
  XAttentionBackend sparse = XAttentionBackend::uniform(2, 4, 0.0, opts);
  sparse.attend(0, q, k, v);
  EXPECT_LT(sparse.mean_density(), 1.0);
  EXPECT_THROW(sparse.attend(0, q.narrow(1, 0, 2), k.narrow(1, 0, 1), v.narrow(1, 0, 1)), Error);
}

// The runner's dispatch: a cost table that makes sparse dearer than dense runs the layer dense
// (bit for bit the dense backend, density 1, the reason recorded); one that makes sparse cheap
// leaves the sparse result unchanged; decode steps are never dispatched.
TEST(ModelAttention, XAttentionDispatchRunsDenseWherePredictedCheaper) {
  at::manual_seed(11);
  const at::Tensor q = at::randn({1, 4, 300, 32}), k = at::randn({1, 2, 300, 32}),
                   v = at::randn({1, 2, 300, 32});
  runtime::EstimateOptions opts;
  opts.block_size = 64;
  runtime::CostTable table;
  table.device = "test";
  table.dense_ns_per_unit = 1.0;
  table.scoring_ns_per_unit = {{8, 0.0}};
  table.sparse_ns_per_block_dim = 0.0;
  runtime::DensityModel density;
  density.reference_len = 300;
  density.density = {0.5, 0.5};
  density.exponent = {0.0, 0.0};

  XAttentionBackend plain = XAttentionBackend::uniform(2, 4, 0.5, opts);
  const at::Tensor sparse_out = plain.attend(0, q, k, v);
  ASSERT_LT(plain.mean_density(), 1.0);

  XAttentionBackend cheap_sparse = XAttentionBackend::uniform(2, 4, 0.5, opts);
  cheap_sparse.set_dispatch(table, density);
  EXPECT_TRUE(at::equal(cheap_sparse.attend(0, q, k, v), sparse_out));
  EXPECT_NE(cheap_sparse.last_decision(0).find("sparse"), std::string::npos);

  table.sparse_fixed_ms = 1e6;  // sparse can never pay for itself
  XAttentionBackend dear_sparse = XAttentionBackend::uniform(2, 4, 0.5, opts);
  dear_sparse.set_dispatch(table, density);
  EXPECT_TRUE(at::equal(dear_sparse.attend(1, q, k, v), DenseBackend().attend(1, q, k, v)));
  EXPECT_FALSE(dear_sparse.last_decision(1).empty());
  EXPECT_NEAR(dear_sparse.last_density(1).mean().item<double>(), 1.0, 1e-12);
  // One query row (a decode step) is not dispatched: it keeps the sparse path's answer.
  const at::Tensor q1 = q.narrow(2, 299, 1);
  EXPECT_TRUE(at::equal(dear_sparse.attend(0, q1, k, v), plain.attend(0, q1, k, v)));

  density.density = {0.5};
  EXPECT_THROW(dear_sparse.set_dispatch(table, density), Error);
}

TEST(ModelAttention, GatheredSparseAttentionEqualsTheReferenceKernel) {
  // Random per-head thresholds, chunked-prefill shape (len_q < len_k) and a partial last block.
  at::manual_seed(4);
  const at::Tensor q = at::randn({1, 4, 230, 32}) * 2, k = at::randn({1, 2, 300, 32}) * 2,
                   v = at::randn({1, 2, 300, 32});
  runtime::EstimateOptions opts;
  opts.block_size = 64;
  const at::Tensor scores = runtime::antidiagonal_scores(q, k, opts);
  for (float tau : {0.0f, 0.5f, 0.9f, 1.0f}) {
    const at::Tensor thresholds = at::full({4}, tau).index_put_({0}, 0.3f);
    auto [mask, count, index] = runtime::select_blocks(scores, thresholds, 230, 300, opts);
    const at::Tensor reference = std::get<0>(
        runtime::block_sparse_attention_compact(q, k, v, count, index, true, std::nullopt, 64));
    const at::Tensor gathered = gathered_block_sparse_attention(q, k, v, count, index, 64);
    EXPECT_LT(max_abs_diff(gathered, reference), 1e-5) << "tau " << tau;
  }
}

TEST(ModelAttention, CaptureSeesInputsAndDelegates) {
  DenseBackend dense;
  int calls = 0;
  CaptureBackend capture(dense, [&](int layer, const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor&) {
    EXPECT_EQ(layer, 3);
    EXPECT_EQ(q.size(1), 4);
    EXPECT_EQ(k.size(1), 2);
    ++calls;
  });
  const at::Tensor q = at::randn({1, 4, 7, 8}), k = at::randn({1, 2, 7, 8}), v = at::randn({1, 2, 7, 8});
  EXPECT_TRUE(at::allclose(capture.attend(3, q, k, v), dense.attend(3, q, k, v)));
  EXPECT_EQ(calls, 1);
}

TEST(ModelInputs, ByteTokenizerAndLengths) {
  const std::vector<int64_t> ids = byte_encode("Hi\xC3\xA9");
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[0], kByteBos);
  EXPECT_EQ(ids[1], 'H');
  EXPECT_EQ(ids[3], 0xC3);
  EXPECT_EQ(byte_decode(ids), "Hi\xC3\xA9");
  EXPECT_EQ(parse_length("1k"), 1024);
  EXPECT_EQ(parse_length("32K"), 32768);
  EXPECT_EQ(parse_length("1000"), 1000);
  EXPECT_THROW(parse_length("4kb"), Error);
}

TEST(ModelInputs, NiahPromptsFollowTheTrainingFormat) {
  std::string hay;
  for (int i = 0; hay.size() < 20000; ++i)
    hay += "Sentence number " + std::to_string(i) + " is here, and it is plain. ";
  for (double depth : {0.0, 0.5, 1.0}) {
    const NiahPrompt p = make_niah_prompt(hay, 2048, depth, 3, 42);
    ASSERT_EQ(p.tokens.size(), 2048u);
    EXPECT_EQ(p.tokens[0], kByteBos);
    const std::string text = byte_decode(p.tokens);
    const std::string needle =
        "The pass key is " + p.key + ". Remember it. " + p.key + " is the pass key.";
    EXPECT_EQ(p.key.size(), 5u);
    EXPECT_EQ(text.substr(static_cast<size_t>(p.needle_start - 1), needle.size()), needle);
    EXPECT_EQ(text.substr(text.size() - std::string(kPassKeyQuestion).size()), kPassKeyQuestion);
    const double where = double(p.needle_start) / 2048.0;
    EXPECT_NEAR(where, depth * 0.95, 0.08) << "depth " << depth;
    // Same inputs, same prompt; another sample, another prompt.
    EXPECT_EQ(make_niah_prompt(hay, 2048, depth, 3, 42).tokens, p.tokens);
    EXPECT_NE(make_niah_prompt(hay, 2048, depth, 4, 42).tokens, p.tokens);
  }
  EXPECT_TRUE(passkey_correct(" 12345.", "12345"));
  EXPECT_FALSE(passkey_correct("1234", "12345"));
  EXPECT_THROW(make_niah_prompt(hay, 40000, 0.5, 0, 1), Error);
}

}  // namespace
}  // namespace xattn::model
