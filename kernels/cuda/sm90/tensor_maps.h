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

// Empty when the sm_90a scoring kernel can load q and k with TMA, else why not: padded layout
// (not varlen), both lengths multiples of the stride S (TMA zero-fills whole strided rows past the
// sequence, not the tail of a partial one), strides TMA can express, 16-byte aligned data.
std::string scoring_tma_unsupported_reason(const ScoringParams& params);

// The load path the sm_90a scoring kernel takes for these parameters (see Sm90ScoringLoads).
enum class ScoringLoadPath { kGather, kTma };
ScoringLoadPath scoring_loads(const ScoringParams& params);

// 5-D maps {head_dim, S, len / S, heads, batch} of q and k: coordinate (e, t, r) is element e of
// token r * S + t, so one strided row's k-step is a box {64, 1, rows}; 128-byte swizzle, strided
// rows past the sequence read as zeros.
cudaError_t encode_scoring_maps(const ScoringParams& params, int q_box_rows, int k_box_rows,
                                CUtensorMap* q_map, CUtensorMap* k_map);

}  // namespace xattn::kernels::cuda::detail::sm90
