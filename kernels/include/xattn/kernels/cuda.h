// CUDA kernels of XAttention: antidiagonal scoring, block selection and block-sparse attention.
//
// Launchers take the same params structs as the CPU reference (kernels/cpu.h) with every pointer
// on the device (cu_seqlens and thresholds included), enqueue on `stream` and return the CUDA
// status; they never print, exit or synchronise. No LibTorch here.
//
// Built variants: q/k/v in float16 or bfloat16 with unit stride on head_dim and 16-byte aligned
// rows; head_dim 64 or 128; causal and non-causal; GQA (heads_q a multiple of heads_kv, K/V read in
// place); batches of equal length or varlen (cu_seqlens); len_q <= len_k; any length.
// Scoring needs (block_size / stride) in {8, 16, 32, 64}; attention needs block_size a multiple
// of 64 (64, 128, 256, ...). Ask unsupported_reason() / supports() before launching.
//
// Two kernels per family: sm_80 (mma.sync, every GPU built for) and sm_90a (warpgroup MMA with
// TMA or cp.async producers, compute capability 9.0 only). params.kernel = kAuto takes sm_90a on
// an H100/H200 when it runs the parameters (attention: block_size 128; varlen with
// packed_tokens_* set; strides TMA can address), else sm_80; kSm80 / kSm90 force one.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "xattn/kernels/params.h"

namespace xattn::kernels::cuda {

// Empty when the CUDA kernels handle these parameters, else a message naming the unsupported
// value and what is built.
std::string unsupported_reason(const ScoringParams& params);
std::string unsupported_reason(const SelectionParams& params);
std::string unsupported_reason(const AttentionParams& params);

inline bool supports(const ScoringParams& params) { return unsupported_reason(params).empty(); }
inline bool supports(const SelectionParams& params) { return unsupported_reason(params).empty(); }
inline bool supports(const AttentionParams& params) { return unsupported_reason(params).empty(); }

// Bytes of device scratch antidiagonal_scores needs: one float per (strided query row, key block)
// of one query chunk (params.chunk_len_q queries, or a default that keeps it under 1 GiB).
size_t antidiagonal_scores_workspace_bytes(const ScoringParams& params);

// How antidiagonal_scores loads q and k for these parameters: "tma" (sm_90a kernel, TMA),
// "gather" (sm_90a kernel, cp.async) or "sm80" (the sm_80 kernel).
std::string scoring_load_path(const ScoringParams& params);

// block_scores [batch, heads_q, nQB, nKB] float32 (zeroed here, then filled).
// `workspace` holds at least antidiagonal_scores_workspace_bytes(params) bytes.
cudaError_t antidiagonal_scores(const ScoringParams& params, void* workspace,
                                size_t workspace_bytes, cudaStream_t stream);

// mask (optional), kv_block_count and kv_block_index (ascending, padded with -1), per-head
// thresholds read from device memory. One warp per (sequence, head, query block).
cudaError_t select_blocks(const SelectionParams& params, cudaStream_t stream);

// out [batch, heads_q, len_q, head_dim] and lse [batch, heads_q, max_len_q] (optional).
cudaError_t block_sparse_attention(const AttentionParams& params, cudaStream_t stream);

}  // namespace xattn::kernels::cuda
