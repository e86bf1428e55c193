// libFuzzer target: config.json text through parse_model_config (what Model and every command
// with --model read first), then the one-line description the CLI prints. An accepted config must
// describe a model the runner can shape: positive sizes, heads a multiple of KV heads, finite
// rotary and norm settings, special token ids inside the vocabulary.
#include <cmath>
#include <string>

#include "fuzz_common.h"
#include "xattn/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  fuzz::expect_refusal_only([&] {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const model::ModelConfig c = model::parse_model_config(text, "config.json");
    fuzz::require(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 &&
                      c.num_layers > 0 && c.num_heads > 0 && c.num_kv_heads > 0 && c.head_dim > 0,
                  "positive sizes");
    fuzz::require(c.num_heads % c.num_kv_heads == 0, "heads a multiple of KV heads");
    fuzz::require(std::isfinite(c.rope.theta) && c.rope.theta > 1 && std::isfinite(c.rope.factor) &&
                      c.rope.factor > 0 && c.rope.original_max_position_embeddings > 0,
                  "finite rotary settings");
    fuzz::require(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps >= 0, "finite rms_norm_eps");
    for (const auto& id : {c.bos_token_id, c.eos_token_id})
      fuzz::require(!id || (*id >= 0 && *id < c.vocab_size), "special tokens in the vocabulary");
    (void)model::describe(c);
  });
  return 0;
}
