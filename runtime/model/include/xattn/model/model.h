// A Llama-family decoder (Llama incl. Llama 3 rope scaling, Mistral, Qwen2, Qwen3, Phi-3) loaded
// from a Hugging Face checkpoint folder, run layer by layer with a pluggable attention backend.
// Sliding-window layers call the backend's attend_window (dense and XAttention implement it);
// backends without it are refused before any compute when a window is shorter than the input.
//
// Memory stays bounded for long inputs: the hidden state [len, hidden] flows through one layer at
// a time, the MLP runs in token chunks, and logits are computed only where asked (the last position
// by default; every position for the per-token loss, in chunks, without keeping them).
//
// forward() runs one sequence; forward_batch() runs several sequences of one length in one pass
// (hidden [batch, len, hidden], the backend sees q [batch, heads_q, len, head_dim]), which is what
// keeps a GPU busy on short samples. Sequences of different lengths are not packed: group them
// by length (group_by_length) and run each group.
//
// Layer streaming (LoadOptions::stream_layers): only the embeddings, the final norm and the LM
// head are loaded; each layer's weights are read from the memory-mapped safetensors onto the
// device when the layer runs and freed after it, so one layer's weights are resident at a time
// (resident_layers / peak_resident_layers count them). forward() and forward_batch() then read
// every layer once per call; sweep_layers() runs many sequences through each layer in turn, so
// each layer is read once for all of them (what the statistics pass of calibration uses). Results
// are bit-identical to the in-memory model: the same weights, the same operations per batch.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "xattn/model/attention.h"
#include "xattn/model/config.h"
#include "xattn/model/layers.h"
#include "xattn/model/safetensors.h"

namespace xattn::model {

struct LoadOptions {
  at::Device device = at::kCPU;
  // Weight and compute dtype. Default: float32 on CPU; on CUDA the dtype the weights are stored in.
  std::optional<at::ScalarType> dtype;
  // Keep the checkpoint mapped and load each layer's weights only while it runs (see above).
  bool stream_layers = false;
};

// Where sweep_layers keeps the hidden states of all sequences between layers.
enum class HiddenPlacement {
  kAuto,    // on the device when they take at most half of its free memory, else on the host
  kDevice,  // with the weights
  kHost,    // host memory (pinned when the device is CUDA); each batch moves in and out per layer
};

struct SweepOptions {
  int64_t token_chunk = 4096;  // as ForwardOptions::token_chunk
  HiddenPlacement hidden = HiddenPlacement::kAuto;
  // Run layers [0, end_layer) only (-1: every layer): a pass that needs the attention inputs of
  // the first layers alone (one shard of a sharded statistics pass) stops there, and a streamed
  // model never reads the later layers' weights.
  int64_t end_layer = -1;
};

// What a sweep held. Bytes are of the tensors the runner keeps; on the device the attention and
// MLP workspaces come on top (peak_device_bytes, where the device reports it, includes them).
struct SweepReport {
  bool hidden_on_host = false;
  std::string placement_reason;    // one line: why the hidden states sit where they do
  int64_t hidden_bytes = 0;        // hidden states of all sequences
  int64_t fixed_weight_bytes = 0;  // embeddings, final norm, LM head
  int64_t layer_weight_bytes = 0;  // the largest single layer's weights
  int64_t peak_resident_layers = 0;
  double seconds = 0.0;
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
  // through). Streaming: the resident layer's, else read from the checkpoint.
  at::Tensor output_projection(int layer) const;

  bool streams_layers() const { return checkpoint_ != nullptr; }
  // Layers whose weights are on the device now, and the most at once since loading (or the last
  // reset). In memory: every layer, always.
  int64_t resident_layers() const { return resident_layers_.load(); }
  int64_t peak_resident_layers() const { return peak_resident_layers_.load(); }
  void reset_peak_resident_layers() const { peak_resident_layers_.store(resident_layers_.load()); }
  // Bytes of the weights that stay loaded (embeddings, final norm, LM head; in memory also every
  // layer) and of the largest layer's weights at the model's dtype.
  int64_t fixed_weight_bytes() const;
  int64_t layer_weight_bytes() const { return layer_bytes_; }

  // Layer-major pass: embeds every sequence, then for each layer (its weights loaded once) runs
  // each group of `groups` (indices into `sequences`, one length per group, as group_by_length
  // makes them) through it, keeping every hidden state for the next layer. `backend` sees each
  // group as forward_batch would (q [group size, heads_q, len, head_dim]); before_group(layer,
  // group) is called before each such call, so a capture knows whose q, k, v it gets. The final
  // norm and the LM head are not run: this is for what a pass needs from the attention inputs.
  // Every sequence must appear in exactly one group.
  SweepReport sweep_layers(const std::vector<std::vector<int64_t>>& sequences,
                           const std::vector<std::vector<size_t>>& groups,
                           AttentionBackend& backend, const SweepOptions& options = {},
                           const std::function<void(int layer, size_t group)>& before_group = {})
      const;

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
  at::Tensor layer_forward(int index, const Layer& w, const at::Tensor& hidden,
                           const RotaryTables& rotary, AttentionBackend& backend, KVCache* cache,
                           int64_t token_chunk) const;
  // A layer's weights (in memory) or a freshly loaded copy that counts as resident until the
  // last reference goes (streaming).
  std::shared_ptr<const Layer> layer_weights(int index) const;
  Layer load_layer(const Checkpoint& ckpt, int64_t index) const;
  // The rotary tables for positions start .. start + len - 1 on the device.
  RotaryTables rotary_for(int64_t start, int64_t len) const;
  // Refuses inputs that span past a sliding window the backend cannot attend within.
  void check_windows(const AttentionBackend& backend, int64_t span) const;
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
  std::vector<Layer> layers_;  // empty when streaming
  at::Tensor inv_freq_;
  std::shared_ptr<const Checkpoint> checkpoint_;  // kept mapped when streaming
  int64_t layer_bytes_ = 0;
  int64_t layer_parameters_ = 0;  // all layers together
  mutable std::atomic<int64_t> resident_layers_{0};
  mutable std::atomic<int64_t> peak_resident_layers_{0};
  // Streaming: the layer being run, so output_projection can reuse it.
  mutable std::weak_ptr<const Layer> current_layer_;
  mutable std::atomic<int> current_index_{-1};
};

}  // namespace xattn::model
