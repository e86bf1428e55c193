// Every supported model family and option against Hugging Face transformers 5.17: the tiny
// random-weight checkpoints of tests/data/models/ (made by scripts/gpu-goldens-models.py; see the
// README there) must give transformers' float32 logits. Also sliding-window attention against a
// brute-force reference, decoding through a window, XAttention past the window, and config parsing
// of the families and their refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "xattn/error.h"
#include "xattn/io/paths.h"
#include "xattn/model/attention.h"
#include "xattn/model/config.h"
#include "xattn/model/layers.h"
#include "xattn/model/model.h"
#include "xattn/model/safetensors.h"
#include "xattn/ops.h"

namespace xattn::model {
namespace {

const std::string kModels = std::string(XATTN_SOURCE_DIR) + "/tests/data/models/";

// Logits span about +-5 (+-60 for the two tied-embedding models); both sides compute in float32
// from the same bf16-valued weights.
constexpr double kLogitTolerance = 1e-4;

const std::vector<std::string> kCases = {
    "llama",        "llama-bias-tied", "llama3",         "llama-linear",        "llama-dynamic",
    "llama-yarn",   "llama-yarn-mscale", "mistral-window", "qwen2",             "qwen2-window",
    "qwen3",        "qwen3-window",    "phi3",           "phi3-partial-window", "phi3-longrope"};

std::vector<int64_t> as_ids(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class FamilyGolden : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return kModels + GetParam(); }
};

TEST_P(FamilyGolden, LogitsMatchTransformersFloat32) {
  const SafetensorsFile golden(dir() + "/golden.safetensors");
  const std::vector<int64_t> ids = as_ids(golden.load("input_ids"));
  const Model model(dir());
  DenseBackend dense;
  ForwardOptions all;
  all.all_logits = true;
  const at::Tensor logits = model.forward(ids, dense, all).logits;
  const double err = max_abs_diff(logits, golden.load("logits"));
  EXPECT_LT(err, kLogitTolerance) << describe(model.config());
  // A fresh 24-token input: dynamic and longrope scaling use their short-context frequencies.
  const at::Tensor expected_prefix = golden.load("logits_prefix");
  const std::vector<int64_t> prefix(ids.begin(), ids.begin() + expected_prefix.size(0));
  const double err_prefix = max_abs_diff(model.forward(prefix, dense, all).logits, expected_prefix);
  EXPECT_LT(err_prefix, kLogitTolerance);
  RecordProperty("max_logit_error", std::to_string(std::max(err, err_prefix)));
}

TEST_P(FamilyGolden, RotaryFrequenciesAndScalingMatchTransformers) {
  const SafetensorsFile golden(dir() + "/golden.safetensors");
  const ModelConfig c = load_model_config(dir());
  const int64_t len = golden.load("input_ids").numel();
  const int64_t prefix = golden.load("logits_prefix").size(0);
  for (auto [length, suffix] : {std::pair<int64_t, std::string>{len, ""}, {prefix, "_prefix"}}) {
    SCOPED_TRACE(length);
    const at::Tensor expected = golden.load("inv_freq" + suffix).to(at::kDouble);
    const at::Tensor ours = rope_inv_freq(c.rope, c.rotary_dim, length).to(at::kDouble);
    ASSERT_EQ(ours.sizes(), expected.sizes());
    EXPECT_LT(((ours - expected).abs() / expected).max().item<double>(), 2e-6);
    EXPECT_NEAR(rope_attention_scaling(c.rope),
                golden.load("attention_scaling" + suffix)[0].item<double>(), 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(Transformers, FamilyGolden, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

// Prefill of the first 40 tokens into a KV cache, then one decode step per remaining token: the
// window slides over cached keys (len_q < len_k) and must give the full prefill's logits.
TEST(FamilyWindows, DecodingThroughTheWindowMatchesTransformers) {
  for (const char* name : {"mistral-window", "qwen2-window", "qwen3-window",
                           "phi3-partial-window"}) {
    SCOPED_TRACE(name);
    const SafetensorsFile golden(kModels + name + "/golden.safetensors");
    const std::vector<int64_t> ids = as_ids(golden.load("input_ids"));
    const at::Tensor expected = golden.load("logits");
    const Model model(kModels + name);
    ASSERT_TRUE(model.config().sliding_window.has_value());
    const int64_t split = 40;
    KVCache cache;
    DenseBackend dense;
    const std::vector<int64_t> head(ids.begin(), ids.begin() + split);
    ForwardOptions last;
    last.logit_positions = {split - 1};
    const at::Tensor first = model.forward(head, dense, last, &cache, int64_t(ids.size()) - split)
                                 .logits[0];
    EXPECT_LT(max_abs_diff(first, expected[split - 1]), kLogitTolerance);
    double worst = 0.0;
    for (int64_t p = split; p < int64_t(ids.size()); ++p)
      worst = std::max(worst, max_abs_diff(model.decode_step(ids[size_t(p)], cache), expected[p]));
    EXPECT_LT(worst, kLogitTolerance);
  }
}

// The windowed checkpoints run XAttention past their window: at tau = 1 (every allowed block
// kept) the forward equals the dense windowed forward, through the backend's shortcut and through
// the ops' scoring, selection and block-sparse attention; at tau < 1 the runner's gathered CPU
// path equals the op reference, blocks before each window never count in the density, and a
// backend without windows is still refused in one line.
struct OpsBackend : AttentionBackend {
  runtime::EstimateOptions options;
  float tau = 1.f;
  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override {
    return attend_window(layer, q, k, v, 0);
  }
  bool supports_sliding_window() const override { return true; }
  at::Tensor attend_window(int, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           int64_t window) override {
    runtime::EstimateOptions o = options;
    o.window = window;
    return runtime::prefill(q, k, v, at::full({q.size(1)}, tau), o);
  }
};

struct NoWindowBackend : DenseBackend {
  bool supports_sliding_window() const override { return false; }
};

TEST(FamilyWindows, XAttentionRunsPastTheWindow) {
  for (const char* name : {"mistral-window", "qwen2-window", "qwen3-window",
                           "phi3-partial-window"}) {
    SCOPED_TRACE(name);
    const Model model(kModels + name);
    const SafetensorsFile golden(kModels + name + "/golden.safetensors");
    const std::vector<int64_t> ids = as_ids(golden.load("input_ids"));
    const int64_t layers = model.config().num_layers, heads = model.config().num_heads;
    DenseBackend dense;
    ForwardOptions all;
    all.all_logits = true;
    const at::Tensor expected = model.forward(ids, dense, all).logits;
    EXPECT_LT(max_abs_diff(expected, golden.load("logits")), kLogitTolerance);
    auto full = XAttentionBackend::uniform(layers, heads, 1.0);
    EXPECT_LT(max_abs_diff(model.forward(ids, full, all).logits, expected), 1e-5);
    // Every block kept through scoring, selection and block-sparse attention (blocks of 16
    // tokens: the window of 16 spans two blocks, so blocks before it are dropped).
    OpsBackend ops;
    ops.options.block_size = 16;
    ops.options.stride = 4;
    EXPECT_LT(max_abs_diff(model.forward(ids, ops, all).logits, expected), 1e-4);
    // tau = 0.5: the runner's gathered attention equals the op reference.
    runtime::EstimateOptions small;
    small.block_size = 16;
    small.stride = 4;
    auto sparse = XAttentionBackend::uniform(layers, heads, 0.5, small);
    ops.tau = 0.5f;
    const at::Tensor got = model.forward(ids, sparse, all).logits;
    EXPECT_TRUE(at::isfinite(got).all().item<bool>());
    EXPECT_LT(max_abs_diff(got, model.forward(ids, ops, all).logits), 1e-4);
    for (int64_t l = 0; l < layers; ++l) {
      const at::Tensor d = sparse.last_density(int(l));
      EXPECT_TRUE((d > 0).all().item<bool>() && (d <= 1).all().item<bool>()) << d;
    }
  }
  const Model model(kModels + "mistral-window");
  const SafetensorsFile golden(kModels + "mistral-window/golden.safetensors");
  const std::vector<int64_t> ids = as_ids(golden.load("input_ids"));
  NoWindowBackend plain;
  const std::string message = error_of([&] { model.forward(ids, plain); });
  for (const char* word : {"sliding_window = 16", "64 tokens", "dense"})
    EXPECT_NE(message.find(word), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
  // Capture passes the window on to its inner backend.
  DenseBackend dense;
  int calls = 0;
  CaptureBackend capture(dense, [&](int, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&) { ++calls; });
  EXPECT_LT(max_abs_diff(model.forward(ids, capture).logits, model.forward(ids, dense).logits),
            1e-6);
  EXPECT_EQ(calls, model.config().num_layers);
}

// Float64 brute force: key j is visible to the query at position p when p - window < j <= p.
at::Tensor windowed_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              int64_t window) {
  const int64_t group = q.size(1) / k.size(1), lq = q.size(2), lk = k.size(2);
  const at::Tensor kr = k.to(at::kDouble).repeat_interleave(group, 1);
  const at::Tensor vr = v.to(at::kDouble).repeat_interleave(group, 1);
  at::Tensor s = at::matmul(q.to(at::kDouble), kr.transpose(-1, -2)) / std::sqrt(double(q.size(3)));
  at::Tensor mask = at::zeros({lq, lk}, at::kBool);
  for (int64_t i = 0; i < lq; ++i) {
    const int64_t p = lk - lq + i;
    for (int64_t j = 0; j < lk; ++j) mask[i][j] = j > p || j <= p - window;
  }
  s.masked_fill_(mask, -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(s, -1), vr);
}

TEST(FamilyWindows, DenseWindowedAttentionMatchesBruteForce) {
  for (auto [hq, hkv, lq, lk] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
           {4, 2, 37, 37}, {4, 4, 9, 37}, {6, 2, 1, 50}, {2, 1, 129, 129}}) {
    const at::Tensor q = at::randn({1, hq, lq, 16}), k = at::randn({1, hkv, lk, 16}),
                     v = at::randn({1, hkv, lk, 16});
    for (int64_t window : {1, 2, 5, 16, 36, 37, 200}) {
      SCOPED_TRACE(testing::Message() << hq << "/" << hkv << " " << lq << "x" << lk << " window "
                                      << window);
      const at::Tensor expected = windowed_reference(q, k, v, window);
      EXPECT_LT(max_abs_diff(dense_causal_attention(q, k, v, int64_t(256) << 20, window),
                             expected),
                1e-5);
      // One query row per chunk: each chunk reads its own key range.
      EXPECT_LT(max_abs_diff(dense_causal_attention(q, k, v, 1, window), expected), 1e-5);
    }
  }
}

// A config.json of `architecture` with the shapes filled in and `extra` appended.
ModelConfig parse_with(const std::string& architecture, const std::string& extra) {
  return parse_model_config(
      R"({"architectures":[")" + architecture + R"("],"vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":3,"num_attention_heads":4,
      "num_key_value_heads":2,"max_position_embeddings":4096)" + extra + "}",
      "c.json");
}

TEST(FamilyConfig, SlidingWindowsPerLayer) {
  const ModelConfig mistral = parse_with("MistralForCausalLM", R"(,"sliding_window":4096)");
  EXPECT_EQ(mistral.layer_windows, (std::vector<int64_t>{4096, 4096, 4096}));
  EXPECT_FALSE(parse_with("MistralForCausalLM", R"(,"sliding_window":null)").sliding_window);
  // Qwen2 (transformers 4): windows from layer max_window_layers on, only with use_sliding_window.
  const ModelConfig qwen = parse_with("Qwen2ForCausalLM", R"(,"use_sliding_window":true,
      "sliding_window":8,"max_window_layers":1)");
  EXPECT_EQ(qwen.layer_windows, (std::vector<int64_t>{0, 8, 8}));
  EXPECT_EQ(qwen.sliding_window, 8);
  const ModelConfig qwen_off = parse_with("Qwen2ForCausalLM", R"(,"use_sliding_window":false,
      "sliding_window":131072,"max_window_layers":28)");
  EXPECT_EQ(qwen_off.layer_windows, (std::vector<int64_t>{0, 0, 0}));
  // layer_types (transformers 5) decide where given.
  const ModelConfig qwen3 = parse_with("Qwen3ForCausalLM", R"(,"sliding_window":8,
      "layer_types":["full_attention","sliding_attention","full_attention"])");
  EXPECT_EQ(qwen3.layer_windows, (std::vector<int64_t>{0, 8, 0}));
  EXPECT_TRUE(qwen3.qk_norm);
  EXPECT_FALSE(qwen3.qkv_bias);
  EXPECT_TRUE(parse_with("Qwen3ForCausalLM", R"(,"attention_bias":true)").o_bias);
  const ModelConfig phi3 = parse_with("Phi3ForCausalLM", R"(,"partial_rotary_factor":0.75)");
  EXPECT_TRUE(phi3.fused_projections);
  EXPECT_EQ(phi3.rotary_dim, 12);
  EXPECT_EQ(phi3.head_dim, 16);
}

TEST(FamilyConfig, RopeTypesParse) {
  const ModelConfig dynamic = parse_with("LlamaForCausalLM",
                                         R"(,"rope_scaling":{"type":"dynamic","factor":2.0})");
  EXPECT_EQ(dynamic.rope.type, RopeType::kDynamic);
  EXPECT_EQ(dynamic.rope.max_position_embeddings, 4096);
  const ModelConfig yarn = parse_with("Qwen2ForCausalLM", R"(,"rope_scaling":{"rope_type":"yarn",
      "factor":4.0,"original_max_position_embeddings":32768})");
  EXPECT_EQ(yarn.rope.type, RopeType::kYarn);
  EXPECT_NEAR(yarn.rope.attention_factor, 0.1 * std::log(4.0) + 1.0, 1e-12);
  EXPECT_EQ(yarn.rope.original_max_position_embeddings, 32768);
  // Phi-3 keeps original_max_position_embeddings at the top level.
  const ModelConfig longrope = parse_with("Phi3ForCausalLM", R"(,"original_max_position_embeddings":1024,
      "rope_scaling":{"type":"longrope","short_factor":[1,1,1,1,1,1,1,1],
      "long_factor":[2,2,2,2,2,2,2,2]})");
  EXPECT_EQ(longrope.rope.type, RopeType::kLongRope);
  EXPECT_EQ(longrope.rope.original_max_position_embeddings, 1024);
  EXPECT_NEAR(longrope.rope.attention_factor, std::sqrt(1 + std::log(4.0) / std::log(1024.0)),
              1e-12);
}

TEST(FamilyConfig, UnsupportedOptionsNameTheirField) {
  auto refused = [](const std::string& architecture, const std::string& extra,
                    std::initializer_list<const char*> words) {
    SCOPED_TRACE(extra);
    const std::string message = error_of([&] { parse_with(architecture, extra); });
    ASSERT_FALSE(message.empty()) << "accepted";
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const char* w : words) EXPECT_NE(message.find(w), std::string::npos) << message;
  };
  refused("GemmaForCausalLM", "", {"architectures", "GemmaForCausalLM", "Phi3ForCausalLM"});
  refused("LlamaForCausalLM", R"(,"rope_scaling":{"rope_type":"mrope"})",
          {"rope_scaling.rope_type", "mrope"});
  refused("LlamaForCausalLM", R"(,"partial_rotary_factor":0.5)",
          {"partial_rotary_factor", "Phi3ForCausalLM only"});
  refused("Qwen2ForCausalLM", R"(,"sliding_window":8,"layer_types":["full_attention",
      "chunked_attention","full_attention"])",
          {"layer_types", "chunked_attention"});
  refused("Qwen2ForCausalLM", R"(,"layer_types":["sliding_attention","full_attention",
      "full_attention"])",
          {"layer_types", "sliding_window"});
  refused("Qwen2ForCausalLM", R"(,"layer_types":["full_attention"])", {"layer_types", "3"});
  refused("Phi3ForCausalLM", R"(,"rope_scaling":{"type":"longrope","short_factor":[1,1],
      "long_factor":[2,2]})",
          {"longrope", "8 entries"});
  refused("Phi3ForCausalLM", R"(,"rope_scaling":{"type":"longrope","short_factor":[1,1]})",
          {"long_factor"});
  // ln(original context 1) = 0 would make longrope's attention factor infinite.
  refused("Phi3ForCausalLM", R"(,"rope_scaling":{"type":"longrope","short_factor":[1,1,1,1,1,1,1,1],
      "long_factor":[2,2,2,2,2,2,2,2],"original_max_position_embeddings":1})",
          {"attention_factor", "finite"});
  refused("LlamaForCausalLM", R"(,"rope_scaling":{"rope_type":"dynamic"})",
          {"dynamic", "factor"});
  refused("LlamaForCausalLM", R"(,"hidden_act":"gelu")", {"hidden_act", "gelu"});
  // Per-layer windows hold one entry per layer: a huge layer count is refused before that.
  refused("LlamaForCausalLM", R"(,"num_hidden_layers":4000000000000000000)",
          {"num_hidden_layers", "limit"});
}

}  // namespace
}  // namespace xattn::model
