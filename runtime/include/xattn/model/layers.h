// The building blocks of a Llama-family decoder layer, on LibTorch tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "xattn/model/config.h"

namespace xattn::model {

// Rotary inverse frequencies [head_dim / 2] float32: 1 / theta^(2i / head_dim), then the rope
// type's rescaling (linear: / factor; llama3: long wavelengths / factor, short ones unchanged,
// a smooth blend between). Evaluated in float32 as transformers does.
at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t head_dim);

// cos and sin tables [len, head_dim] float32 for positions start .. start + len - 1, laid out for
// the half-rotation convention (the frequency vector repeated twice).
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin;
};
RotaryTables rotary_tables(const at::Tensor& inv_freq, int64_t start, int64_t len);

// x [..., len, head_dim] rotated: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1].
// The tables are cast to x's dtype and device.
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables);

// RMSNorm: weight * (x / sqrt(mean(x^2) + eps)), normalised in float32, then cast back to x's
// dtype before the weight multiplies (transformers' order).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace xattn::model
