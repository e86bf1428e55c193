// Pluggable attention for the model runner. A backend receives each layer's post-RoPE
// q [batch, heads_q, len_q, head_dim] and k, v [batch, heads_kv, len_k, head_dim] (heads_q a
// multiple of heads_kv, causal attention bottom-right aligned: query i sits at position
// len_k - len_q + i) and returns the attention output shaped like q.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "xattn/cost_model.h"
#include "xattn/ops.h"

namespace xattn::model {

struct AttentionBackend {
  virtual ~AttentionBackend() = default;
  virtual at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v) = 0;
  // Sliding-window causal attention: the query at position p sees keys p - window + 1 .. p. The
  // model calls it for layers whose window is shorter than len_k, after asking
  // supports_sliding_window() before any compute; the default refuses.
  virtual bool supports_sliding_window() const { return false; }
  virtual at::Tensor attend_window(int layer, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v, int64_t window);
};

// Exact causal attention with GQA, softmax scale 1/sqrt(head_dim). Queries are processed in chunks
// so the float32 score matrix stays under `score_bytes` (default 256 MiB); each key/value head
// serves its query group through one matrix product, without copying K/V per query head.
// On CUDA with LibTorch >= 2, len_q == len_k and no window, torch's fused
// scaled_dot_product_attention is used instead. window > 0: sliding-window attention (query at
// position p sees keys p - window + 1 .. p; each query chunk reads only the keys in reach).
at::Tensor dense_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  int64_t score_bytes = int64_t(256) << 20, int64_t window = 0);

// Causal block-sparse attention on the CPU from select_blocks' compact form (count [1, heads_q,
// nQB], sorted indices [1, heads_q, nQB, nKB]): per head and query block, the kept key blocks are
// gathered into one matrix product. Batch 1. Equals runtime::block_sparse_attention_compact to
// rounding, many times faster than that scalar reference.
// window > 0: the sliding window's edge is masked per token, as the kernels do.
at::Tensor gathered_block_sparse_attention(const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, const at::Tensor& count,
                                           const at::Tensor& index, int64_t block_size,
                                           int64_t window = 0);

class DenseBackend : public AttentionBackend {
 public:
  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override;
  bool supports_sliding_window() const override { return true; }
  at::Tensor attend_window(int layer, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, int64_t window) override;
};

// XAttention prefill (antidiagonal scoring, per-head threshold selection, block-sparse attention)
// through xattn::runtime ops: the CPU reference for CPU tensors, the kernels for CUDA tensors.
// thresholds [num_layers, heads_q] float32. Records the per-head density of its last call per
// layer (kept / allowed blocks, over all batch items of a batched call), on the device: nothing
// in a forward pass waits for the GPU. With a dispatch set, each prefill call runs sparse only
// where the cost model predicts it cheaper than dense (xattn/cost_model.h, as runtime::Engine
// does; like the engine's, the cost model ignores sliding windows). Sliding-window layers run
// windowed XAttention (attend_window): key blocks before a query block's window are never
// selected nor counted in the density, the window's edge is masked per token; their dense
// fallbacks attend within the window.
class XAttentionBackend : public AttentionBackend {
 public:
  XAttentionBackend(at::Tensor thresholds, runtime::EstimateOptions options = {});
  // Every head of every layer at the same tau.
  static XAttentionBackend uniform(int64_t num_layers, int64_t heads_q, double tau,
                                   runtime::EstimateOptions options = {});

  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override;
  bool supports_sliding_window() const override { return true; }
  at::Tensor attend_window(int layer, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, int64_t window) override;

  // Density-aware dispatch: the device's cost table and the profile's density against length.
  void set_dispatch(runtime::CostTable table, runtime::DensityModel density);
  // The dispatch's reason for the layer's last prefill call ("" without a dispatch).
  const std::string& last_decision(int layer) const;

  const at::Tensor& thresholds() const { return thresholds_; }
  // [heads_q] float64 on the CPU of the layer's last call (1 where it ran dense); undefined
  // before the first call.
  at::Tensor last_density(int layer) const;
  // Mean over heads and over the layers seen in the last forward pass.
  double mean_density() const;
  void clear_density();

 private:
  struct Dispatch {
    runtime::CostTable table;
    runtime::DensityModel density;
  };
  at::Tensor run(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 int64_t window);

  at::Tensor thresholds_;
  at::Tensor device_thresholds_;  // thresholds_ on the device of the last call
  runtime::EstimateOptions options_;
  std::optional<Dispatch> dispatch_;
  std::vector<at::Tensor> density_;
  std::vector<std::string> decision_;
};

// Sees every layer's post-RoPE q, k, v (as passed in: the whole batch of a batched forward
// pass), then delegates to `inner`.
using CaptureCallback =
    std::function<void(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v)>;

class CaptureBackend : public AttentionBackend {
 public:
  CaptureBackend(AttentionBackend& inner, CaptureCallback callback)
      : inner_(inner), callback_(std::move(callback)) {}
  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override {
    callback_(layer, q, k, v);
    return inner_.attend(layer, q, k, v);
  }
  bool supports_sliding_window() const override { return inner_.supports_sliding_window(); }
  at::Tensor attend_window(int layer, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, int64_t window) override {
    callback_(layer, q, k, v);
    return inner_.attend_window(layer, q, k, v, window);
  }

 private:
  AttentionBackend& inner_;
  CaptureCallback callback_;
};

}  // namespace xattn::model
