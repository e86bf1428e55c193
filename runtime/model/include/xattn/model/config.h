// config.json of a Hugging Face decoder checkpoint, reduced to what the runner needs.
// Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias),
// Qwen3ForCausalLM (RMSNorm on each head's q and k), Phi3ForCausalLM (fused qkv and gate_up).
// Rotary settings are read from the top level ("rope_theta", "rope_scaling"; transformers 4) or from
// "rope_parameters" (transformers 5); rope types "default", "linear", "llama3", "dynamic", "yarn"
// and "longrope". Sliding windows: Mistral and Phi-3 "sliding_window" on every layer; Qwen2/Qwen3
// "use_sliding_window" with "max_window_layers", or "layer_types" where given.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace xattn::model {

enum class Architecture { kLlama, kMistral, kQwen2, kQwen3, kPhi3 };

const char* architecture_name(Architecture a);
// Hugging Face's model_type: "llama", "mistral", "qwen2" (what calibration profiles record).
const char* model_type_name(Architecture a);

enum class RopeType { kDefault, kLinear, kLlama3, kDynamic, kYarn, kLongRope };

const char* rope_type_name(RopeType t);

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;  // linear, llama3, dynamic, yarn, longrope
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // llama3, yarn, longrope: the context the model was pretrained with
  int64_t original_max_position_embeddings = 8192;
  // dynamic: frequencies rescale once the input passes this many positions
  int64_t max_position_embeddings = 0;
  // yarn: the rotation counts bounding the blend, and whether its bounds are rounded outwards
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  bool truncate = true;
  // yarn and longrope: the factor multiplying cos and sin (given, or derived from factor)
  double attention_factor = 1.0;
  // longrope: per-frequency divisors [rotary_dim / 2] for short and long inputs
  std::vector<double> short_factor, long_factor;
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
  // Leading dimensions of each head that RoPE rotates: head_dim * partial_rotary_factor (Phi-3).
  int64_t rotary_dim = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias
  bool mlp_bias = false;  // Llama with mlp_bias
  bool qk_norm = false;   // Qwen3: RMSNorm over head_dim on q and k before RoPE
  bool fused_projections = false;  // Phi-3: qkv_proj [q; k; v] and gate_up_proj [gate; up]
  // The "sliding_window" value when at least one layer uses it (Mistral v0.1, Phi-3, Qwen2/Qwen3
  // with use_sliding_window), and each layer's window [num_layers] (0: full causal attention).
  // A query at position p then sees keys p - window + 1 .. p.
  std::optional<int64_t> sliding_window;
  std::vector<int64_t> layer_windows;
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

// The shortest sliding window over the layers (0: no layer has one). Inputs longer than it need
// windowed attention, which XAttention does not implement yet.
int64_t shortest_sliding_window(const ModelConfig& c);

// One line for logs: architecture, sizes, heads, rotary settings.
std::string describe(const ModelConfig& c);

}  // namespace xattn::model
