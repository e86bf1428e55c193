// TMA descriptors of q, k and v for the sm_90a kernels (host code; the driver's encoder is reached
// through the runtime, so nothing links against libcuda).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <string>

#include "xattn/kernels/params.h"

namespace xattn::kernels::cuda::detail::sm90 {

// Empty when the sm_90a attention kernel handles these parameters (on a device that has it),
// else the reason it does not: block_size 128 only, strides TMA can express (positive multiples
// of 16 bytes on every dimension longer than 1), varlen with packed_tokens_* set.
std::string attention_unsupported_reason(const AttentionParams& params);

// True when the current device is compute capability 9.0 (the sm_90a code runs there only) and
// the driver's tensor-map encoder is reachable.
bool device_runs_sm90();

// 4-D maps {head_dim, tokens, heads, batch}, boxes {64, box_rows, 1, 1}, 128-byte swizzle, rows
// past the tensor read as zeros. Varlen tensors are mapped as one packed sequence (batch 1).
cudaError_t encode_attention_maps(const AttentionParams& params, int box_rows, CUtensorMap* q_map,
                                  CUtensorMap* k_map, CUtensorMap* v_map);

}  // namespace xattn::kernels::cuda::detail::sm90
