// Host-side launchers of each compiled specialisation (one .cu per dtype x head_dim, see
// instantiations/). Internal to kernels/cuda; the public entry points are in xattn/kernels/cuda.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "xattn/kernels/params.h"

namespace xattn::kernels::cuda::detail {

// Scratch-based scoring of strided rows [row_begin, row_begin + chunk_rows) of every sequence.
struct ScoringChunk {
  int64_t row_begin;
  int64_t chunk_rows;
  float* scratch;
};

template <typename T, int kHeadDim>
cudaError_t launch_antidiagonal_scoring(const ScoringParams& params, const ScoringChunk& chunk,
                                        cudaStream_t stream);

template <typename T, int kHeadDim>
cudaError_t launch_block_sparse_attention(const AttentionParams& params, cudaStream_t stream);

// The sm_90a kernels (sm90/): compute capability 9.0; attention for block_size 128.
template <typename T, int kHeadDim>
cudaError_t launch_antidiagonal_scoring_sm90(const ScoringParams& params, const ScoringChunk& chunk,
                                             cudaStream_t stream);
template <typename T, int kHeadDim>
cudaError_t launch_block_sparse_attention_sm90(const AttentionParams& params, cudaStream_t stream);

cudaError_t launch_select_blocks(const SelectionParams& params, cudaStream_t stream);

// The shipped specialisations (keep in sync with instantiations/ and dispatch in launch.cu).
#define XATTN_FOR_EACH_SPECIALISATION(X) \
  X(__half, 64, fp16_hd64)               \
  X(__half, 128, fp16_hd128)             \
  X(__nv_bfloat16, 64, bf16_hd64)        \
  X(__nv_bfloat16, 128, bf16_hd128)

}  // namespace xattn::kernels::cuda::detail
