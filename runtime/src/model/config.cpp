// config.json parsing; see xattn/model/config.h.
#include "xattn/paths.h"
#include "xattn/model/config.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "xattn/error.h"

namespace xattn::model {

namespace {

using nlohmann::json;

struct Reader {
  const json& j;
  const std::string& source;

  std::string where(const std::string& key) const {
    return detail::concat(source, ": key '", key, "'");
  }
  bool has(const std::string& key) const { return j.contains(key) && !j[key].is_null(); }

  int64_t integer(const std::string& key) const {
    XATTN_CHECK_INPUT(has(key), source, ": missing required key '", key, "'");
    return integer_value(key, j[key]);
  }
  int64_t integer_or(const std::string& key, int64_t fallback) const {
    return has(key) ? integer_value(key, j[key]) : fallback;
  }
  int64_t integer_value(const std::string& key, const json& v) const {
    XATTN_CHECK_INPUT(v.is_number_integer(), where(key), " must be an integer, got ", v.dump());
    XATTN_CHECK_INPUT(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX),
                      where(key), " is too large: ", v.dump());
    return v.get<int64_t>();
  }
  // An integer of a nested object (e.g. rope_scaling), or `fallback` when absent.
  int64_t integer_in(const json& obj, const std::string& key, int64_t fallback) const {
    if (!obj.contains(key) || obj[key].is_null()) return fallback;
    return integer_value(key, obj[key]);
  }
  double number_or(const json& obj, const std::string& key, double fallback) const {
    if (!obj.contains(key) || obj[key].is_null()) return fallback;
    XATTN_CHECK_INPUT(obj[key].is_number(), where(key), " must be a number, got ",
                      obj[key].dump());
    const double value = obj[key].get<double>();
    // JSON has no inf or NaN (the parser refuses 1e400); checked all the same, as every use
    // assumes a finite value.
    XATTN_CHECK_INPUT(std::isfinite(value), where(key), " must be a finite number, got ",
                      obj[key].dump());
    return value;
  }
  bool boolean_or(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    XATTN_CHECK_INPUT(j[key].is_boolean(), where(key), " must be true or false, got ",
                      j[key].dump());
    return j[key].get<bool>();
  }
  std::string string_or(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    XATTN_CHECK_INPUT(j[key].is_string(), where(key), " must be a string, got ", j[key].dump());
    return j[key].get<std::string>();
  }
  // bos/eos ids may be a single integer or a list (first used).
  std::optional<int64_t> token_id(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    const json& v = j[key];
    if (v.is_array() && !v.empty()) return integer_value(key, v[0]);
    return integer_value(key, v);
  }
};

Architecture parse_architecture(const json& j, const std::string& source) {
  std::string name;
  if (j.contains("architectures") && j["architectures"].is_array() &&
      !j["architectures"].empty() && j["architectures"][0].is_string()) {
    name = j["architectures"][0].get<std::string>();
    if (name == "LlamaForCausalLM") return Architecture::kLlama;
    if (name == "MistralForCausalLM") return Architecture::kMistral;
    if (name == "Qwen2ForCausalLM") return Architecture::kQwen2;
  } else if (j.contains("model_type") && j["model_type"].is_string()) {
    name = j["model_type"].get<std::string>();
    if (name == "llama") return Architecture::kLlama;
    if (name == "mistral") return Architecture::kMistral;
    if (name == "qwen2") return Architecture::kQwen2;
  } else {
    throw Error(ErrorKind::kBadInput,
                detail::concat(source, ": neither 'architectures' nor 'model_type' is set"));
  }
  throw Error(ErrorKind::kBadInput,
              detail::concat(source, ": unsupported architecture '", name,
                             "' (key 'architectures'); supported: LlamaForCausalLM, "
                             "MistralForCausalLM, Qwen2ForCausalLM"));
}

RopeConfig parse_rope(const Reader& r) {
  RopeConfig rope;
  const json& j = r.j;
  // transformers 5 keeps theta and the scaling fields together in "rope_parameters";
  // transformers 4 has "rope_theta" at the top and optional "rope_scaling".
  const json* params = nullptr;
  std::string params_key;
  if (r.has("rope_parameters")) {
    params_key = "rope_parameters";
  } else if (r.has("rope_scaling")) {
    params_key = "rope_scaling";
  }
  if (!params_key.empty()) {
    params = &j[params_key];
    XATTN_CHECK_INPUT(params->is_object(), r.where(params_key), " must be an object");
  }
  rope.theta = r.number_or(j, "rope_theta", 10000.0);
  if (params) rope.theta = r.number_or(*params, "rope_theta", rope.theta);
  XATTN_CHECK_INPUT(rope.theta > 1.0, r.where("rope_theta"), " must be > 1, got ", rope.theta);
  if (!params) return rope;

  std::string type = "default";
  for (const char* key : {"rope_type", "type"})
    if (params->contains(key) && (*params)[key].is_string()) type = (*params)[key].get<std::string>();
  const std::string key = params_key + ".rope_type";
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear") {
    rope.type = RopeType::kLinear;
    rope.factor = r.number_or(*params, "factor", 1.0);
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    for (const char* k : {"factor", "low_freq_factor", "high_freq_factor",
                          "original_max_position_embeddings"})
      XATTN_CHECK_INPUT(params->contains(k), r.where(params_key), " of rope_type llama3 lacks '",
                        k, "'");
    rope.factor = r.number_or(*params, "factor", 8.0);
    rope.low_freq_factor = r.number_or(*params, "low_freq_factor", 1.0);
    rope.high_freq_factor = r.number_or(*params, "high_freq_factor", 4.0);
    rope.original_max_position_embeddings =
        r.integer_in(*params, "original_max_position_embeddings", 8192);
    XATTN_CHECK_INPUT(rope.original_max_position_embeddings > 0,
                      r.where(params_key + ".original_max_position_embeddings"),
                      " must be positive, got ", rope.original_max_position_embeddings);
    XATTN_CHECK_INPUT(rope.high_freq_factor > rope.low_freq_factor, r.where(params_key),
                      ": high_freq_factor must exceed low_freq_factor");
  } else {
    throw Error(ErrorKind::kBadInput,
                detail::concat(r.where(key), ": unsupported rope type '", type,
                               "'; supported: default, linear, llama3"));
  }
  XATTN_CHECK_INPUT(rope.factor > 0, r.where(params_key + ".factor"), " must be positive");
  return rope;
}

}  // namespace

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::kLlama: return "LlamaForCausalLM";
    case Architecture::kMistral: return "MistralForCausalLM";
    case Architecture::kQwen2: return "Qwen2ForCausalLM";
  }
  return "unknown";
}

const char* model_type_name(Architecture a) {
  switch (a) {
    case Architecture::kLlama: return "llama";
    case Architecture::kMistral: return "mistral";
    case Architecture::kQwen2: return "qwen2";
  }
  return "unknown";
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kBadInput, detail::concat(source, " is not valid JSON: ", e.what()));
  }
  XATTN_CHECK_INPUT(j.is_object(), source, " must hold a JSON object");
  const Reader r{j, source};
  ModelConfig c;
  c.architecture = parse_architecture(j, source);
  c.vocab_size = r.integer("vocab_size");
  c.hidden_size = r.integer("hidden_size");
  c.intermediate_size = r.integer("intermediate_size");
  c.num_layers = r.integer("num_hidden_layers");
  c.num_heads = r.integer("num_attention_heads");
  c.num_kv_heads = r.integer_or("num_key_value_heads", c.num_heads);
  for (auto [key, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                            {"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_layers},
                            {"num_attention_heads", c.num_heads},
                            {"num_key_value_heads", c.num_kv_heads}})
    XATTN_CHECK_INPUT(value > 0, r.where(key), " must be positive, got ", value);
  XATTN_CHECK_INPUT(c.num_heads % c.num_kv_heads == 0, source, ": num_attention_heads (",
                    c.num_heads, ") must be a multiple of num_key_value_heads (", c.num_kv_heads,
                    ")");
  if (r.has("head_dim")) {
    c.head_dim = r.integer("head_dim");
  } else {
    XATTN_CHECK_INPUT(c.hidden_size % c.num_heads == 0, source, ": hidden_size (", c.hidden_size,
                      ") is not a multiple of num_attention_heads (", c.num_heads,
                      ") and no 'head_dim' is given");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  XATTN_CHECK_INPUT(c.head_dim > 0 && c.head_dim % 2 == 0, r.where("head_dim"),
                    " must be a positive even number, got ", c.head_dim);
  c.rms_norm_eps = r.number_or(j, "rms_norm_eps", 1e-6);
  XATTN_CHECK_INPUT(c.rms_norm_eps >= 0, r.where("rms_norm_eps"), " must be >= 0, got ",
                    c.rms_norm_eps);
  c.rope = parse_rope(r);
  c.tie_word_embeddings = r.boolean_or("tie_word_embeddings", false);
  c.max_position_embeddings = r.integer_or("max_position_embeddings", 0);
  XATTN_CHECK_INPUT(c.max_position_embeddings >= 0, r.where("max_position_embeddings"),
                    " must be >= 0, got ", c.max_position_embeddings);
  const std::string act = r.string_or("hidden_act", "silu");
  XATTN_CHECK_INPUT(act == "silu", r.where("hidden_act"), ": unsupported activation '", act,
                    "' (the runner implements the SwiGLU MLP with silu)");
  switch (c.architecture) {
    case Architecture::kLlama:
      c.qkv_bias = c.o_bias = r.boolean_or("attention_bias", false);
      c.mlp_bias = r.boolean_or("mlp_bias", false);
      break;
    case Architecture::kMistral:
      if (r.has("sliding_window")) c.sliding_window = r.integer("sliding_window");
      break;
    case Architecture::kQwen2:
      c.qkv_bias = true;
      if (r.boolean_or("use_sliding_window", false) && r.has("sliding_window"))
        c.sliding_window = r.integer("sliding_window");
      break;
  }
  if (c.sliding_window)
    XATTN_CHECK_INPUT(*c.sliding_window > 0, r.where("sliding_window"), " must be positive, got ",
                      *c.sliding_window);
  c.torch_dtype = r.string_or("torch_dtype", r.string_or("dtype", ""));
  c.byte_level = r.boolean_or("xattn_byte_level", false);
  c.bos_token_id = r.token_id("bos_token_id");
  c.eos_token_id = r.token_id("eos_token_id");
  for (const auto& [key, id] : {std::make_pair("bos_token_id", c.bos_token_id),
                                std::make_pair("eos_token_id", c.eos_token_id)})
    XATTN_CHECK_INPUT(!id || (*id >= 0 && *id < c.vocab_size), r.where(key), ": token id ", *id,
                      " is outside the vocabulary [0, ", c.vocab_size, ")");
  if (c.byte_level) {
    XATTN_CHECK_INPUT(c.vocab_size >= 258, source, ": a byte-level model (xattn_byte_level) needs "
                      "vocab_size >= 258 (256 bytes, <bos>, <eos>), got ", c.vocab_size);
    if (!c.bos_token_id) c.bos_token_id = 256;
    if (!c.eos_token_id) c.eos_token_id = 257;
  }
  return c;
}

ModelConfig load_model_config(const std::string& dir) {
  const std::string path = io::join_path(dir, "config.json");
  std::ifstream in(path);
  XATTN_CHECK(in.good(), ErrorKind::kIo, "cannot read '", path,
              "': a model folder needs config.json beside its *.safetensors");
  std::stringstream text;
  text << in.rdbuf();
  return parse_model_config(text.str(), path);
}

std::string describe(const ModelConfig& c) {
  std::ostringstream out;
  out << architecture_name(c.architecture) << ": " << c.num_layers << " layers, hidden "
      << c.hidden_size << ", " << c.num_heads << " query heads / " << c.num_kv_heads
      << " kv heads of dim " << c.head_dim << ", mlp " << c.intermediate_size << ", vocab "
      << c.vocab_size << ", rope theta " << c.rope.theta;
  if (c.rope.type == RopeType::kLinear) out << " (linear x" << c.rope.factor << ")";
  if (c.rope.type == RopeType::kLlama3) out << " (llama3 x" << c.rope.factor << ")";
  if (c.tie_word_embeddings) out << ", tied embeddings";
  if (c.byte_level) out << ", byte-level";
  return out.str();
}

}  // namespace xattn::model
