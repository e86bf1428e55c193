// A Llama-family decoder (Llama incl. Llama 3 rope scaling, Mistral, Qwen2, Qwen3, Phi-3) loaded
// from a Hugging Face checkpoint folder, run layer by layer with a pluggable attention backend.
// Sliding-window layers call the backend's attend_window; backends without it (XAttention) are
// refused before any compute when a window is shorter than the input.
//
// Memory stays bounded for long inputs: the hidden state [len, hidden] flows through one layer at
// a time, the MLP runs in token chunks, and logits are computed only where asked (the last position
// by default; every position for the per-token loss, in chunks, without keeping them).
//
// forward() runs one sequence; forward_batch() runs several sequences of one length in one pass
// (hidden [batch, len, hidden], the backend sees q [batch, heads_q, len, head_dim]), which is what
// keeps a GPU busy on short samples. Sequences of different lengths are not packed: group them
// by length (group_by_length) and run each group.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "xattn/model/attention.h"
#include "xattn/model/config.h"
#include "xattn/model/layers.h"

namespace xattn::model {

struct LoadOptions {
  at::Device device = at::kCPU;
  // Weight and compute dtype. Default: float32 on CPU; on CUDA the dtype the weights are stored in.
  std::optional<at::ScalarType> dtype;
};

struct ForwardOptions {
  // Positions whose logits are returned; empty means the last position only.
  std::vector<int64_t> logit_positions;
  // Logits at every position (memory len x vocab x 4 bytes: for small vocabularies).
  bool all_logits = false;
  // Per-token negative log-likelihood of tokens[1..] given their prefixes, in nats.
  bool nll = false;
  // Token rows per MLP / lm_head chunk (bounds intermediate memory).
  int64_t token_chunk = 4096;
  // Resume at a layer from its input hidden state [len, hidden] (forward_batch: [batch, len,
  // hidden]), recorded by an earlier pass through layer_inputs; the layers before it are skipped.
  // Not with a KV cache.
  int64_t start_layer = 0;
  at::Tensor start_hidden;
  // When set, receives every layer's input hidden state (what start_hidden takes, in the same
  // shape).
  std::vector<at::Tensor>* layer_inputs = nullptr;
};

struct ForwardResult {
  std::vector<int64_t> positions;  // rows of `logits`
  at::Tensor logits;               // [positions.size(), vocab] float32, CPU
  at::Tensor nll;                  // [len - 1] float32, CPU, when asked
  double seconds = 0.0;            // wall time of the forward pass (forward_batch: the batch's)
};

// Indices of `lengths` in groups of equal length and at most max_batch members (max_batch >= 1),
// in order of first appearance; within a group the indices ascend. What forward_batch takes.
std::vector<std::vector<size_t>> group_by_length(const std::vector<int64_t>& lengths,
                                                 int64_t max_batch);

// Post-RoPE keys and values of every layer, [1, heads_kv, capacity, head_dim] each.
struct KVCache {
  std::vector<at::Tensor> k;
  std::vector<at::Tensor> v;
  int64_t length = 0;
  int64_t capacity = 0;
};

struct GenerateOptions {
  std::optional<int64_t> stop_token;  // generation ends after emitting it
};

struct GenerateResult {
  std::vector<int64_t> tokens;        // the generated tokens (greedy)
  double time_to_first_token = 0.0;   // seconds: prefill + the first token's choice
  double decode_seconds = 0.0;        // the remaining tokens
};

class Model {
 public:
  // Reads DIR/config.json and the safetensors weights; validates every tensor's presence and shape.
  explicit Model(const std::string& dir, const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  int64_t parameter_count() const;
  // The o_proj weight of a layer, [hidden, heads_q * head_dim] (what calibration projects errors
  // through).
  const at::Tensor& output_projection(int layer) const;

  // Prefill of `tokens` (ids in [0, vocab)). With a cache, the keys and values are stored in it
  // (it is allocated for tokens.size() + extra_capacity positions) for decode_step.
  ForwardResult forward(const std::vector<int64_t>& tokens, AttentionBackend& backend,
                        const ForwardOptions& options = {}, KVCache* cache = nullptr,
                        int64_t extra_capacity = 0) const;

  // Several sequences of one length (each as forward() takes it) in one pass: one ForwardResult
  // per sequence, equal to forward() on that sequence up to float rounding (products over more
  // rows may round differently). Every backend receives the whole batch; the options apply to
  // each sequence (logit_positions, nll, ...), start_hidden and layer_inputs are [batch, len,
  // hidden]. No KV cache. Sequences of different lengths are refused: run group_by_length first.
  std::vector<ForwardResult> forward_batch(const std::vector<std::vector<int64_t>>& sequences,
                                           AttentionBackend& backend,
                                           const ForwardOptions& options = {}) const;

  // One token appended at position cache.length, dense attention over the cache: logits [vocab]
  // float32 CPU.
  at::Tensor decode_step(int64_t token, KVCache& cache) const;

  // Prefill with `backend`, then greedy decoding of up to max_new_tokens with dense attention.
  GenerateResult generate(const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                          AttentionBackend& backend, const GenerateOptions& options = {}) const;

 private:
  struct Layer {
    at::Tensor input_norm, post_norm;
    at::Tensor wq, wk, wv, wo, bq, bk, bv, bo;
    at::Tensor q_norm, k_norm;  // Qwen3 [head_dim]
    at::Tensor w_gate, w_up, w_down, b_gate, b_up, b_down;
  };

  // One decoder layer on hidden [batch, len, hidden] at positions start .. start + len - 1
  // (batch 1 with a KV cache).
  at::Tensor layer_forward(int index, const at::Tensor& hidden, const RotaryTables& rotary,
                           AttentionBackend& backend, KVCache* cache, int64_t token_chunk) const;
  // Every layer on sequences of one length: the final hidden state [batch, len, hidden].
  at::Tensor run_layers(const std::vector<const std::vector<int64_t>*>& sequences,
                        AttentionBackend& backend, const ForwardOptions& options, KVCache* cache,
                        int64_t extra_capacity) const;
  // Logits and NLL of one sequence from its final hidden state [len, hidden].
  ForwardResult outputs_of(const at::Tensor& hidden, const std::vector<int64_t>& tokens,
                           const ForwardOptions& options) const;
  at::Tensor embed(const std::vector<const std::vector<int64_t>*>& sequences) const;
  at::Tensor logits_of(const at::Tensor& normed_rows) const;  // [n, vocab] float32

  std::string dir_;
  ModelConfig config_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor embed_tokens_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  at::Tensor inv_freq_;
};

}  // namespace xattn::model
