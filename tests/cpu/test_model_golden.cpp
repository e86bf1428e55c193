// The bundled model examples/models/xattn-byte against Hugging Face transformers' LlamaForCausalLM
// (tests/data/golden/xattn_byte_logits.safetensors, made by scripts/train/make_golden.py).
#include <gtest/gtest.h>

#include "xattn/io/paths.h"
#include "xattn/model/model.h"
#include "xattn/model/safetensors.h"
#include "xattn/model/tokens.h"

namespace xattn::model {
namespace {

const std::string kModelDir = std::string(XATTN_SOURCE_DIR) + "/examples/models/xattn-byte";
const std::string kGolden =
    std::string(XATTN_SOURCE_DIR) + "/tests/data/golden/xattn_byte_logits.safetensors";

TEST(ModelGolden, BundledModelMatchesTransformersFloat32) {
  if (!io::path_exists(kGolden) || !io::path_exists(kModelDir + "/config.json"))
    GTEST_SKIP() << "bundled model or golden file absent";
  const SafetensorsFile golden(kGolden);
  const at::Tensor ids_t = golden.load("input_ids");
  const std::vector<int64_t> ids(ids_t.data_ptr<int64_t>(), ids_t.data_ptr<int64_t>() + ids_t.numel());
  const at::Tensor pos_t = golden.load("positions");
  const std::vector<int64_t> positions(pos_t.data_ptr<int64_t>(),
                                       pos_t.data_ptr<int64_t>() + pos_t.numel());
  const at::Tensor expected = golden.load("logits");
  const at::Tensor expected_nll = golden.load("nll");

  const Model model(kModelDir);  // bf16 weights upcast to float32 on CPU, as the reference
  EXPECT_TRUE(model.config().byte_level);
  EXPECT_EQ(ids.front(), kByteBos);
  DenseBackend dense;
  ForwardOptions options;
  options.logit_positions = positions;
  options.nll = true;
  const ForwardResult r = model.forward(ids, dense, options);
  // Both sides compute in float32 from the same bf16 weights; an independent float32 PyTorch
  // implementation matched to 3e-5 (tests/data/golden/README.md). Logits span about +-25.
  const double logit_err = (r.logits - expected).abs().max().item<double>();
  EXPECT_LT(logit_err, 2e-4) << "max |logit - transformers|";
  const double nll_err = (r.nll - expected_nll).abs().max().item<double>();
  EXPECT_LT(nll_err, 2e-4) << "max |nll - transformers|";
  RecordProperty("max_logit_error", std::to_string(logit_err));
  RecordProperty("max_nll_error", std::to_string(nll_err));
  // The reference's argmax at every stored position is ours too.
  EXPECT_TRUE(at::equal(r.logits.argmax(-1), expected.argmax(-1)));
}

}  // namespace
}  // namespace xattn::model
