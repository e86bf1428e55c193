// Checks of every argument of the op library (torch.ops.xattn.*), run at the op boundary before
// any allocation or kernel launch. Each throws xattn::Error (kInvalidArgument, or kCuda for CUDA
// tensors in a build without CUDA) naming the argument, the value and what to pass instead;
// torch_library.cpp turns it into a c10::Error (a RuntimeError in Python).
//
// What is refused: undefined tensors; wrong ranks; dtypes other than float32/float16/bfloat16 (and
// float32 on CUDA); tensors on other devices or mixed devices and dtypes; any size 0; heads_q not a
// multiple of heads_kv; len_q > len_k; different batch or head_dim; on CUDA a head_dim other than
// 64 or 128 and block / stride settings the kernels are not built for; block_size not a power of
// two; stride not dividing block_size; a scale that is not a finite positive number; thresholds
// that are not one floating-point τ in [0, 1] per query head (when their count is q's length
// instead, the message says q looks like [batch, len, heads, head_dim]); masks that are not bool or do not
// have one entry per (query block, key block) of a supported block size; cu_seqlens that are not
// integer, do not start at 0, do not end at the packed tensors' row counts or give a sequence
// without queries or with more queries than keys; a negative window, or a window without causal.
//
// Not refused: NaN or Inf inside q, k or v. As with torch's scaled_dot_product_attention they give
// non-finite output (and block scores) without a warning; checking would read every element.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace xattn::runtime::op_arguments {

// estimate(q, k, thresholds, stride, block_size, causal, scale, dense_last_query_block)
void check_estimate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& thresholds,
                    int64_t stride, int64_t block_size, std::optional<double> scale);

// block_sparse_attention(q, k, v, mask, causal, scale); returns the block size the mask's shape
// gives (128, 64, 256, 32, 512, 16 tried in this order).
int64_t check_block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& mask, std::optional<double> scale);

// block_sparse_attention_compact(q, k, v, kv_block_count, kv_block_index, block_size, causal,
// scale): the compact form select_blocks gives, int32 on q's device, [batch, heads_q, nQB] and
// [batch, heads_q, nQB, nKB]. Counts are not read here (that would synchronise): the kernels
// read at most nKB entries of a row and skip indices outside the row's allowed blocks.
void check_block_sparse_attention_compact(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const at::Tensor& kv_block_count,
                                          const at::Tensor& kv_block_index, int64_t block_size,
                                          std::optional<double> scale);

// prefill(q, k, v, thresholds, stride, block_size, causal, dense_last_query_block, scale) and
// prefill_with_lse (same arguments)
void check_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& thresholds, int64_t stride, int64_t block_size,
                   std::optional<double> scale);

// prefill_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, thresholds, stride, block_size, ...):
// q [total_q, heads_q, d], k and v [total_k, heads_kv, d]. Returns the offsets on the host.
struct VarlenOffsets {
  std::vector<int64_t> q, k;
};
VarlenOffsets check_prefill_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                   const at::Tensor& thresholds, int64_t stride,
                                   int64_t block_size);

// window (every op's last argument): >= 0, and 0 unless causal.
void check_window(int64_t window, bool causal);

}  // namespace xattn::runtime::op_arguments
