// XAttention on LibTorch tensors. CPU tensors run the CPU reference; CUDA tensors run the kernels
// on the current stream. q [batch, heads_q, len_q, head_dim], k and v [batch, heads_kv, len_k,
// head_dim] (the layout of torch's scaled_dot_product_attention), float32/float16/bfloat16,
// heads_q a multiple of heads_kv, len_q <= len_k; causal attention is bottom-right aligned.
// `window` (causal only; 0: none) is a sliding window: the query at position p sees keys
// p - window + 1 .. p (transformers' sliding_window); key blocks before the window of a query
// block are not allowed (never selected, not counted in densities).
// Every check failure throws xattn::Error with a message naming the tensor and the fix. NaN or
// Inf inside q, k or v are not checked: as with scaled_dot_product_attention they give
// non-finite scores and output. The op library (torch.ops.xattn.*) checks more strictly, before
// any work (runtime/src/op_arguments.h, docs/cli-errors.md).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "xattn/kernels/params.h"

namespace xattn::runtime {

struct EstimateOptions {
  int64_t stride = 8;
  int64_t block_size = 128;
  bool causal = true;
  std::optional<double> scale;  // default 1 / (sqrt(head_dim) * stride)
  bool keep_sink = true;        // forced in causal mode; optional in non-causal mode
  bool keep_diagonal = true;
  // Causal: each sequence's last query block keeps every allowed key block. Its last row makes
  // the first generated token; a key only that row needs (a passkey) can hold too little of the
  // block's antidiagonal mass to be selected. Costs one block row (1/256 of the blocks at 32K).
  bool dense_last_query_block = true;
  // kSmallestSet: the forced blocks plus the fewest others reaching tau. kPublished: what the
  // published code keeps (causal: the sink competes, one block more per row; non-causal: the
  // smallest set; the published code forces nothing there, so set keep_sink and keep_diagonal
  // false to match it). docs/selection-rules.md.
  kernels::SelectionRule selection_rule = kernels::SelectionRule::kSmallestSet;
  int64_t window = 0;  // sliding window (causal only); 0: none
};

// Antidiagonal block scores [batch, heads_q, nQB, nKB] float32.
at::Tensor antidiagonal_scores(const at::Tensor& q, const at::Tensor& k,
                               const EstimateOptions& options);

// Selection from block scores with thresholds [heads_q] (float32).
// Returns (mask [batch, heads_q, nQB, nKB] bool, kv_block_count [batch, heads_q, nQB] int32,
//          kv_block_index [batch, heads_q, nQB, nKB] int32, ascending, first count valid).
std::tuple<at::Tensor, at::Tensor, at::Tensor> select_blocks(const at::Tensor& block_scores,
                                                             const at::Tensor& thresholds,
                                                             int64_t len_q, int64_t len_k,
                                                             const EstimateOptions& options);

// Scoring + selection: (block_scores, mask).
std::tuple<at::Tensor, at::Tensor> estimate(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& thresholds,
                                            const EstimateOptions& options);

// Block-sparse attention with a boolean block mask [batch, heads_q, nQB, nKB] of blocks of
// block_size tokens (nQB = ceil(len_q / block_size), nKB likewise). Blocks outside the causal
// triangle are ignored. Returns (out like q, lse [batch, heads_q, len_q] float32).
std::tuple<at::Tensor, at::Tensor> block_sparse_attention(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v,
                                                          const at::Tensor& mask, bool causal,
                                                          std::optional<double> scale,
                                                          int64_t block_size = 128,
                                                          int64_t window = 0);

// Same with the compact form from select_blocks (count + indices).
std::tuple<at::Tensor, at::Tensor> block_sparse_attention_compact(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_block_count,
    const at::Tensor& kv_block_index, bool causal, std::optional<double> scale,
    int64_t block_size, int64_t window = 0);

// Dense attention through the same kernels (every allowed block): (out, lse).
std::tuple<at::Tensor, at::Tensor> dense_attention(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, bool causal,
                                                   std::optional<double> scale,
                                                   int64_t window = 0);

// The runtime's dense fallback: torch's fused SDPA on CUDA where its causal convention agrees
// (non-causal, len_q == len_k, or one query) and no window cuts the keys, grouped K/V heads passed
// as they are; dense_attention otherwise. Returns out like q.
at::Tensor dense_fallback_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   bool causal, double scale, int64_t window = 0);

// Exact block mass [batch, heads_q, nQB, nKB] float32 (rows sum to 1): the ground truth.
at::Tensor exact_block_mass(const at::Tensor& q, const at::Tensor& k, bool causal,
                            int64_t block_size, std::optional<double> scale,
                            int64_t window = 0);

// Whole XAttention prefill: scoring, selection with per-head thresholds, sparse attention.
at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& thresholds, const EstimateOptions& options);

// The same with the softmax scale of the attention (default 1 / sqrt(head_dim), as in
// scaled_dot_product_attention). Scoring runs at options.scale when set, else at
// attention_scale / stride (the method's 1 / (sqrt(d) * stride) for the default scale), so a
// model with its own softmax scale is estimated at the temperature it attends with.
// Returns (out like q, lse [batch, heads_q, len_q] float32: the natural-log sum of exp(scale *
// q.k) over the keys each row attended, i.e. over its kept blocks).
std::tuple<at::Tensor, at::Tensor> prefill_with_lse(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v,
                                                    const at::Tensor& thresholds,
                                                    const EstimateOptions& options,
                                                    std::optional<double> attention_scale);

// Per-head density of a selection: kept / allowed blocks over all batch items and query blocks,
// [heads_q] float64. Reads the counts on the host (synchronises a CUDA stream);
// head_density_on_device is the same figure computed where the counts are, without waiting.
at::Tensor head_density(const at::Tensor& kv_block_count, int64_t len_q, int64_t len_k,
                        int64_t block_size, bool causal, int64_t window = 0);
at::Tensor head_density_on_device(const at::Tensor& kv_block_count, int64_t len_q, int64_t len_k,
                                  int64_t block_size, bool causal, int64_t window = 0);

// `tensor` on `device` without making the host wait. A plain copy from pageable host memory
// synchronises the CUDA stream, which throws away the CPU's lead over the GPU once per call (a
// per-layer copy of 32 thresholds cost a small model 10-25 % of its prefill time); host tensors
// bound for a CUDA device go through pinned memory with a non-blocking copy instead.
at::Tensor to_device_async(const at::Tensor& tensor, at::Device device);

}  // namespace xattn::runtime
