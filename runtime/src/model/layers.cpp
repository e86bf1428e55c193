// Rotary embeddings and RMSNorm; see xattn/model/layers.h.
#include "xattn/model/layers.h"

#include <cmath>

#include "xattn/error.h"

namespace xattn::model {

at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t head_dim) {
  XATTN_CHECK_ARG(head_dim > 0 && head_dim % 2 == 0, "head_dim must be positive and even, got ",
                  head_dim);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor exponents = at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kLong))
                                   .to(at::kFloat)
                                   .div(static_cast<double>(head_dim));
  at::Tensor inv_freq = at::pow(at::scalar_tensor(rope.theta, f32), exponents).reciprocal();
  switch (rope.type) {
    case RopeType::kDefault:
      return inv_freq;
    case RopeType::kLinear:
      return inv_freq / rope.factor;
    case RopeType::kLlama3: {
      const double old_len = static_cast<double>(rope.original_max_position_embeddings);
      const double low_freq_wavelen = old_len / rope.low_freq_factor;
      const double high_freq_wavelen = old_len / rope.high_freq_factor;
      const at::Tensor wavelen = (2.0 * M_PI) / inv_freq;
      // Wavelengths longer than the original context are stretched by the factor.
      at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
      const at::Tensor smooth = (old_len / wavelen - rope.low_freq_factor) /
                                (rope.high_freq_factor - rope.low_freq_factor);
      const at::Tensor smoothed = (1.0 - smooth) * scaled / rope.factor + smooth * scaled;
      const at::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(
          wavelen <= low_freq_wavelen);
      return at::where(medium, smoothed, scaled);
    }
  }
  return inv_freq;
}

RotaryTables rotary_tables(const at::Tensor& inv_freq, int64_t start, int64_t len) {
  const at::Tensor positions =
      at::arange(start, start + len, at::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  const at::Tensor freqs = at::outer(positions, inv_freq.to(at::kCPU, at::kFloat));
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables) {
  const int64_t d = x.size(-1);
  XATTN_CHECK_ARG(tables.cos.size(-1) == d && tables.cos.size(0) == x.size(-2),
                  "rotary tables ", tables.cos.sizes(), " do not fit x ", x.sizes());
  const at::Tensor cos = tables.cos.to(x.device(), x.scalar_type());
  const at::Tensor sin = tables.sin.to(x.device(), x.scalar_type());
  const at::Tensor x1 = x.narrow(-1, 0, d / 2);
  const at::Tensor x2 = x.narrow(-1, d / 2, d / 2);
  const at::Tensor rotated = at::cat({x2.neg(), x1}, -1);
  return x * cos + rotated * sin;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

}  // namespace xattn::model
