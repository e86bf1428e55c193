// Bridge from the runtime's tensor functions (ops.cpp) to the CUDA kernels. Implemented in
// src/cuda/, which is compiled only when LibTorch has CUDA; the params hold device pointers and the
// kernels run on LibTorch's current stream. Failures throw xattn::Error(kCuda, ...).
#pragma once

#include <string>

#include "xattn/kernels/params.h"

namespace xattn::runtime::cuda_dispatch {

// All pointers in the params are device pointers (cu_seqlens and thresholds included).
void antidiagonal_scores(const kernels::ScoringParams& params);
void select_blocks(const kernels::SelectionParams& params);
void block_sparse_attention(const kernels::AttentionParams& params);

// The CUDA device's name ("NVIDIA H200"); index -1 means the current device.
std::string device_name(int index);

}  // namespace xattn::runtime::cuda_dispatch
