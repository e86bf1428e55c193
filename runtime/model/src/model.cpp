// The decoder forward pass; see xattn/model/model.h.
#include "xattn/model/model.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "xattn/device_memory.h"
#include "xattn/error.h"
#include "xattn/model/safetensors.h"
#include "xattn/model/linear.h"

namespace xattn::model {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

at::ScalarType stored_type(const std::string& dtype, const std::string& name) {
  if (dtype == "BF16") return at::kBFloat16;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "F32") return at::kFloat;
  throw Error(ErrorKind::kBadInput, detail::concat("tensor '", name, "' is stored as ", dtype,
                                                   "; the runner loads BF16, F16 or F32 weights"));
}

struct LayerTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::string why;  // what in config.json sets the shape
};

// The tensors of decoder layer i as the checkpoint stores them, with their expected shapes.
std::vector<LayerTensor> layer_tensors(const ModelConfig& c, int64_t i) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, d = c.head_dim;
  const int64_t q_out = c.num_heads * d, kv_out = c.num_kv_heads * d;
  const std::string p = detail::concat("model.layers.", i, ".");
  const std::string qwhy = "num_attention_heads * head_dim, hidden_size";
  const std::string kvwhy = "num_key_value_heads * head_dim, hidden_size";
  std::vector<LayerTensor> t = {
      {p + "input_layernorm.weight", {H}, "hidden_size"},
      {p + "post_attention_layernorm.weight", {H}, "hidden_size"}};
  if (c.fused_projections) {
    t.push_back({p + "self_attn.qkv_proj.weight", {q_out + 2 * kv_out, H},
                 "(num_attention_heads + 2 * num_key_value_heads) * head_dim, hidden_size"});
    t.push_back(
        {p + "mlp.gate_up_proj.weight", {2 * I, H}, "2 * intermediate_size, hidden_size"});
  } else {
    t.push_back({p + "self_attn.q_proj.weight", {q_out, H}, qwhy});
    t.push_back({p + "self_attn.k_proj.weight", {kv_out, H}, kvwhy});
    t.push_back({p + "self_attn.v_proj.weight", {kv_out, H}, kvwhy});
    t.push_back({p + "mlp.gate_proj.weight", {I, H}, "intermediate_size, hidden_size"});
    t.push_back({p + "mlp.up_proj.weight", {I, H}, "intermediate_size, hidden_size"});
  }
  t.push_back({p + "self_attn.o_proj.weight", {H, q_out},
               "hidden_size, num_attention_heads * head_dim"});
  if (c.qkv_bias) {
    t.push_back({p + "self_attn.q_proj.bias", {q_out}, "num_attention_heads * head_dim"});
    t.push_back({p + "self_attn.k_proj.bias", {kv_out}, "num_key_value_heads * head_dim"});
    t.push_back({p + "self_attn.v_proj.bias", {kv_out}, "num_key_value_heads * head_dim"});
  }
  if (c.o_bias) t.push_back({p + "self_attn.o_proj.bias", {H}, "hidden_size"});
  if (c.qk_norm) {
    t.push_back({p + "self_attn.q_norm.weight", {d}, "head_dim"});
    t.push_back({p + "self_attn.k_norm.weight", {d}, "head_dim"});
  }
  t.push_back({p + "mlp.down_proj.weight", {H, I}, "hidden_size, intermediate_size"});
  if (c.mlp_bias) {
    t.push_back({p + "mlp.gate_proj.bias", {I}, "intermediate_size"});
    t.push_back({p + "mlp.up_proj.bias", {I}, "intermediate_size"});
    t.push_back({p + "mlp.down_proj.bias", {H}, "hidden_size"});
  }
  return t;
}

int64_t bytes_of(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

}  // namespace

Model::Model(const std::string& dir, const LoadOptions& options)
    : dir_(dir), config_(load_model_config(dir)), device_(options.device) {
  auto ckpt = std::make_shared<const Checkpoint>(dir);
  const ModelConfig& c = config_;
  const std::string embed_name = "model.embed_tokens.weight";
  if (options.dtype) {
    dtype_ = *options.dtype;
  } else if (device_.is_cpu()) {
    dtype_ = at::kFloat;
  } else {
    dtype_ = stored_type(ckpt->info(embed_name).dtype, embed_name);
  }
  XATTN_CHECK_ARG(dtype_ == at::kFloat || dtype_ == at::kHalf || dtype_ == at::kBFloat16,
                  "model dtype must be float32, float16 or bfloat16");

  auto load = [&](const std::string& name, std::vector<int64_t> shape, const std::string& why) {
    const at::Tensor t = ckpt->load_checked(name, shape, why);
    stored_type(ckpt->info(name).dtype, name);
    return t.to(device_, dtype_);
  };
  const int64_t H = c.hidden_size;
  embed_tokens_ = load(embed_name, {c.vocab_size, H}, "vocab_size, hidden_size");
  final_norm_ = load("model.norm.weight", {H}, "hidden_size");
  if (c.tie_word_embeddings) {
    lm_head_ = embed_tokens_;
  } else {
    XATTN_CHECK_INPUT(ckpt->contains("lm_head.weight"), "checkpoint '", dir,
                      "' has no tensor 'lm_head.weight' and config.json does not set "
                      "tie_word_embeddings: true");
    lm_head_ = load("lm_head.weight", {c.vocab_size, H}, "vocab_size, hidden_size");
  }
  const std::string extra = detail::concat("model.layers.", c.num_layers, ".input_layernorm.weight");
  XATTN_CHECK_INPUT(!ckpt->contains(extra), "checkpoint '", dir, "' holds '", extra,
                    "', more layers than num_hidden_layers = ", c.num_layers, " in config.json");
  if (options.stream_layers) {
    // Every layer's tensors are checked now (presence, shape, dtype) so a bad checkpoint fails
    // before any compute, but only read when the layer runs.
    for (int64_t i = 0; i < c.num_layers; ++i) {
      int64_t parameters = 0;
      for (const auto& t : layer_tensors(c, i)) {
        const TensorInfo& ti = ckpt->check_shape(t.name, t.shape, t.why);
        stored_type(ti.dtype, t.name);
        int64_t n = 1;
        for (int64_t extent : t.shape) n *= extent;
        parameters += n;
      }
      layer_parameters_ += parameters;
      layer_bytes_ = std::max(layer_bytes_, parameters * int64_t(at::elementSize(dtype_)));
    }
    checkpoint_ = ckpt;
  } else {
    layers_.reserve(static_cast<size_t>(c.num_layers));
    for (int64_t i = 0; i < c.num_layers; ++i) {
      layers_.push_back(load_layer(*ckpt, i));
      const Layer& L = layers_.back();
      int64_t parameters = 0;
      for (const at::Tensor* t : {&L.input_norm, &L.post_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq,
                                  &L.bk, &L.bv, &L.bo, &L.q_norm, &L.k_norm, &L.w_gate, &L.w_up,
                                  &L.w_down, &L.b_gate, &L.b_up, &L.b_down})
        if (t->defined()) parameters += t->numel();
      layer_parameters_ += parameters;
      layer_bytes_ = std::max(layer_bytes_, parameters * int64_t(at::elementSize(dtype_)));
    }
    resident_layers_ = c.num_layers;
    peak_resident_layers_ = c.num_layers;
  }
  inv_freq_ = rope_inv_freq(c.rope, c.rotary_dim);
}

Model::Layer Model::load_layer(const Checkpoint& ckpt, int64_t i) const {
  const ModelConfig& c = config_;
  const int64_t I = c.intermediate_size, q_out = c.num_heads * c.head_dim,
                kv_out = c.num_kv_heads * c.head_dim;
  std::map<std::string, at::Tensor> loaded;
  for (const auto& t : layer_tensors(c, i)) {
    const at::Tensor w = ckpt.load_checked(t.name, t.shape, t.why);
    stored_type(ckpt.info(t.name).dtype, t.name);
    loaded[t.name] = w.to(device_, dtype_);
  }
  const std::string p = detail::concat("model.layers.", i, ".");
  auto get = [&](const std::string& suffix) {
    auto it = loaded.find(p + suffix);
    return it == loaded.end() ? at::Tensor() : it->second;
  };
  Layer L;
  L.input_norm = get("input_layernorm.weight");
  L.post_norm = get("post_attention_layernorm.weight");
  if (c.fused_projections) {
    // Phi-3: one [q; k; v] and one [gate; up] matrix, split into copies of the usual parts.
    const at::Tensor qkv = get("self_attn.qkv_proj.weight");
    L.wq = qkv.narrow(0, 0, q_out).contiguous();
    L.wk = qkv.narrow(0, q_out, kv_out).contiguous();
    L.wv = qkv.narrow(0, q_out + kv_out, kv_out).contiguous();
    const at::Tensor gate_up = get("mlp.gate_up_proj.weight");
    L.w_gate = gate_up.narrow(0, 0, I).contiguous();
    L.w_up = gate_up.narrow(0, I, I).contiguous();
  } else {
    L.wq = get("self_attn.q_proj.weight");
    L.wk = get("self_attn.k_proj.weight");
    L.wv = get("self_attn.v_proj.weight");
    L.w_gate = get("mlp.gate_proj.weight");
    L.w_up = get("mlp.up_proj.weight");
  }
  L.wo = get("self_attn.o_proj.weight");
  L.bq = get("self_attn.q_proj.bias");
  L.bk = get("self_attn.k_proj.bias");
  L.bv = get("self_attn.v_proj.bias");
  L.bo = get("self_attn.o_proj.bias");
  L.q_norm = get("self_attn.q_norm.weight");
  L.k_norm = get("self_attn.k_norm.weight");
  L.w_down = get("mlp.down_proj.weight");
  L.b_gate = get("mlp.gate_proj.bias");
  L.b_up = get("mlp.up_proj.bias");
  L.b_down = get("mlp.down_proj.bias");
  return L;
}

std::shared_ptr<const Model::Layer> Model::layer_weights(int index) const {
  if (!checkpoint_)  // in memory: a reference that owns nothing
    return std::shared_ptr<const Layer>(std::shared_ptr<const Layer>(), &layers_[size_t(index)]);
  auto layer = std::shared_ptr<const Layer>(new Layer(load_layer(*checkpoint_, index)),
                                            [this](const Layer* w) {
                                              delete w;
                                              --resident_layers_;
                                            });
  const int64_t now = ++resident_layers_;
  int64_t peak = peak_resident_layers_.load();
  while (now > peak && !peak_resident_layers_.compare_exchange_weak(peak, now)) {
  }
  current_layer_ = layer;
  current_index_ = index;
  return layer;
}

int64_t Model::parameter_count() const {
  int64_t n = embed_tokens_.numel() + final_norm_.numel();
  if (!config_.tie_word_embeddings) n += lm_head_.numel();
  return n + layer_parameters_;
}

int64_t Model::fixed_weight_bytes() const {
  int64_t n = bytes_of(embed_tokens_) + bytes_of(final_norm_);
  if (!config_.tie_word_embeddings) n += bytes_of(lm_head_);
  if (!checkpoint_) n += layer_parameters_ * int64_t(at::elementSize(dtype_));
  return n;
}

at::Tensor Model::embed(const std::vector<const std::vector<int64_t>*>& sequences) const {
  const bool batched = sequences.size() > 1;
  std::vector<int64_t> ids;
  for (size_t b = 0; b < sequences.size(); ++b) {
    const std::vector<int64_t>& tokens = *sequences[b];
    for (size_t i = 0; i < tokens.size(); ++i)
      XATTN_CHECK_INPUT(tokens[i] >= 0 && tokens[i] < config_.vocab_size,
                        batched ? detail::concat("sequence ", b, ", ") : std::string(), "token ",
                        i, " is ", tokens[i], ", outside the model's vocabulary [0, ",
                        config_.vocab_size, "): the input was made for another tokenizer");
    ids.insert(ids.end(), tokens.begin(), tokens.end());
  }
  const at::Tensor index = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).to(device_);
  return embed_tokens_.index_select(0, index)
      .view({int64_t(sequences.size()), int64_t(sequences.front()->size()), config_.hidden_size});
}

at::Tensor Model::logits_of(const at::Tensor& rows) const {
  const at::Tensor normed = rms_norm(rows, final_norm_, config_.rms_norm_eps);
  return fast::linear(normed, lm_head_).to(at::kFloat);
}

at::Tensor Model::output_projection(int layer) const {
  XATTN_CHECK_ARG(layer >= 0 && layer < config_.num_layers, "layer ", layer,
                  " out of range (the model has ", config_.num_layers, ")");
  if (!checkpoint_) return layers_[size_t(layer)].wo;
  if (current_index_.load() == layer)
    if (const std::shared_ptr<const Layer> resident = current_layer_.lock()) return resident->wo;
  const ModelConfig& c = config_;
  const std::string name = detail::concat("model.layers.", layer, ".self_attn.o_proj.weight");
  if (c.fused_projections || !checkpoint_->contains(name))
    return load_layer(*checkpoint_, layer).wo;
  return checkpoint_
      ->load_checked(name, {c.hidden_size, c.num_heads * c.head_dim},
                     "hidden_size, num_attention_heads * head_dim")
      .to(device_, dtype_);
}

at::Tensor Model::layer_forward(int index, const Layer& w, const at::Tensor& hidden,
                                const RotaryTables& rotary, AttentionBackend& backend,
                                KVCache* cache, int64_t token_chunk) const {
  const ModelConfig& c = config_;
  const int64_t batch = hidden.size(0), len = hidden.size(1), d = c.head_dim;
  const at::Tensor x = rms_norm(hidden, w.input_norm, c.rms_norm_eps);
  // [batch, len, heads * d] -> [batch, heads, len, d], with Qwen3's per-head RMSNorm first where
  // it has one.
  auto heads_first = [&](const at::Tensor& t, int64_t heads, const at::Tensor& norm) {
    at::Tensor per_head = t.view({batch, len, heads, d});
    if (norm.defined()) per_head = rms_norm(per_head, norm, c.rms_norm_eps);
    return per_head.transpose(1, 2);
  };
  const at::Tensor q =
      apply_rotary(heads_first(fast::linear(x, w.wq, w.bq), c.num_heads, w.q_norm), rotary)
          .contiguous();
  at::Tensor k =
      apply_rotary(heads_first(fast::linear(x, w.wk, w.bk), c.num_kv_heads, w.k_norm), rotary);
  at::Tensor v = heads_first(fast::linear(x, w.wv, w.bv), c.num_kv_heads, at::Tensor());
  if (cache) {
    XATTN_CHECK(batch == 1, ErrorKind::kInternal, "a KV cache holds one sequence, got ", batch);
    at::Tensor& ck = cache->k[static_cast<size_t>(index)];
    at::Tensor& cv = cache->v[static_cast<size_t>(index)];
    ck.narrow(2, cache->length, len).copy_(k);
    cv.narrow(2, cache->length, len).copy_(v);
    // Contiguous copies: backends and kernels get plain [1, heads, len, d] layouts.
    k = ck.narrow(2, 0, cache->length + len).contiguous();
    v = cv.narrow(2, 0, cache->length + len).contiguous();
  } else {
    k = k.contiguous();
    v = v.contiguous();
  }
  const int64_t window = c.layer_windows.empty() ? 0 : c.layer_windows[size_t(index)];
  const at::Tensor attn = window > 0 && window < k.size(2)
                              ? backend.attend_window(index, q, k, v, window)
                              : backend.attend(index, q, k, v);
  XATTN_CHECK(attn.sizes() == q.sizes(), ErrorKind::kInternal, "attention backend returned ",
              attn.sizes(), " for q ", q.sizes());
  const at::Tensor merged = attn.to(hidden.scalar_type())
                                .transpose(1, 2)
                                .reshape({batch * len, c.num_heads * d});
  // Token rows [batch * len, hidden]: everything after attention is per token.
  const at::Tensor h =
      hidden.reshape({batch * len, c.hidden_size}) + fast::linear(merged, w.wo, w.bo);

  // SwiGLU MLP in token chunks: the [chunk, intermediate] activations bound the memory.
  at::Tensor out = at::empty_like(h);
  const int64_t rows = batch * len;
  for (int64_t s = 0; s < rows; s += token_chunk) {
    const int64_t n = std::min(token_chunk, rows - s);
    const at::Tensor hs = h.narrow(0, s, n);
    const at::Tensor xs = rms_norm(hs, w.post_norm, c.rms_norm_eps);
    const at::Tensor act = at::silu(fast::linear(xs, w.w_gate, w.b_gate)) * fast::linear(xs, w.w_up, w.b_up);
    out.narrow(0, s, n).copy_(hs + fast::linear(act, w.w_down, w.b_down));
  }
  return out.view({batch, len, c.hidden_size});
}

std::vector<std::vector<size_t>> group_by_length(const std::vector<int64_t>& lengths,
                                                 int64_t max_batch) {
  XATTN_CHECK_ARG(max_batch >= 1, "the batch size must be at least 1, got ", max_batch);
  std::vector<std::vector<size_t>> groups;
  std::vector<int64_t> group_length;  // per group
  for (size_t i = 0; i < lengths.size(); ++i) {
    // The last open group of this length, if it has room.
    size_t g = groups.size();
    for (size_t j = groups.size(); j-- > 0;)
      if (group_length[j] == lengths[i]) {
        if (int64_t(groups[j].size()) < max_batch) g = j;
        break;
      }
    if (g == groups.size()) {
      groups.emplace_back();
      group_length.push_back(lengths[i]);
    }
    groups[g].push_back(i);
  }
  return groups;
}

void Model::check_windows(const AttentionBackend& backend, int64_t span) const {
  const ModelConfig& c = config_;
  for (size_t i = 0; i < c.layer_windows.size(); ++i) {
    const int64_t window = c.layer_windows[i];
    XATTN_CHECK_ARG(window == 0 || span <= window || backend.supports_sliding_window(),
                    "layer ", i, " of the model attends within sliding_window = ", window,
                    " (config.json) but the input spans ", span,
                    " tokens and this attention backend does not implement sliding windows; "
                    "run dense or XAttention, or at most ", window, " tokens");
  }
}

RotaryTables Model::rotary_for(int64_t start, int64_t len) const {
  const ModelConfig& c = config_;
  // Dynamic and longrope frequencies depend on the length so far, as transformers recomputes them.
  const bool length_dependent =
      c.rope.type == RopeType::kDynamic || c.rope.type == RopeType::kLongRope;
  const at::Tensor inv_freq =
      length_dependent ? rope_inv_freq(c.rope, c.rotary_dim, start + len) : inv_freq_;
  RotaryTables rotary = rotary_tables(inv_freq, start, len, rope_attention_scaling(c.rope));
  // Moved once here rather than per layer (the tables are float32 on the host).
  rotary.cos = rotary.cos.to(device_, dtype_);
  rotary.sin = rotary.sin.to(device_, dtype_);
  return rotary;
}

at::Tensor Model::run_layers(const std::vector<const std::vector<int64_t>*>& sequences,
                             AttentionBackend& backend, const ForwardOptions& options,
                             KVCache* cache, int64_t extra_capacity) const {
  const ModelConfig& c = config_;
  const int64_t batch = int64_t(sequences.size());
  const int64_t len = static_cast<int64_t>(sequences.front()->size());
  XATTN_CHECK_INPUT(len > 0, "the input has no tokens");
  XATTN_CHECK_ARG(options.token_chunk > 0, "token_chunk must be positive");
  const int64_t start = cache ? cache->length : 0;
  check_windows(backend, start + len);
  if (cache) {
    if (cache->capacity == 0) {
      cache->capacity = len + std::max<int64_t>(extra_capacity, 0);
      const auto opts = at::TensorOptions().dtype(dtype_).device(device_);
      cache->k.clear();
      cache->v.clear();
      for (int64_t i = 0; i < c.num_layers; ++i) {
        cache->k.push_back(at::zeros({1, c.num_kv_heads, cache->capacity, c.head_dim}, opts));
        cache->v.push_back(at::zeros({1, c.num_kv_heads, cache->capacity, c.head_dim}, opts));
      }
    }
    XATTN_CHECK_ARG(start + len <= cache->capacity, "KV cache full: ", start, " + ", len,
                    " tokens exceed its capacity ", cache->capacity);
  }
  const std::vector<int64_t> positions = options.logit_positions;
  for (int64_t p : positions)
    XATTN_CHECK_ARG(p >= 0 && p < len, "logit position ", p, " is outside the input [0, ", len,
                    ")");

  const RotaryTables rotary = rotary_for(start, len);
  XATTN_CHECK_ARG(options.start_layer >= 0 && options.start_layer < c.num_layers,
                  "start_layer ", options.start_layer, " is outside [0, ", c.num_layers, ")");
  XATTN_CHECK_ARG(options.start_layer == 0 || (options.start_hidden.defined() && !cache),
                  "start_layer > 0 needs start_hidden (and no KV cache)");
  XATTN_CHECK_ARG(!options.layer_inputs || !cache, "layer_inputs are recorded without a KV cache");
  at::Tensor h = options.start_layer > 0 ? options.start_hidden : embed(sequences);
  XATTN_CHECK_ARG(h.dim() == 3 && h.size(0) == batch && h.size(1) == len &&
                      h.size(2) == c.hidden_size,
                  "start_hidden ", h.sizes(), " does not fit ", batch, " x ", len, " tokens of ",
                  c.hidden_size, " hidden units");
  if (options.layer_inputs) options.layer_inputs->assign(size_t(c.num_layers), at::Tensor());
  for (int64_t i = options.start_layer; i < c.num_layers; ++i) {
    if (options.layer_inputs) (*options.layer_inputs)[size_t(i)] = h;
    const std::shared_ptr<const Layer> w = layer_weights(static_cast<int>(i));
    h = layer_forward(static_cast<int>(i), *w, h, rotary, backend, cache, options.token_chunk);
  }
  if (cache) cache->length += len;
  return h;
}

ForwardResult Model::outputs_of(const at::Tensor& h, const std::vector<int64_t>& tokens,
                                const ForwardOptions& options) const {
  const ModelConfig& c = config_;
  const int64_t len = h.size(0);
  std::vector<int64_t> positions = options.logit_positions;
  if (options.all_logits) {
    positions.resize(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) positions[static_cast<size_t>(i)] = i;
  } else if (positions.empty()) {
    positions.push_back(len - 1);
  }
  ForwardResult result;
  result.positions = positions;
  const at::Tensor index =
      at::tensor(positions, at::TensorOptions().dtype(at::kLong)).to(device_);
  result.logits = logits_of(h.index_select(0, index)).to(at::kCPU);
  if (options.nll && len > 1) {
    // Rows per chunk so that a chunk's float32 logits stay near 256 MiB.
    const int64_t rows =
        std::clamp<int64_t>((int64_t(64) << 20) / c.vocab_size, 1, options.token_chunk);
    const at::Tensor targets =
        at::tensor(tokens, at::TensorOptions().dtype(at::kLong)).to(device_);
    at::Tensor nll = at::empty({len - 1}, at::TensorOptions().dtype(at::kFloat).device(device_));
    for (int64_t s = 0; s < len - 1; s += rows) {
      const int64_t n = std::min(rows, len - 1 - s);
      const at::Tensor logp = at::log_softmax(logits_of(h.narrow(0, s, n)), -1);
      nll.narrow(0, s, n).copy_(
          logp.gather(1, targets.narrow(0, s + 1, n).unsqueeze(1)).squeeze(1).neg());
    }
    result.nll = nll.to(at::kCPU);
  }
  return result;
}

ForwardResult Model::forward(const std::vector<int64_t>& tokens, AttentionBackend& backend,
                             const ForwardOptions& options, KVCache* cache,
                             int64_t extra_capacity) const {
  const auto t0 = std::chrono::steady_clock::now();
  ForwardOptions batch_options = options;  // the batch-1 shapes [len, hidden] of the options
  std::vector<at::Tensor> layer_inputs;
  if (options.start_layer > 0 && options.start_hidden.defined())
    batch_options.start_hidden = options.start_hidden.unsqueeze(0);
  if (options.layer_inputs) batch_options.layer_inputs = &layer_inputs;
  const at::Tensor h = run_layers({&tokens}, backend, batch_options, cache, extra_capacity);
  if (options.layer_inputs) {
    options.layer_inputs->assign(layer_inputs.size(), at::Tensor());
    for (size_t i = 0; i < layer_inputs.size(); ++i)
      if (layer_inputs[i].defined()) (*options.layer_inputs)[i] = layer_inputs[i][0];
  }
  ForwardResult result = outputs_of(h[0], tokens, options);
  result.seconds = seconds_since(t0);
  return result;
}

std::vector<ForwardResult> Model::forward_batch(const std::vector<std::vector<int64_t>>& sequences,
                                                AttentionBackend& backend,
                                                const ForwardOptions& options) const {
  const auto t0 = std::chrono::steady_clock::now();
  XATTN_CHECK_ARG(!sequences.empty(), "forward_batch needs at least one sequence");
  std::vector<const std::vector<int64_t>*> batch;
  for (size_t b = 0; b < sequences.size(); ++b) {
    XATTN_CHECK_ARG(sequences[b].size() == sequences[0].size(), "forward_batch runs sequences "
                    "of one length, but sequence 0 has ", sequences[0].size(), " tokens and "
                    "sequence ", b, " has ", sequences[b].size(), "; group them with "
                    "group_by_length, or run forward() per sequence");
    batch.push_back(&sequences[b]);
  }
  const at::Tensor h = run_layers(batch, backend, options, nullptr, 0);
  std::vector<ForwardResult> results;
  for (size_t b = 0; b < sequences.size(); ++b)
    results.push_back(outputs_of(h[int64_t(b)], sequences[b], options));
  const double seconds = seconds_since(t0);
  for (auto& r : results) r.seconds = seconds;
  return results;
}

SweepReport Model::sweep_layers(const std::vector<std::vector<int64_t>>& sequences,
                                const std::vector<std::vector<size_t>>& groups,
                                AttentionBackend& backend, const SweepOptions& options,
                                const std::function<void(int, size_t)>& before_group) const {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& c = config_;
  XATTN_CHECK_ARG(!sequences.empty(), "sweep_layers needs at least one sequence");
  XATTN_CHECK_ARG(options.token_chunk > 0, "token_chunk must be positive");
  XATTN_CHECK_ARG(options.end_layer >= -1 && options.end_layer <= c.num_layers, "end_layer ",
                  options.end_layer, " is outside [0, ", c.num_layers, "] (-1: every layer)");
  const int64_t end_layer = options.end_layer < 0 ? c.num_layers : options.end_layer;
  std::vector<int> seen(sequences.size(), 0);
  int64_t longest = 0, tokens = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    XATTN_CHECK_ARG(!groups[g].empty(), "group ", g, " of sweep_layers is empty");
    for (size_t i : groups[g]) {
      XATTN_CHECK_ARG(i < sequences.size(), "group ", g, " names sequence ", i, " but there are ",
                      sequences.size(), " sequences");
      XATTN_CHECK_ARG(seen[i]++ == 0, "sequence ", i, " is in more than one group; make the "
                      "groups with group_by_length");
      XATTN_CHECK_ARG(sequences[i].size() == sequences[groups[g][0]].size(), "group ", g,
                      " mixes lengths: sequence ", groups[g][0], " has ",
                      sequences[groups[g][0]].size(), " tokens and sequence ", i, " has ",
                      sequences[i].size(), "; make the groups with group_by_length");
    }
  }
  for (size_t i = 0; i < sequences.size(); ++i) {
    XATTN_CHECK_ARG(seen[i] == 1, "sequence ", i, " is in no group: every sequence must be in "
                    "one (group_by_length makes such groups)");
    XATTN_CHECK_INPUT(!sequences[i].empty(), "sequence ", i, " has no tokens");
    longest = std::max(longest, int64_t(sequences[i].size()));
    tokens += int64_t(sequences[i].size());
  }
  check_windows(backend, longest);

  SweepReport report;
  report.hidden_bytes = tokens * c.hidden_size * int64_t(at::elementSize(dtype_));
  report.fixed_weight_bytes = fixed_weight_bytes();
  report.layer_weight_bytes = layer_bytes_;
  auto gib = [](int64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f GiB", double(bytes) / double(int64_t(1) << 30));
    return std::string(text);
  };
  if (device_.is_cpu()) {
    report.placement_reason = "the device is the host";
  } else if (options.hidden == HiddenPlacement::kDevice) {
    report.placement_reason = "kept on the device as asked";
  } else if (options.hidden == HiddenPlacement::kHost) {
    report.hidden_on_host = true;
    report.placement_reason = "kept in pinned host memory as asked";
  } else {
    const runtime::DeviceMemory m = runtime::device_memory(device_);
    if (!m.available) {
      report.placement_reason = "the device reports no free memory; kept on it";
    } else {
      // Half of what is free once one layer's weights are loaded: the rest is for the layer's
      // q, k, v, attention and MLP workspaces.
      const int64_t budget = std::max<int64_t>(0, m.free - (checkpoint_ ? layer_bytes_ : 0)) / 2;
      report.hidden_on_host = report.hidden_bytes > budget;
      report.placement_reason =
          detail::concat("hidden states ", gib(report.hidden_bytes),
                         report.hidden_on_host ? " exceed " : " fit in ",
                         "half of the device's free memory after one layer's weights (",
                         gib(budget), ")", report.hidden_on_host ? ": in pinned host memory"
                                                                  : ": on the device");
    }
  }

  std::vector<at::Tensor> hidden(groups.size());
  std::map<int64_t, RotaryTables> rotary;
  for (size_t g = 0; g < groups.size(); ++g) {
    std::vector<const std::vector<int64_t>*> members;
    for (size_t i : groups[g]) members.push_back(&sequences[i]);
    const at::Tensor h = embed(members);
    if (report.hidden_on_host) {
      hidden[g] = at::empty(h.sizes(), at::TensorOptions().dtype(dtype_).pinned_memory(true));
      hidden[g].copy_(h);
    } else {
      hidden[g] = h;
    }
    const int64_t len = h.size(1);
    if (!rotary.count(len)) rotary.emplace(len, rotary_for(0, len));
  }
  for (int64_t layer = 0; layer < end_layer; ++layer) {
    const std::shared_ptr<const Layer> w = layer_weights(static_cast<int>(layer));
    for (size_t g = 0; g < groups.size(); ++g) {
      if (before_group) before_group(static_cast<int>(layer), g);
      const at::Tensor h = report.hidden_on_host ? hidden[g].to(device_) : hidden[g];
      const at::Tensor out = layer_forward(static_cast<int>(layer), *w, h, rotary.at(h.size(1)),
                                           backend, nullptr, options.token_chunk);
      if (report.hidden_on_host)
        hidden[g].copy_(out);
      else
        hidden[g] = out;
    }
  }
  report.peak_resident_layers = peak_resident_layers();
  report.seconds = seconds_since(t0);
  return report;
}

at::Tensor Model::decode_step(int64_t token, KVCache& cache) const {
  XATTN_CHECK_ARG(cache.capacity > 0, "decode_step needs a KV cache filled by a prefill");
  DenseBackend dense;
  return forward({token}, dense, {}, &cache).logits[0];
}

GenerateResult Model::generate(const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                               AttentionBackend& backend, const GenerateOptions& options) const {
  XATTN_CHECK_ARG(max_new_tokens >= 1, "max_new_tokens must be at least 1");
  GenerateResult result;
  KVCache cache;
  const auto t0 = std::chrono::steady_clock::now();
  const ForwardResult first = forward(prompt, backend, {}, &cache, max_new_tokens);
  int64_t next = first.logits[0].argmax().item<int64_t>();
  result.time_to_first_token = seconds_since(t0);
  result.tokens.push_back(next);
  const auto t1 = std::chrono::steady_clock::now();
  while (static_cast<int64_t>(result.tokens.size()) < max_new_tokens &&
         !(options.stop_token && next == *options.stop_token)) {
    next = decode_step(next, cache).argmax().item<int64_t>();
    result.tokens.push_back(next);
  }
  result.decode_seconds = seconds_since(t1);
  return result;
}

}  // namespace xattn::model
