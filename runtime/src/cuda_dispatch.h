// Bridge from the runtime's tensor functions (ops.cpp) to the CUDA kernels. Implemented in
// src/cuda/, which is compiled only when LibTorch has CUDA; the params hold device pointers and the
// kernels run on LibTorch's current stream. Failures throw xattn::Error(kCuda, ...).
#pragma once

#include "xattn/kernels/params.h"

namespace xattn::runtime::cuda_dispatch {

// All pointers in the params are device pointers (cu_seqlens and thresholds included).
void antidiagonal_scores(const kernels::ScoringParams& params);
void select_blocks(const kernels::SelectionParams& params);
void block_sparse_attention(const kernels::AttentionParams& params);

}  // namespace xattn::runtime::cuda_dispatch
