// The runner on CUDA tensors (bfloat16 weights, as users run it) against transformers'
// bfloat16 SDPA logits and float32 logits of the golden file. Skips without a CUDA device, so it
// costs nothing in CPU-only CI; it runs in xattn_tests built against a CUDA LibTorch.
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include "xattn/io/paths.h"
#include "xattn/model/model.h"
#include "xattn/model/safetensors.h"

namespace xattn::model {
namespace {

const std::string kModelDir = std::string(XATTN_SOURCE_DIR) + "/examples/models/xattn-byte";
const std::string kGolden =
    std::string(XATTN_SOURCE_DIR) + "/tests/data/golden/xattn_byte_logits.safetensors";

std::vector<int64_t> as_vector(const at::Tensor& t) {
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

TEST(ModelCuda, Bf16LogitsAgreeWithTransformers) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device (or LibTorch without CUDA)";
  if (!io::path_exists(kGolden)) GTEST_SKIP() << "no golden file";
  const SafetensorsFile golden(kGolden);
  const std::vector<int64_t> ids = as_vector(golden.load("input_ids"));
  ForwardOptions options;
  options.logit_positions = as_vector(golden.load("positions"));
  const Model model(kModelDir, {at::Device(at::kCUDA), std::nullopt});
  ASSERT_EQ(model.dtype(), at::kBFloat16);  // the stored dtype
  DenseBackend dense;
  const at::Tensor logits = model.forward(ids, dense, options).logits;
  // transformers' own bf16 SDPA logits differ from its float32 ones by up to 0.20 here
  // (tests/data/golden/README.md); two bf16 implementations may round differently.
  const double vs_float32 = (logits - golden.load("logits")).abs().max().item<double>();
  EXPECT_LT(vs_float32, 0.5);
  if (golden.contains("logits_bf16_cuda")) {
    const double vs_bf16 = (logits - golden.load("logits_bf16_cuda")).abs().max().item<double>();
    EXPECT_LT(vs_bf16, 0.5);
    RecordProperty("max_error_vs_transformers_bf16", std::to_string(vs_bf16));
  }
  RecordProperty("max_error_vs_transformers_fp32", std::to_string(vs_float32));

  // float32 on CUDA agrees with the float32 reference as tightly as the CPU path.
  const Model model32(kModelDir, {at::Device(at::kCUDA), at::kFloat});
  const at::Tensor logits32 = model32.forward(ids, dense, options).logits;
  EXPECT_LT((logits32 - golden.load("logits")).abs().max().item<double>(), 1e-3);
}

TEST(ModelCuda, XAttentionKernelsAtTauOneMatchDenseOnAPrompt) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device (or LibTorch without CUDA)";
  if (!io::path_exists(kModelDir + "/config.json")) GTEST_SKIP() << "no bundled model";
  // The CUDA kernels take bfloat16 / float16 (float32 CUDA tensors get a clear error).
  const Model model(kModelDir, {at::Device(at::kCUDA), at::kBFloat16});
  std::vector<int64_t> ids = {256};
  for (int i = 0; i < 1000; ++i) ids.push_back(97 + (i * 7) % 26);
  DenseBackend dense;
  XAttentionBackend full =
      XAttentionBackend::uniform(model.config().num_layers, model.config().num_heads, 1.0);
  const at::Tensor a = model.forward(ids, dense).logits;
  const at::Tensor b = model.forward(ids, full).logits;
  // Two bfloat16 attention implementations (torch's fused kernel and ours) differ by rounding
  // only; logits span about +-25.
  EXPECT_LT((a - b).abs().max().item<double>(), 0.25);
  EXPECT_EQ(a.argmax(-1).item<int64_t>(), b.argmax(-1).item<int64_t>());
  EXPECT_NEAR(full.mean_density(), 1.0, 1e-12);
}

// The dense sliding-window path on CUDA (float32, so transformers' float32 logits hold within
// 1e-3): the windowed checkpoints of tests/data/models, whose 64-token input spans the window.
TEST(ModelCuda, SlidingWindowFamiliesMatchTransformersOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device (or LibTorch without CUDA)";
  const std::string models = std::string(XATTN_SOURCE_DIR) + "/tests/data/models/";
  for (const char* name : {"mistral-window", "qwen2-window", "qwen3-window", "phi3-partial-window"}) {
    SCOPED_TRACE(name);
    const SafetensorsFile golden(models + name + "/golden.safetensors");
    const at::Tensor ids_tensor = golden.load("input_ids").to(at::kLong).contiguous();
    LoadOptions load;
    load.device = at::Device(at::kCUDA);
    load.dtype = at::kFloat;
    const Model model(models + name, load);
    DenseBackend dense;
    ForwardOptions all;
    all.all_logits = true;
    const at::Tensor logits = model.forward(as_vector(ids_tensor), dense, all).logits.cpu();
    const double err = (logits.to(at::kDouble) - golden.load("logits").to(at::kDouble))
                           .abs().max().item<double>();
    EXPECT_LT(err, 1e-3);
  }
}

}  // namespace
}  // namespace xattn::model
