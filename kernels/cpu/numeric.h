// Element conversions and small float32 building blocks shared by the CPU reference.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "xattn/kernels/problem.h"

namespace xattn::kernels::cpu {

inline float bfloat16_to_float(uint16_t bits) {
  const uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t float_to_bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float float16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t u;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24.
    float f = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -f : f;
  } else if (exponent == 31) {
    u = sign | 0x7f800000u | (mantissa << 13);
  } else {
    u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, overflow to infinity; NaN stays NaN.
inline uint16_t float_to_float16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u : 0u));
  if (magnitude >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (magnitude < 0x38800000u) {                                    // below 2^-14: subnormal
    float m;
    std::memcpy(&m, &magnitude, sizeof m);
    return uint16_t(sign | uint16_t(std::nearbyint(m * 16777216.0f)));
  }
  magnitude += 0xfffu + ((magnitude >> 13) & 1u);
  return uint16_t(sign | ((magnitude - 0x38000000u) >> 13));
}

// Reads n consecutive elements starting at element `offset` of `data` into float32.
inline void load_row(const void* data, DType dtype, int64_t offset, int64_t n, float* out) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(out, static_cast<const float*>(data) + offset, size_t(n) * sizeof(float));
      return;
    case DType::kFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(data) + offset;
      for (int64_t e = 0; e < n; ++e) out[e] = float16_to_float(src[e]);
      return;
    }
    case DType::kBFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(data) + offset;
      for (int64_t e = 0; e < n; ++e) out[e] = bfloat16_to_float(src[e]);
      return;
    }
  }
}

inline void store_row(const float* values, int64_t n, void* data, DType dtype, int64_t offset) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(static_cast<float*>(data) + offset, values, size_t(n) * sizeof(float));
      return;
    case DType::kFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(data) + offset;
      for (int64_t e = 0; e < n; ++e) dst[e] = float_to_float16(values[e]);
      return;
    }
    case DType::kBFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(data) + offset;
      for (int64_t e = 0; e < n; ++e) dst[e] = float_to_bfloat16(values[e]);
      return;
    }
  }
}

inline float dot(const float* a, const float* b, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t e = 0; e < n; ++e) sum += a[e] * b[e];
  return sum;
}

// Loads all tokens [0, len) of (sequence b, head h) of a view into a dense float32 [len, d] array.
inline void load_sequence(const TensorView& view, const int32_t* cu_seqlens, int64_t b, int64_t h,
                          int64_t len, int64_t head_dim, float* out) {
  const int64_t base = sequence_base(cu_seqlens, b, h, view.batch_stride, view.head_stride,
                                     view.token_stride);
  for (int64_t t = 0; t < len; ++t)
    load_row(view.data, view.dtype, base + t * view.token_stride, head_dim, out + t * head_dim);
}

}  // namespace xattn::kernels::cpu
