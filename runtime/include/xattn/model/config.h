// config.json of a Hugging Face decoder checkpoint, reduced to what the runner needs.
// Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias).
// Rotary settings are read from the top level ("rope_theta", "rope_scaling"; transformers 4) or from
// "rope_parameters" (transformers 5); rope types "default", "linear" and "llama3".
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace xattn::model {

enum class Architecture { kLlama, kMistral, kQwen2 };

const char* architecture_name(Architecture a);
// Hugging Face's model_type: "llama", "mistral", "qwen2" (what calibration profiles record).
const char* model_type_name(Architecture a);

enum class RopeType { kDefault, kLinear, kLlama3 };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;  // linear and llama3
  // llama3 only
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;     // query heads
  int64_t num_kv_heads = 0;  // GQA: num_heads is a multiple
  int64_t head_dim = 0;      // "head_dim" or hidden_size / num_heads
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias
  bool mlp_bias = false;  // Llama with mlp_bias
  std::optional<int64_t> sliding_window;  // Mistral v0.1 / Qwen2 with use_sliding_window
  int64_t max_position_embeddings = 0;
  std::string torch_dtype;  // "bfloat16", "float16", "float32" or empty
  // Byte-level tokenizer of the project's bundled models ("xattn_byte_level": true):
  // ids 0..255 are bytes, then <bos>, <eos>, <pad>.
  bool byte_level = false;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
};

// Parses config.json text; `source` names it in error messages. Throws xattn::Error naming the key.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source);

// Reads DIR/config.json.
ModelConfig load_model_config(const std::string& dir);

// One line for logs: architecture, sizes, heads, rotary settings.
std::string describe(const ModelConfig& c);

}  // namespace xattn::model
