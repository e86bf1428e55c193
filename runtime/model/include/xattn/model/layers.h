// The building blocks of a Llama-family decoder layer, on LibTorch tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "xattn/model/config.h"

namespace xattn::model {

// Rotary inverse frequencies [dim / 2] float32 (dim: the rotated dimensions of a head):
// 1 / theta^(2i / dim), then the rope type's rescaling, evaluated in float32 as transformers does:
//   linear    / factor;
//   llama3    long wavelengths / factor, short ones unchanged, a smooth blend between;
//   dynamic   (NTK) theta * (factor * L / max_pos - (factor - 1))^(dim / (dim - 2)) once the
//             sequence length L = seq_len exceeds max_position_embeddings, else unchanged;
//   yarn      interpolated (/ factor) below the beta_slow rotation count over the original context,
//             extrapolated (unchanged) above beta_fast, a linear ramp over the dimensions between;
//   longrope  / short_factor[i], or / long_factor[i] once seq_len exceeds the original context.
// seq_len is the length the tables are for (the last position + 1); only dynamic and longrope
// use it.
at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t dim, int64_t seq_len = 0);

// The factor multiplying cos and sin: yarn's and longrope's attention_factor, else 1.
double rope_attention_scaling(const RopeConfig& rope);

// cos and sin tables [len, dim] float32 for positions start .. start + len - 1, laid out for
// the half-rotation convention (the frequency vector repeated twice), times `scaling`.
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin;
};
RotaryTables rotary_tables(const at::Tensor& inv_freq, int64_t start, int64_t len,
                           double scaling = 1.0);

// x [..., len, head_dim] rotated: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1].
// Tables narrower than head_dim (partial rotary, Phi-3) rotate the leading dimensions only and
// pass the rest through. The tables are cast to x's dtype and device.
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables);

// RMSNorm: weight * (x / sqrt(mean(x^2) + eps)), normalised in float32, then cast back to x's
// dtype before the weight multiplies (transformers' order).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace xattn::model
