// config.json parsing; see xattn/model/config.h.
#include "xattn/model/config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "xattn/error.h"
#include "xattn/io/paths.h"

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
    XATTN_CHECK_INPUT(obj[key].is_number(), where(key), " must be a number, got ", obj[key].dump());
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

struct KnownArchitecture {
  const char* class_name;
  const char* model_type;
  Architecture architecture;
};

constexpr KnownArchitecture kArchitectures[] = {
    {"LlamaForCausalLM", "llama", Architecture::kLlama},
    {"MistralForCausalLM", "mistral", Architecture::kMistral},
    {"Qwen2ForCausalLM", "qwen2", Architecture::kQwen2},
    {"Qwen3ForCausalLM", "qwen3", Architecture::kQwen3},
    {"Phi3ForCausalLM", "phi3", Architecture::kPhi3},
};

Architecture parse_architecture(const json& j, const std::string& source) {
  std::string name, key;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    name = j["architectures"][0].get<std::string>();
    key = "architectures";
    for (const auto& a : kArchitectures)
      if (name == a.class_name) return a.architecture;
  } else if (j.contains("model_type") && j["model_type"].is_string()) {
    name = j["model_type"].get<std::string>();
    key = "model_type";
    for (const auto& a : kArchitectures)
      if (name == a.model_type) return a.architecture;
  } else {
    throw Error(ErrorKind::kBadInput,
                detail::concat(source, ": neither 'architectures' nor 'model_type' is set"));
  }
  throw Error(ErrorKind::kBadInput,
              detail::concat(source, ": unsupported architecture '", name, "' (key '", key,
                             "'); supported: LlamaForCausalLM, MistralForCausalLM, "
                             "Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM"));
}

// The rope parameters object: "rope_parameters" (transformers 5) or "rope_scaling" (4), with its
// key; null when neither is set.
const json* rope_parameters(const Reader& r, std::string* key) {
  for (const char* k : {"rope_parameters", "rope_scaling"}) {
    if (!r.has(k)) continue;
    XATTN_CHECK_INPUT(r.j[k].is_object(), r.where(k), " must be an object");
    *key = k;
    return &r.j[k];
  }
  return nullptr;
}

std::vector<double> number_list(const Reader& r, const json& params, const std::string& key,
                                const std::string& where) {
  XATTN_CHECK_INPUT(params.contains(key) && params[key].is_array(), r.where(where),
                    " of rope_type longrope needs the list '", key, "'");
  std::vector<double> out;
  for (const json& v : params[key]) {
    XATTN_CHECK_INPUT(v.is_number() && v.get<double>() > 0, r.where(where + "." + key),
                      " must hold positive numbers, got ", v.dump());
    out.push_back(v.get<double>());
  }
  return out;
}

// yarn's attention factor from its scale: 1 for scale <= 1, else 0.1 * mscale * ln(scale) + 1.
double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

RopeConfig parse_rope(const Reader& r, int64_t max_position_embeddings) {
  RopeConfig rope;
  const json& j = r.j;
  std::string params_key;
  const json* params = rope_parameters(r, &params_key);
  rope.theta = r.number_or(j, "rope_theta", 10000.0);
  if (params) rope.theta = r.number_or(*params, "rope_theta", rope.theta);
  XATTN_CHECK_INPUT(rope.theta > 1.0, r.where("rope_theta"), " must be > 1, got ", rope.theta);
  if (!params) return rope;

  std::string type = "default";
  for (const char* key : {"rope_type", "type"})
    if (params->contains(key) && (*params)[key].is_string())
      type = (*params)[key].get<std::string>();
  const std::string key = params_key + ".rope_type";
  auto require = [&](std::initializer_list<const char*> keys) {
    for (const char* k : keys)
      XATTN_CHECK_INPUT(params->contains(k) && !(*params)[k].is_null(), r.where(params_key),
                        " of rope_type ", type, " lacks '", k, "'");
  };
  // The pretrained context: in the rope parameters, else at the top level (Phi-3), else
  // max_position_embeddings.
  auto original_context = [&]() {
    int64_t n =
        r.integer_in(*params, "original_max_position_embeddings",
                     r.integer_or("original_max_position_embeddings", max_position_embeddings));
    XATTN_CHECK_INPUT(n > 0, r.where(params_key + ".original_max_position_embeddings"),
                      " must be positive (or max_position_embeddings set), got ", n);
    return n;
  };
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear") {
    rope.type = RopeType::kLinear;
    rope.factor = r.number_or(*params, "factor", 1.0);
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    require({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"});
    rope.factor = r.number_or(*params, "factor", 8.0);
    rope.low_freq_factor = r.number_or(*params, "low_freq_factor", 1.0);
    rope.high_freq_factor = r.number_or(*params, "high_freq_factor", 4.0);
    rope.original_max_position_embeddings = original_context();
    XATTN_CHECK_INPUT(rope.high_freq_factor > rope.low_freq_factor, r.where(params_key),
                      ": high_freq_factor must exceed low_freq_factor");
  } else if (type == "dynamic") {
    rope.type = RopeType::kDynamic;
    require({"factor"});
    rope.factor = r.number_or(*params, "factor", 1.0);
    rope.max_position_embeddings = max_position_embeddings;
    XATTN_CHECK_INPUT(max_position_embeddings > 0, r.where("max_position_embeddings"),
                      " must be set for rope_type dynamic");
  } else if (type == "yarn") {
    rope.type = RopeType::kYarn;
    rope.original_max_position_embeddings = original_context();
    const bool has_factor = params->contains("factor") && !(*params)["factor"].is_null();
    XATTN_CHECK_INPUT(has_factor || max_position_embeddings > 0, r.where(params_key),
                      " of rope_type yarn lacks 'factor'");
    rope.factor = has_factor ? r.number_or(*params, "factor", 1.0)
                             : double(max_position_embeddings) /
                                   double(rope.original_max_position_embeddings);
    rope.beta_fast = r.number_or(*params, "beta_fast", 32.0);
    rope.beta_slow = r.number_or(*params, "beta_slow", 1.0);
    if (params->contains("truncate") && !(*params)["truncate"].is_null()) {
      XATTN_CHECK_INPUT((*params)["truncate"].is_boolean(), r.where(params_key + ".truncate"),
                        " must be true or false");
      rope.truncate = (*params)["truncate"].get<bool>();
    }
    const double mscale = r.number_or(*params, "mscale", 0.0);
    const double mscale_all_dim = r.number_or(*params, "mscale_all_dim", 0.0);
    if (params->contains("attention_factor") && !(*params)["attention_factor"].is_null())
      rope.attention_factor = r.number_or(*params, "attention_factor", 1.0);
    else if (mscale != 0.0 && mscale_all_dim != 0.0)
      rope.attention_factor =
          yarn_mscale(rope.factor, mscale) / yarn_mscale(rope.factor, mscale_all_dim);
    else
      rope.attention_factor = yarn_mscale(rope.factor, 1.0);
  } else if (type == "longrope") {
    rope.type = RopeType::kLongRope;
    rope.original_max_position_embeddings = original_context();
    rope.short_factor = number_list(r, *params, "short_factor", params_key);
    rope.long_factor = number_list(r, *params, "long_factor", params_key);
    const bool has_factor = params->contains("factor") && !(*params)["factor"].is_null();
    rope.factor = has_factor ? r.number_or(*params, "factor", 1.0)
                             : double(std::max<int64_t>(max_position_embeddings, 1)) /
                                   double(rope.original_max_position_embeddings);
    if (params->contains("attention_factor") && !(*params)["attention_factor"].is_null())
      rope.attention_factor = r.number_or(*params, "attention_factor", 1.0);
    else
      rope.attention_factor =
          rope.factor <= 1.0
              ? 1.0
              : std::sqrt(1.0 + std::log(rope.factor) /
                                    std::log(double(rope.original_max_position_embeddings)));
  } else {
    throw Error(ErrorKind::kBadInput,
                detail::concat(r.where(key), ": unsupported rope type '", type,
                               "'; supported: default, linear, llama3, dynamic, yarn, longrope"));
  }
  XATTN_CHECK_INPUT(rope.factor > 0, r.where(params_key + ".factor"), " must be positive");
  XATTN_CHECK_INPUT(rope.attention_factor > 0 && std::isfinite(rope.attention_factor),
                    r.where(params_key + ".attention_factor"),
                    " must be a positive finite number (given, or derived from factor and the "
                    "original context), got ",
                    rope.attention_factor);
  return rope;
}

// partial_rotary_factor, at the top level or among the rope parameters; 1 when absent.
double partial_rotary_factor(const Reader& r) {
  std::string key;
  const json* params = rope_parameters(r, &key);
  double f = r.number_or(r.j, "partial_rotary_factor", 1.0);
  if (params) f = r.number_or(*params, "partial_rotary_factor", f);
  XATTN_CHECK_INPUT(f > 0 && f <= 1, r.where("partial_rotary_factor"), " must lie in (0, 1], got ",
                    f);
  return f;
}

// Each layer's sliding window (0: none). "layer_types" decides where given; otherwise Mistral and
// Phi-3 use "sliding_window" on every layer, Qwen2/Qwen3 only with use_sliding_window and from
// layer max_window_layers on.
void parse_sliding_windows(const Reader& r, ModelConfig& c) {
  const json& j = r.j;
  std::optional<int64_t> window;
  if (r.has("sliding_window")) {
    window = r.integer("sliding_window");
    XATTN_CHECK_INPUT(*window > 0, r.where("sliding_window"), " must be positive, got ", *window);
  }
  // One entry per layer: bounded first, as a config.json can come from anywhere.
  constexpr int64_t kMaxLayers = int64_t(1) << 16;
  XATTN_CHECK_INPUT(c.num_layers <= kMaxLayers, r.where("num_hidden_layers"), " = ", c.num_layers,
                    " exceeds the runner's limit of ", kMaxLayers, " layers");
  c.layer_windows.assign(size_t(c.num_layers), 0);
  const bool qwen =
      c.architecture == Architecture::kQwen2 || c.architecture == Architecture::kQwen3;
  if (r.has("layer_types")) {
    const json& types = j["layer_types"];
    XATTN_CHECK_INPUT(types.is_array() && int64_t(types.size()) == c.num_layers,
                      r.where("layer_types"), " must list one type per layer (", c.num_layers,
                      "), got ", types.dump());
    for (size_t i = 0; i < types.size(); ++i) {
      const std::string t = types[i].is_string() ? types[i].get<std::string>() : types[i].dump();
      if (t == "full_attention") continue;
      XATTN_CHECK_INPUT(t == "sliding_attention", r.where("layer_types"), "[", i,
                        "]: unsupported layer type '", t,
                        "'; supported: full_attention, sliding_attention");
      XATTN_CHECK_INPUT(window.has_value(), r.where("layer_types"), "[", i,
                        "] is sliding_attention but 'sliding_window' is not set");
      c.layer_windows[i] = *window;
    }
  } else if (qwen) {
    if (r.boolean_or("use_sliding_window", false) && window) {
      const int64_t first = r.integer_or("max_window_layers", 0);
      for (int64_t i = std::max<int64_t>(first, 0); i < c.num_layers; ++i)
        c.layer_windows[size_t(i)] = *window;
    }
  } else if (window &&
             (c.architecture == Architecture::kMistral || c.architecture == Architecture::kPhi3)) {
    c.layer_windows.assign(size_t(c.num_layers), *window);
  }
  for (int64_t w : c.layer_windows)
    if (w > 0) c.sliding_window = w;
}

}  // namespace

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kMistral:
      return "MistralForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kQwen3:
      return "Qwen3ForCausalLM";
    case Architecture::kPhi3:
      return "Phi3ForCausalLM";
  }
  return "unknown";
}

const char* model_type_name(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kMistral:
      return "mistral";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kQwen3:
      return "qwen3";
    case Architecture::kPhi3:
      return "phi3";
  }
  return "unknown";
}

const char* rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::kDefault:
      return "default";
    case RopeType::kLinear:
      return "linear";
    case RopeType::kLlama3:
      return "llama3";
    case RopeType::kDynamic:
      return "dynamic";
    case RopeType::kYarn:
      return "yarn";
    case RopeType::kLongRope:
      return "longrope";
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
  c.tie_word_embeddings = r.boolean_or("tie_word_embeddings", false);
  c.max_position_embeddings = r.integer_or("max_position_embeddings", 0);
  XATTN_CHECK_INPUT(c.max_position_embeddings >= 0, r.where("max_position_embeddings"),
                    " must be >= 0, got ", c.max_position_embeddings);
  c.rope = parse_rope(r, c.max_position_embeddings);
  const double partial = partial_rotary_factor(r);
  XATTN_CHECK_INPUT(partial == 1.0 || c.architecture == Architecture::kPhi3,
                    r.where("partial_rotary_factor"), " = ", partial, " is supported for ",
                    "Phi3ForCausalLM only (", architecture_name(c.architecture),
                    " rotates whole heads)");
  c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * partial);
  XATTN_CHECK_INPUT(c.rotary_dim > 0 && c.rotary_dim % 2 == 0, r.where("partial_rotary_factor"),
                    ": head_dim ", c.head_dim, " x ", partial, " must give a positive even ",
                    "number of rotated dimensions, got ", c.rotary_dim);
  if (c.rope.type == RopeType::kLongRope)
    for (const auto* list : {&c.rope.short_factor, &c.rope.long_factor})
      XATTN_CHECK_INPUT(int64_t(list->size()) == c.rotary_dim / 2, r.where("rope_parameters"),
                        ": longrope short_factor and long_factor need rotary_dim / 2 = ",
                        c.rotary_dim / 2, " entries, got ", list->size());
  const std::string act = r.string_or("hidden_act", "silu");
  XATTN_CHECK_INPUT(act == "silu", r.where("hidden_act"), ": unsupported activation '", act,
                    "' (the runner implements the SwiGLU MLP with silu)");
  switch (c.architecture) {
    case Architecture::kLlama:
      c.qkv_bias = c.o_bias = r.boolean_or("attention_bias", false);
      c.mlp_bias = r.boolean_or("mlp_bias", false);
      break;
    case Architecture::kMistral:
      break;
    case Architecture::kQwen2:
      c.qkv_bias = true;
      break;
    case Architecture::kQwen3:
      c.qkv_bias = c.o_bias = r.boolean_or("attention_bias", false);
      c.qk_norm = true;
      break;
    case Architecture::kPhi3:
      c.fused_projections = true;
      break;
  }
  parse_sliding_windows(r, c);
  c.torch_dtype = r.string_or("torch_dtype", r.string_or("dtype", ""));
  c.byte_level = r.boolean_or("xattn_byte_level", false);
  c.bos_token_id = r.token_id("bos_token_id");
  c.eos_token_id = r.token_id("eos_token_id");
  for (const auto& [key, id] : {std::make_pair("bos_token_id", c.bos_token_id),
                                std::make_pair("eos_token_id", c.eos_token_id)})
    XATTN_CHECK_INPUT(!id || (*id >= 0 && *id < c.vocab_size), r.where(key), ": token id ", *id,
                      " is outside the vocabulary [0, ", c.vocab_size, ")");
  if (c.byte_level) {
    XATTN_CHECK_INPUT(c.vocab_size >= 258, source,
                      ": a byte-level model (xattn_byte_level) needs "
                      "vocab_size >= 258 (256 bytes, <bos>, <eos>), got ",
                      c.vocab_size);
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

int64_t shortest_sliding_window(const ModelConfig& c) {
  int64_t shortest = 0;
  for (int64_t w : c.layer_windows)
    if (w > 0 && (shortest == 0 || w < shortest)) shortest = w;
  return shortest;
}

std::string describe(const ModelConfig& c) {
  std::ostringstream out;
  out << architecture_name(c.architecture) << ": " << c.num_layers << " layers, hidden "
      << c.hidden_size << ", " << c.num_heads << " query heads / " << c.num_kv_heads
      << " kv heads of dim " << c.head_dim << ", mlp " << c.intermediate_size << ", vocab "
      << c.vocab_size << ", rope theta " << c.rope.theta;
  if (c.rope.type != RopeType::kDefault)
    out << " (" << rope_type_name(c.rope.type) << " x" << c.rope.factor << ")";
  if (c.rotary_dim != c.head_dim) out << ", rotary dim " << c.rotary_dim;
  if (c.qk_norm) out << ", q/k norm";
  if (c.sliding_window) {
    int64_t n = 0;
    for (int64_t w : c.layer_windows) n += w > 0;
    out << ", sliding window " << *c.sliding_window << " on " << n << " of " << c.num_layers
        << " layers";
  }
  if (c.tie_word_embeddings) out << ", tied embeddings";
  if (c.byte_level) out << ", byte-level";
  return out.str();
}

}  // namespace xattn::model
