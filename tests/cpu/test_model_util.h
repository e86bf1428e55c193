// Helpers for the model runner tests: temporary folders and tiny random checkpoints.
#pragma once

#include <ATen/ATen.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "scratch.h"
#include "xattn/model/safetensors.h"

namespace xattn::model::testing {

// A fresh folder under the system temp dir, removed with its contents at scope exit.
using TempDir = test_files::ScratchFolder;

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

struct TinySpec {
  std::string architecture = "LlamaForCausalLM";
  int64_t vocab = 40, hidden = 32, intermediate = 48, layers = 2, heads = 4, kv_heads = 2,
          head_dim = 8;
  bool tied = false;
  bool qkv_bias = false;  // set for Qwen2
  double rope_theta = 10000.0;
  double eps = 1e-5;
  nlohmann::json extra = nlohmann::json::object();  // merged into config.json
};

inline nlohmann::json tiny_config(const TinySpec& s) {
  nlohmann::json c = {{"architectures", {s.architecture}},
                      {"vocab_size", s.vocab},
                      {"hidden_size", s.hidden},
                      {"intermediate_size", s.intermediate},
                      {"num_hidden_layers", s.layers},
                      {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.kv_heads},
                      {"head_dim", s.head_dim},
                      {"hidden_act", "silu"},
                      {"rms_norm_eps", s.eps},
                      {"rope_theta", s.rope_theta},
                      {"tie_word_embeddings", s.tied}};
  for (auto it = s.extra.begin(); it != s.extra.end(); ++it) c[it.key()] = it.value();
  return c;
}

// Random weights named and shaped like a Hugging Face Llama/Qwen2 checkpoint.
inline std::vector<std::pair<std::string, at::Tensor>> tiny_weights(const TinySpec& s,
                                                                    uint64_t seed,
                                                                    at::ScalarType dtype) {
  at::manual_seed(seed);
  std::vector<std::pair<std::string, at::Tensor>> w;
  auto rnd = [&](std::vector<int64_t> shape, double scale) {
    return (at::randn(shape) * scale).to(dtype);
  };
  const int64_t H = s.hidden, q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  w.emplace_back("model.embed_tokens.weight", rnd({s.vocab, H}, 1.0));
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    w.emplace_back(p + "input_layernorm.weight", (1.0 + at::randn({H}) * 0.2).to(dtype));
    w.emplace_back(p + "post_attention_layernorm.weight", (1.0 + at::randn({H}) * 0.2).to(dtype));
    w.emplace_back(p + "self_attn.q_proj.weight", rnd({q, H}, 0.4));
    w.emplace_back(p + "self_attn.k_proj.weight", rnd({kv, H}, 0.4));
    w.emplace_back(p + "self_attn.v_proj.weight", rnd({kv, H}, 0.3));
    w.emplace_back(p + "self_attn.o_proj.weight", rnd({H, q}, 0.3));
    if (s.qkv_bias) {
      w.emplace_back(p + "self_attn.q_proj.bias", rnd({q}, 0.3));
      w.emplace_back(p + "self_attn.k_proj.bias", rnd({kv}, 0.3));
      w.emplace_back(p + "self_attn.v_proj.bias", rnd({kv}, 0.3));
    }
    w.emplace_back(p + "mlp.gate_proj.weight", rnd({s.intermediate, H}, 0.3));
    w.emplace_back(p + "mlp.up_proj.weight", rnd({s.intermediate, H}, 0.3));
    w.emplace_back(p + "mlp.down_proj.weight", rnd({H, s.intermediate}, 0.3));
  }
  w.emplace_back("model.norm.weight", (1.0 + at::randn({H}) * 0.2).to(dtype));
  if (!s.tied) w.emplace_back("lm_head.weight", rnd({s.vocab, H}, 0.3));
  return w;
}

inline void write_tiny_checkpoint(const std::string& dir, const TinySpec& s, uint64_t seed = 1,
                                  at::ScalarType dtype = at::kFloat) {
  io::make_folders(dir);
  write_text(io::join_path(dir, "config.json"), tiny_config(s).dump(2));
  write_safetensors(io::join_path(dir, "model.safetensors"),
                    tiny_weights(s, seed, dtype), {{"format", "pt"}}, /*overwrite=*/true);
}

}  // namespace xattn::model::testing
