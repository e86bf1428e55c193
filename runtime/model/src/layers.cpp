// Rotary embeddings and RMSNorm; see xattn/model/layers.h.
#include "xattn/model/layers.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "xattn/error.h"

namespace xattn::model {

namespace {

// theta^(2i / dim) for i < dim / 2, float32.
at::Tensor rope_base_powers(double theta, int64_t dim) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor exponents = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong))
                                   .to(at::kFloat)
                                   .div(static_cast<double>(dim));
  return at::pow(at::scalar_tensor(theta, f32), exponents);
}

// yarn: the dimension at which a frequency completes `rotations` turns over `context` positions.
double yarn_correction_dim(double rotations, int64_t dim, double theta, double context) {
  return static_cast<double>(dim) * std::log(context / (rotations * 2.0 * M_PI)) /
         (2.0 * std::log(theta));
}

at::Tensor yarn_inv_freq(const RopeConfig& rope, int64_t dim) {
  const double context = static_cast<double>(rope.original_max_position_embeddings);
  double low = yarn_correction_dim(rope.beta_fast, dim, rope.theta, context);
  double high = yarn_correction_dim(rope.beta_slow, dim, rope.theta, context);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // a ramp of zero width
  const at::Tensor ramp = ((at::arange(dim / 2, at::TensorOptions().dtype(at::kFloat)) - low) /
                           (high - low))
                              .clamp(0.0, 1.0);
  const at::Tensor extrapolation_weight = 1.0 - ramp;  // 1: the frequency is kept as it is
  const at::Tensor powers = rope_base_powers(rope.theta, dim);
  const at::Tensor extrapolated = powers.reciprocal();
  const at::Tensor interpolated = (powers * rope.factor).reciprocal();
  return interpolated * (1.0 - extrapolation_weight) + extrapolated * extrapolation_weight;
}

}  // namespace

at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t dim, int64_t seq_len) {
  XATTN_CHECK_ARG(dim > 0 && dim % 2 == 0, "the rotary dimension must be positive and even, got ",
                  dim);
  switch (rope.type) {
    case RopeType::kDefault:
      return rope_base_powers(rope.theta, dim).reciprocal();
    case RopeType::kLinear:
      return rope_base_powers(rope.theta, dim).reciprocal() / rope.factor;
    case RopeType::kLlama3: {
      const at::Tensor inv_freq = rope_base_powers(rope.theta, dim).reciprocal();
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
    case RopeType::kDynamic: {
      const double max_len = static_cast<double>(rope.max_position_embeddings);
      const double len = std::max(static_cast<double>(seq_len), max_len);
      // The ratio in float32, as transformers computes it from the position tensor.
      const float ratio = static_cast<float>(rope.factor * len / max_len - (rope.factor - 1.0));
      const double theta = static_cast<float>(
          rope.theta * std::pow(static_cast<double>(ratio),
                                static_cast<double>(dim) / static_cast<double>(dim - 2)));
      return rope_base_powers(theta, dim).reciprocal();
    }
    case RopeType::kYarn:
      return yarn_inv_freq(rope, dim);
    case RopeType::kLongRope: {
      const bool long_input = seq_len > rope.original_max_position_embeddings;
      const std::vector<double>& f = long_input ? rope.long_factor : rope.short_factor;
      XATTN_CHECK_ARG(int64_t(f.size()) == dim / 2, "longrope needs ", dim / 2,
                      " factors for rotary dimension ", dim, ", got ", f.size());
      const at::Tensor factors =
          at::tensor(f, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
      return (factors * rope_base_powers(rope.theta, dim)).reciprocal();
    }
  }
  return rope_base_powers(rope.theta, dim).reciprocal();
}

double rope_attention_scaling(const RopeConfig& rope) {
  return rope.type == RopeType::kYarn || rope.type == RopeType::kLongRope ? rope.attention_factor
                                                                          : 1.0;
}

RotaryTables rotary_tables(const at::Tensor& inv_freq, int64_t start, int64_t len,
                           double scaling) {
  const at::Tensor positions =
      at::arange(start, start + len, at::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  const at::Tensor freqs = at::outer(positions, inv_freq.to(at::kCPU, at::kFloat));
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  if (scaling == 1.0) return {emb.cos(), emb.sin()};
  return {emb.cos() * scaling, emb.sin() * scaling};
}

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables) {
  const int64_t d = x.size(-1), r = tables.cos.size(-1);
  XATTN_CHECK_ARG(r <= d && r % 2 == 0 && tables.cos.size(0) == x.size(-2), "rotary tables ",
                  tables.cos.sizes(), " do not fit x ", x.sizes());
  const at::Tensor cos = tables.cos.to(x.device(), x.scalar_type());
  const at::Tensor sin = tables.sin.to(x.device(), x.scalar_type());
  const at::Tensor xr = r == d ? x : x.narrow(-1, 0, r);
  const at::Tensor x1 = xr.narrow(-1, 0, r / 2);
  const at::Tensor x2 = xr.narrow(-1, r / 2, r / 2);
  const at::Tensor rotated = at::cat({x2.neg(), x1}, -1);
  const at::Tensor out = xr * cos + rotated * sin;
  return r == d ? out : at::cat({out, x.narrow(-1, r, d - r)}, -1);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

}  // namespace xattn::model
