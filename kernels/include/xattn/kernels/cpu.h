// CPU reference of every kernel family (OpenMP). These are the test oracles, the CPU backend of
// the runtime and the ground truth of calibration. Inputs in float32/float16/bfloat16 are
// computed in float32 with float64 accumulation of sums.
//
// Functions throw xattn::Error (kInvalidArgument, xattn/error.h) on parameters they cannot
// handle; validate() says why without throwing.
#pragma once

#include <string>

#include "xattn/kernels/params.h"

namespace xattn::kernels::cpu {

// Empty string when the parameters are valid, else a message naming the problem.
std::string validate(const Problem& p);
std::string validate(const ScoringParams& p);
std::string validate(const SelectionParams& p);
std::string validate(const AttentionParams& p);

void antidiagonal_scores(const ScoringParams& params);
void select_blocks(const SelectionParams& params);
void block_sparse_attention(const AttentionParams& params);
void exact_block_mass(const BlockMassParams& params);

}  // namespace xattn::kernels::cpu
