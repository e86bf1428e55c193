// GPU tests of the CUDA kernels against the CPU reference (the oracle) and a float64 brute force.
//
// Buffers are raw cudaMalloc allocations; outputs are poisoned before each launch so unwritten
// elements show up as NaN. Every test that needs a device skips when none is present.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "xattn/kernels/cpu.h"
#include "xattn/kernels/cuda.h"

namespace xattn::kernels {
namespace {

bool gpu_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!gpu_available()) GTEST_SKIP() << "no CUDA device"

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count_) cuda_check(cudaMalloc(reinterpret_cast<void**>(&ptr_), count_ * sizeof(T)), "cudaMalloc");
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return ptr_; }
  void upload(const std::vector<T>& host) {
    if (count_) cuda_check(cudaMemcpy(ptr_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_) cuda_check(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return host;
  }
  void poison() {
    if (count_) cuda_check(cudaMemset(ptr_, 0xff, count_ * sizeof(T)), "poison");
  }

 private:
  T* ptr_ = nullptr;
  size_t count_;
};

// ---- 16-bit conversions (round to nearest even) ----
float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0) {
    const float f = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -f : f;
  }
  const uint32_t u = exponent == 31 ? (sign | 0x7f800000u | (mantissa << 13))
                                    : (sign | ((exponent + 112u) << 23) | (mantissa << 13));
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_half_bits(float f) {
  // Values in the tests are small and normal or zero; subnormals round through float arithmetic.
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u : 0u));
  if (magnitude >= 0x477ff000u) return uint16_t(sign | 0x7c00u);
  if (magnitude < 0x38800000u) {
    float m;
    std::memcpy(&m, &magnitude, 4);
    return uint16_t(sign | uint16_t(std::nearbyint(m * 16777216.0f)));
  }
  magnitude += 0xfffu + ((magnitude >> 13) & 1u);
  return uint16_t(sign | ((magnitude - 0x38000000u) >> 13));
}
float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float to_float(uint16_t bits, DType t) {
  return t == DType::kBFloat16 ? bf16_bits_to_float(bits) : half_bits_to_float(bits);
}
uint16_t from_float(float f, DType t) {
  return t == DType::kBFloat16 ? float_to_bf16_bits(f) : float_to_half_bits(f);
}

// ---- Test problems ----
struct Case {
  std::string name;
  DType dtype = DType::kBFloat16;
  int64_t head_dim = 128;
  bool causal = true;
  int64_t heads_q = 4, heads_kv = 4;
  std::vector<int32_t> len_q, len_k;  // one per sequence
  bool varlen = false;                // packed [tokens, heads, d] with cu_seqlens
  int32_t block_size = 128;
  int32_t stride = 8;
  int64_t window = 0;  // sliding window (causal only); 0: none
};

std::string describe(const Case& c) {
  std::string s = c.name + " " + dtype_name(c.dtype) + " d" + std::to_string(c.head_dim) +
                  (c.causal ? " causal" : " full") + " hq" + std::to_string(c.heads_q) + "/hkv" +
                  std::to_string(c.heads_kv) + " bs" + std::to_string(c.block_size) + " S" +
                  std::to_string(c.stride) + (c.varlen ? " varlen" : "") +
                  (c.window ? " window " + std::to_string(c.window) : "") + " lens";
  for (size_t b = 0; b < c.len_q.size(); ++b)
    s += " " + std::to_string(c.len_q[b]) + "/" + std::to_string(c.len_k[b]);
  return s;
}

// Host data of one case, plus device copies. Layout: [batch, heads, max_len, d] or, for varlen,
// packed [total_tokens, heads, d] (non-trivial strides on purpose).
struct Data {
  Case c;
  int64_t batch, max_q, max_k, total_q, total_k;
  std::vector<int32_t> cu_q, cu_k;
  std::vector<uint16_t> q, k, v;
  std::vector<float> qf, kf, vf;  // the same values in float32, for the float64 oracle
  TensorView q_view, k_view, v_view;  // strides only; data set per backend
  std::unique_ptr<DeviceBuffer<int32_t>> d_cu_q, d_cu_k;
  std::unique_ptr<DeviceBuffer<uint16_t>> d_q, d_k, d_v;

  Problem problem(bool device) const {
    Problem p;
    p.batch = batch;
    p.heads_q = c.heads_q;
    p.heads_kv = c.heads_kv;
    p.head_dim = c.head_dim;
    p.max_len_q = max_q;
    p.max_len_k = max_k;
    p.causal = c.causal;
    p.window = c.window;
    if (c.varlen) {
      p.cu_seqlens_q = device ? d_cu_q->get() : cu_q.data();
      p.cu_seqlens_k = device ? d_cu_k->get() : cu_k.data();
    }
    return p;
  }
  TensorView view(const TensorView& strides, const std::vector<uint16_t>& host,
                  const DeviceBuffer<uint16_t>& dev, bool device) const {
    TensorView t = strides;
    t.data = device ? static_cast<const void*>(dev.get()) : static_cast<const void*>(host.data());
    return t;
  }
  TensorView qv(bool device) const { return view(q_view, q, *d_q, device); }
  TensorView kv(bool device) const { return view(k_view, k, *d_k, device); }
  TensorView vv(bool device) const { return view(v_view, v, *d_v, device); }
  // Element offset of (b, h, token) in a q-shaped tensor.
  int64_t q_offset(int64_t b, int64_t h, int64_t t) const {
    return sequence_base(c.varlen ? cu_q.data() : nullptr, b, h, q_view.batch_stride,
                         q_view.head_stride, q_view.token_stride) + t * q_view.token_stride;
  }
  int64_t k_offset(int64_t b, int64_t h, int64_t t) const {
    return sequence_base(c.varlen ? cu_k.data() : nullptr, b, h, k_view.batch_stride,
                         k_view.head_stride, k_view.token_stride) + t * k_view.token_stride;
  }
  int64_t q_elements() const { return total_q * c.heads_q * c.head_dim; }
};

// Positional structure (local attention of head-dependent sharpness) plus Gaussian noise, so that
// block scores and selections are far from uniform.
void fill_structured(std::vector<uint16_t>& out, const Data& d, bool is_query, int64_t heads,
                     std::mt19937& rng) {
  std::normal_distribution<float> noise(0.f, 1.f);
  const int64_t D = d.c.head_dim;
  std::vector<double> omegas(D);
  for (int64_t e = 0; e < D; ++e) omegas[e] = std::pow(10000.0, -2.0 * double(e / 2) / double(D));
  for (int64_t b = 0; b < d.batch; ++b) {
    const int64_t len = is_query ? d.c.len_q[b] : d.c.len_k[b];
    const int64_t shift = is_query ? d.c.len_k[b] - d.c.len_q[b] : 0;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kv_h = is_query ? h / (d.c.heads_q / d.c.heads_kv) : h;
      const float amplitude = 0.45f * float(kv_h % 4);
      for (int64_t t = 0; t < len; ++t) {
        const int64_t base = is_query ? d.q_offset(b, h, t) : d.k_offset(b, h, t);
        const double position = double(shift + t);
        for (int64_t e = 0; e < D; ++e) {
          const double omega = omegas[e];
          const double wave = (e % 2) ? std::sin(position * omega) : std::cos(position * omega);
          out[base + e] = from_float(float(noise(rng) + amplitude * wave), d.c.dtype);
        }
      }
    }
  }
}

std::unique_ptr<Data> make_data(const Case& c, uint32_t seed) {
  auto d = std::make_unique<Data>();
  d->c = c;
  d->batch = int64_t(c.len_q.size());
  d->max_q = *std::max_element(c.len_q.begin(), c.len_q.end());
  d->max_k = *std::max_element(c.len_k.begin(), c.len_k.end());
  d->cu_q.assign(1, 0);
  d->cu_k.assign(1, 0);
  for (int64_t b = 0; b < d->batch; ++b) {
    d->cu_q.push_back(d->cu_q.back() + c.len_q[b]);
    d->cu_k.push_back(d->cu_k.back() + c.len_k[b]);
  }
  const int64_t D = c.head_dim;
  if (c.varlen) {
    d->total_q = d->cu_q.back();
    d->total_k = d->cu_k.back();
    d->q_view = {nullptr, c.dtype, 0, D, c.heads_q * D};
    d->k_view = {nullptr, c.dtype, 0, D, c.heads_kv * D};
  } else {
    d->total_q = d->batch * d->max_q;
    d->total_k = d->batch * d->max_k;
    d->q_view = {nullptr, c.dtype, c.heads_q * d->max_q * D, d->max_q * D, D};
    d->k_view = {nullptr, c.dtype, c.heads_kv * d->max_k * D, d->max_k * D, D};
  }
  d->v_view = d->k_view;
  d->q.assign(d->total_q * c.heads_q * D, 0);
  d->k.assign(d->total_k * c.heads_kv * D, 0);
  d->v.assign(d->total_k * c.heads_kv * D, 0);
  std::mt19937 rng(seed);
  fill_structured(d->q, *d, true, c.heads_q, rng);
  fill_structured(d->k, *d, false, c.heads_kv, rng);
  std::normal_distribution<float> noise(0.f, 1.f);
  for (auto& x : d->v) x = from_float(noise(rng), c.dtype);
  auto widen = [&](const std::vector<uint16_t>& in, std::vector<float>& out) {
    out.resize(in.size());
    for (size_t n = 0; n < in.size(); ++n) out[n] = to_float(in[n], c.dtype);
  };
  widen(d->q, d->qf);
  widen(d->k, d->kf);
  widen(d->v, d->vf);
  if (gpu_available()) {
    d->d_cu_q = std::make_unique<DeviceBuffer<int32_t>>(d->cu_q);
    d->d_cu_k = std::make_unique<DeviceBuffer<int32_t>>(d->cu_k);
    d->d_q = std::make_unique<DeviceBuffer<uint16_t>>(d->q);
    d->d_k = std::make_unique<DeviceBuffer<uint16_t>>(d->k);
    d->d_v = std::make_unique<DeviceBuffer<uint16_t>>(d->v);
  }
  return d;
}

int64_t n_qblocks(const Data& d) { return (d.max_q + d.c.block_size - 1) / d.c.block_size; }
int64_t n_kblocks(const Data& d) { return (d.max_k + d.c.block_size - 1) / d.c.block_size; }

ScoringParams scoring_params(const Data& d, bool device, float* scores) {
  ScoringParams p;
  p.problem = d.problem(device);
  p.q = d.qv(device);
  p.k = d.kv(device);
  p.stride = d.c.stride;
  p.block_size = d.c.block_size;
  p.scale = float(1.0 / (std::sqrt(double(d.c.head_dim)) * d.c.stride));
  p.block_scores = scores;
  return p;
}

std::vector<float> cpu_scores(const Data& d) {
  std::vector<float> scores(d.batch * d.c.heads_q * n_qblocks(d) * n_kblocks(d));
  cpu::antidiagonal_scores(scoring_params(d, false, scores.data()));
  return scores;
}

bool device_is_sm90();
const char* kernel_name(CudaKernel k);
// The scoring kernels this device runs: sm_80 everywhere, plus sm_90a on compute capability 9.0,
// there with both of its load paths (auto: TMA where the case allows it; cp.async gathers only).
struct ScoringVariant {
  CudaKernel kernel = CudaKernel::kAuto;
  Sm90ScoringLoads loads = Sm90ScoringLoads::kAuto;
  const char* name = "auto";
};
std::vector<ScoringVariant> scoring_kernels() {
  const ScoringVariant sm80{CudaKernel::kSm80, Sm90ScoringLoads::kAuto, "sm80"};
  if (device_is_sm90())
    return {sm80,
            {CudaKernel::kSm90, Sm90ScoringLoads::kAuto, "sm90"},
            {CudaKernel::kSm90, Sm90ScoringLoads::kGather, "sm90-gather"}};
  return {sm80};
}

std::vector<float> gpu_scores(const Data& d, int64_t chunk_len_q = 0,
                              ScoringVariant variant = {}) {
  DeviceBuffer<float> scores(d.batch * d.c.heads_q * n_qblocks(d) * n_kblocks(d));
  scores.poison();
  ScoringParams p = scoring_params(d, true, scores.get());
  p.chunk_len_q = chunk_len_q;
  p.kernel = variant.kernel;
  p.sm90_loads = variant.loads;
  const std::string why = cuda::unsupported_reason(p);
  if (!why.empty()) throw std::runtime_error("unsupported: " + why);
  DeviceBuffer<unsigned char> workspace(cuda::antidiagonal_scores_workspace_bytes(p));
  cuda_check(cuda::antidiagonal_scores(p, workspace.get(), cuda::antidiagonal_scores_workspace_bytes(p), nullptr),
             "antidiagonal_scores");
  cuda_check(cudaDeviceSynchronize(), "scoring sync");
  return scores.download();
}

struct Selection {
  std::vector<uint8_t> mask;
  std::vector<int32_t> count, index;
};

SelectionParams selection_params(const Data& d, const float* scores, const float* thresholds) {
  SelectionParams p;
  p.problem = d.problem(false);
  p.block_size = d.c.block_size;
  p.block_scores = scores;
  p.thresholds = thresholds;
  p.keep_sink = p.keep_diagonal = d.c.causal;
  return p;
}

Selection cpu_select(const Data& d, const std::vector<float>& scores, const std::vector<float>& tau,
                     bool keep_sink, bool keep_diagonal, bool dense_last = false,
                     SelectionRule rule = SelectionRule::kSmallestSet) {
  const int64_t rows = d.batch * d.c.heads_q * n_qblocks(d), nkb = n_kblocks(d);
  Selection s{std::vector<uint8_t>(rows * nkb), std::vector<int32_t>(rows), std::vector<int32_t>(rows * nkb)};
  SelectionParams p = selection_params(d, scores.data(), tau.data());
  p.keep_sink = keep_sink;
  p.keep_diagonal = keep_diagonal;
  p.dense_last_query_block = dense_last;
  p.rule = rule;
  p.mask = s.mask.data();
  p.kv_block_count = s.count.data();
  p.kv_block_index = s.index.data();
  cpu::select_blocks(p);
  return s;
}

Selection gpu_select(const Data& d, const std::vector<float>& scores, const std::vector<float>& tau,
                     bool keep_sink, bool keep_diagonal, bool dense_last = false,
                     SelectionRule rule = SelectionRule::kSmallestSet) {
  const int64_t rows = d.batch * d.c.heads_q * n_qblocks(d), nkb = n_kblocks(d);
  DeviceBuffer<float> d_scores(scores), d_tau(tau);
  DeviceBuffer<uint8_t> mask(rows * nkb);
  DeviceBuffer<int32_t> count(rows), index(rows * nkb);
  mask.poison();
  count.poison();
  index.poison();
  SelectionParams p = selection_params(d, d_scores.get(), d_tau.get());
  p.problem = d.problem(true);
  p.keep_sink = keep_sink;
  p.keep_diagonal = keep_diagonal;
  p.dense_last_query_block = dense_last;
  p.rule = rule;
  p.mask = mask.get();
  p.kv_block_count = count.get();
  p.kv_block_index = index.get();
  cuda_check(cuda::select_blocks(p, nullptr), "select_blocks");
  cuda_check(cudaDeviceSynchronize(), "selection sync");
  return {mask.download(), count.download(), index.download()};
}

// Number of (row) mismatches between two selections; all three forms are compared.
int64_t selection_mismatches(const Selection& a, const Selection& b, int64_t nkb) {
  int64_t bad = 0;
  for (size_t r = 0; r < a.count.size(); ++r) {
    bool same = a.count[r] == b.count[r];
    for (int64_t j = 0; same && j < nkb; ++j)
      same = a.mask[r * nkb + j] == b.mask[r * nkb + j] && a.index[r * nkb + j] == b.index[r * nkb + j];
    bad += same ? 0 : 1;
  }
  return bad;
}

// ---- Attention oracles ----
struct AttentionResult {
  std::vector<double> out;  // q-shaped, float values
  std::vector<double> lse;  // [batch, heads_q, max_q]
};

// Float64 brute force over the kept blocks (all allowed blocks when count is null).
AttentionResult oracle_attention(const Data& d, const int32_t* count, const int32_t* index, double scale) {
  const Case& c = d.c;
  const int64_t D = c.head_dim, bs = c.block_size, nqb = n_qblocks(d), nkb = n_kblocks(d);
  AttentionResult r{std::vector<double>(d.q_elements(), 0.0),
                    std::vector<double>(d.batch * c.heads_q * d.max_q, -INFINITY)};
  const Problem pr = d.problem(false);
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < c.heads_q; ++h) {
      const int64_t lq = c.len_q[b], lk = c.len_k[b], offset = lk - lq;
      const BlockGeometry geometry = block_geometry(pr, b, bs);
      const int64_t hk = h / (c.heads_q / c.heads_kv);
      std::vector<double> logits(lk), qrow(D);
      std::vector<char> use(lk);
      for (int64_t i = 0; i < lq; ++i) {
        const int64_t qb = i / bs, row = (b * c.heads_q + h) * nqb + qb;
        const int64_t first = geometry.first_block(qb), end = geometry.end_block(qb);
        std::fill(use.begin(), use.end(), 0);
        // Key `key` is visible to query i: causal, and within the sliding window when set.
        auto mark = [&](int64_t j) {
          if (j < first || j >= end) return;
          for (int64_t key = j * bs; key < std::min(lk, (j + 1) * bs); ++key)
            if (!c.causal || (key <= offset + i && (c.window == 0 || offset + i - key < c.window)))
              use[key] = 1;
        };
        if (count) {
          for (int64_t n = 0; n < count[row]; ++n) mark(index[row * nkb + n]);
        } else {
          for (int64_t j = first; j < end; ++j) mark(j);
        }
        for (int64_t e = 0; e < D; ++e) qrow[e] = d.qf[d.q_offset(b, h, i) + e];
        double mx = -INFINITY;
        for (int64_t key = 0; key < lk; ++key) {
          if (!use[key]) continue;
          double s = 0;
          const int64_t ko = d.k_offset(b, hk, key);
          for (int64_t e = 0; e < D; ++e) s += qrow[e] * d.kf[ko + e];
          logits[key] = s * scale;
          mx = std::max(mx, logits[key]);
        }
        const int64_t oo = d.q_offset(b, h, i);
        if (mx == -INFINITY) continue;
        double sum = 0;
        for (int64_t key = 0; key < lk; ++key) {
          if (!use[key]) continue;
          const double p = std::exp(logits[key] - mx);
          sum += p;
          const int64_t vo = d.k_offset(b, hk, key);
          for (int64_t e = 0; e < D; ++e) r.out[oo + e] += p * d.vf[vo + e];
        }
        for (int64_t e = 0; e < D; ++e) r.out[oo + e] /= sum;
        r.lse[(b * c.heads_q + h) * d.max_q + i] = mx + std::log(sum);
      }
    }
  return r;
}

AttentionParams attention_params(const Data& d, bool device, const int32_t* count,
                                 const int32_t* index, void* out, float* lse) {
  AttentionParams p;
  p.problem = d.problem(device);
  p.q = d.qv(device);
  p.k = d.kv(device);
  p.v = d.vv(device);
  p.scale = float(1.0 / std::sqrt(double(d.c.head_dim)));
  p.block_size = d.c.block_size;
  p.kv_block_count = count;
  p.kv_block_index = index;
  p.out = {out, d.c.dtype, d.q_view.batch_stride, d.q_view.head_stride, d.q_view.token_stride};
  p.lse = lse;
  if (d.c.varlen) {
    p.packed_tokens_q = d.total_q;
    p.packed_tokens_k = d.total_k;
  }
  return p;
}

struct RawOutput {
  std::vector<uint16_t> out;
  std::vector<float> lse;
};

RawOutput cpu_attention(const Data& d, const Selection* sel) {
  RawOutput r{std::vector<uint16_t>(d.q_elements(), 0), std::vector<float>(d.batch * d.c.heads_q * d.max_q)};
  cpu::block_sparse_attention(attention_params(d, false, sel ? sel->count.data() : nullptr,
                                               sel ? sel->index.data() : nullptr, r.out.data(),
                                               r.lse.data()));
  return r;
}

// Compute capability 9.0: the sm_90a attention kernel must take every block-128 case there.
bool device_is_sm90() {
  int device = 0, major = 0, minor = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  return major == 9 && minor == 0;
}

const char* kernel_name(CudaKernel k) {
  return k == CudaKernel::kSm90 ? "sm90" : k == CudaKernel::kSm80 ? "sm80" : "auto";
}

RawOutput gpu_attention(const Data& d, const Selection* sel,
                        CudaKernel kernel = CudaKernel::kAuto) {
  DeviceBuffer<uint16_t> out(d.q_elements());
  DeviceBuffer<float> lse(d.batch * d.c.heads_q * d.max_q);
  out.poison();
  lse.poison();
  std::unique_ptr<DeviceBuffer<int32_t>> count, index;
  if (sel) {
    count = std::make_unique<DeviceBuffer<int32_t>>(sel->count);
    index = std::make_unique<DeviceBuffer<int32_t>>(sel->index);
  }
  AttentionParams p = attention_params(d, true, sel ? count->get() : nullptr,
                                       sel ? index->get() : nullptr, out.get(), lse.get());
  p.kernel = kernel;
  const std::string why = cuda::unsupported_reason(p);
  if (!why.empty()) throw std::runtime_error("unsupported: " + why);
  cuda_check(cuda::block_sparse_attention(p, nullptr), "block_sparse_attention");
  cuda_check(cudaDeviceSynchronize(), "attention sync");
  return {out.download(), lse.download()};
}

// Relative L2 error of the valid rows of a q-shaped output against the float64 oracle.
double relative_error(const Data& d, const std::vector<uint16_t>& got, const AttentionResult& ref,
                      bool* has_nan) {
  double num = 0, den = 0;
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < d.c.heads_q; ++h)
      for (int64_t i = 0; i < d.c.len_q[b]; ++i)
        for (int64_t e = 0; e < d.c.head_dim; ++e) {
          const int64_t o = d.q_offset(b, h, i) + e;
          const double x = to_float(got[o], d.c.dtype);
          if (std::isnan(x)) *has_nan = true;
          num += (x - ref.out[o]) * (x - ref.out[o]);
          den += ref.out[o] * ref.out[o];
        }
  return std::sqrt(num / std::max(den, 1e-30));
}

double max_lse_error(const Data& d, const std::vector<float>& got, const AttentionResult& ref) {
  double worst = 0;
  for (size_t n = 0; n < got.size(); ++n) {
    const double r = ref.lse[n], g = got[n];
    if (std::isinf(r) && r < 0) {
      if (!(std::isinf(g) && g < 0)) worst = std::max(worst, 1e30);
    } else {
      worst = std::max(worst, std::isnan(g) ? 1e30 : std::fabs(g - r));
    }
  }
  return worst;
}

// STYLE.md's rule: GPU error vs float64 <= 2 x the same-precision reference's error + slack.
void expect_attention_close(const Data& d, const Selection* sel) {
  const double scale = 1.0 / std::sqrt(double(d.c.head_dim));
  const AttentionResult oracle =
      oracle_attention(d, sel ? sel->count.data() : nullptr, sel ? sel->index.data() : nullptr, scale);
  const RawOutput cpu = cpu_attention(d, sel);
  bool nan_cpu = false;
  const double err_cpu = relative_error(d, cpu.out, oracle, &nan_cpu);
  EXPECT_LE(max_lse_error(d, cpu.lse, oracle), 2e-3) << "CPU reference lse differs from the oracle";
  // Both CUDA kernels where they run: sm_80 everywhere, sm_90a on compute capability 9.0.
  for (CudaKernel kernel : {CudaKernel::kSm80, CudaKernel::kSm90}) {
    SCOPED_TRACE(kernel_name(kernel));
    if (kernel == CudaKernel::kSm90) {
      AttentionParams probe = attention_params(d, true, nullptr, nullptr, nullptr, nullptr);
      probe.out.data = d.d_q->get();  // any aligned device pointer: only the shape is checked
      probe.kernel = kernel;
      const std::string why = cuda::unsupported_reason(probe);
      if (!why.empty()) {
        if (device_is_sm90() && d.c.block_size == 128) ADD_FAILURE() << "sm90 refused: " << why;
        continue;
      }
    }
    const RawOutput gpu = gpu_attention(d, sel, kernel);
    bool nan_gpu = false;
    const double err_gpu = relative_error(d, gpu.out, oracle, &nan_gpu);
    const double slack = d.c.dtype == DType::kBFloat16 ? 1.0 / 1024 : 1.0 / 8192;
    EXPECT_FALSE(nan_gpu) << "NaN (or an unwritten element) in the GPU output";
    EXPECT_LE(err_gpu, 2 * err_cpu + slack) << "relative L2: gpu " << err_gpu << ", cpu " << err_cpu;
    EXPECT_LE(max_lse_error(d, gpu.lse, oracle), 2e-3) << "lse differs from the float64 oracle";
  }
}

// ---- Case grids ----
std::vector<Case> scoring_cases() {
  std::vector<Case> cases;
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (int64_t dim : {64, 128})
      for (bool causal : {true, false}) {
        Case c;
        c.dtype = t;
        c.head_dim = dim;
        c.causal = causal;
        c.name = "square";
        c.len_q = {1000};
        c.len_k = {1000};
        cases.push_back(c);
        c.name = "chunked-prefill-gqa4";
        c.heads_q = 8;
        c.heads_kv = 2;
        c.len_q = {300};
        c.len_k = {1029};
        c.stride = 16;
        cases.push_back(c);
        // GQA 2, chunked prefill, lengths multiples of S: the sm_90a kernel's TMA loads.
        c.name = "tma-gqa2-chunked";
        c.heads_q = 4;
        c.heads_kv = 2;
        c.len_q = {512};
        c.len_k = {1024};
        c.stride = 8;
        cases.push_back(c);
        c.name = "varlen-gqa8";
        c.heads_q = 8;
        c.heads_kv = 1;
        c.len_q = {130, 1, 700};
        c.len_k = {200, 77, 700};
        c.varlen = true;
        c.stride = 8;
        cases.push_back(c);
      }
  Case c;
  c.name = "batch2-bs64-S4";
  c.len_q = {129, 129};
  c.len_k = {129, 129};
  c.block_size = 64;
  c.stride = 4;
  cases.push_back(c);
  c.name = "bs256-S16-odd";
  c.len_q = {17};
  c.len_k = {1001};
  c.block_size = 256;
  c.stride = 16;
  cases.push_back(c);
  // Padded batch of two, GQA, chunked prefill, lengths multiples of S: the sm_90a kernel's TMA
  // loads (batch and head coordinates of its 5-D views, strided rows past the sequence).
  c.name = "tma-batch2-gqa4-chunked-S16";
  c.heads_q = 8;
  c.heads_kv = 2;
  c.len_q = {496, 496};
  c.len_k = {1072, 1072};
  c.block_size = 128;
  c.stride = 16;
  cases.push_back(c);
  c.name = "long-S8";
  c.heads_q = 2;
  c.heads_kv = 2;
  c.len_q = {4096};
  c.len_k = {4096};
  c.block_size = 128;
  c.stride = 8;
  cases.push_back(c);
  return cases;
}

std::vector<Case> attention_cases() {
  std::vector<Case> cases;
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (int64_t dim : {64, 128})
      for (bool causal : {true, false}) {
        Case c;
        c.dtype = t;
        c.head_dim = dim;
        c.causal = causal;
        c.name = "odd-lengths";
        c.heads_q = 4;
        c.heads_kv = 4;
        c.len_q = {1, 17, 129};
        c.len_k = {1, 127, 1000};
        c.varlen = true;
        cases.push_back(c);
        c.name = "gqa4-1000";
        c.varlen = false;
        c.heads_q = 8;
        c.heads_kv = 2;
        c.len_q = {1000};
        c.len_k = {1000};
        cases.push_back(c);
        c.name = "varlen-gqa8";
        c.heads_q = 8;
        c.heads_kv = 1;
        c.len_q = {300, 1, 64};
        c.len_k = {700, 1, 64};
        c.varlen = true;
        cases.push_back(c);
        // Two sequences in the padded [batch, heads, len, d] layout (the batch coordinate of the
        // sm_90a kernel's tensor maps), chunked-prefill shaped (len_q < len_k).
        c.name = "batch2-chunked";
        c.heads_q = 4;
        c.heads_kv = 2;
        c.len_q = {500, 500};
        c.len_k = {800, 800};
        c.varlen = false;
        cases.push_back(c);
      }
  Case c;
  c.name = "bs64";
  c.block_size = 64;
  c.len_q = {333};
  c.len_k = {555};
  cases.push_back(c);
  c.name = "bs256";
  c.block_size = 256;
  c.len_q = {700};
  c.len_k = {900};
  cases.push_back(c);
  return cases;
}

std::vector<float> thresholds_for(int64_t heads) {
  const float choices[] = {0.9f, 0.f, 0.5f, 0.95f, 1.f, 0.25f, 0.8f, 0.99f};
  std::vector<float> tau(heads);
  for (int64_t h = 0; h < heads; ++h) tau[h] = choices[h % 8];
  return tau;
}

// ---- Tests ----
TEST(GpuScoring, MatchesCpuReference) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 1;
  for (const Case& c : scoring_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    const std::vector<float> ref = cpu_scores(*d);
    for (const ScoringVariant& kernel : scoring_kernels()) {
    SCOPED_TRACE(kernel.name);
    const std::vector<float> got = gpu_scores(*d, 0, kernel);
    double worst = 0;
    int64_t bad = 0;
    for (size_t n = 0; n < ref.size(); ++n) {
      const double err = std::fabs(double(got[n]) - ref[n]);
      worst = std::max(worst, std::isnan(got[n]) ? 1e30 : err);
      if (!(err <= 2e-4 + 2e-4 * std::fabs(ref[n]))) ++bad;
    }
    EXPECT_EQ(bad, 0) << "block scores differ; worst abs error " << worst;
    // Rows sum to the number of strided rows of the query block.
    const int64_t nqb = n_qblocks(*d), nkb = n_kblocks(*d);
    for (int64_t b = 0; b < d->batch; ++b)
      for (int64_t h = 0; h < c.heads_q; ++h)
        for (int64_t i = 0; i < (c.len_q[b] + c.block_size - 1) / c.block_size; ++i) {
          double sum = 0;
          for (int64_t j = 0; j < nkb; ++j) sum += got[((b * c.heads_q + h) * nqb + i) * nkb + j];
          const int64_t rows_total = (c.len_q[b] + c.stride - 1) / c.stride;
          const int64_t rows = std::min<int64_t>(c.block_size / c.stride, rows_total - i * (c.block_size / c.stride));
          EXPECT_NEAR(sum, double(rows), 1e-3 * rows) << "row sum of block " << i;
        }
    }
  }
}

TEST(GpuScoring, ChunkedEqualsUnchunked) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.name = "chunks";
  c.heads_q = 4;
  c.heads_kv = 2;
  c.len_q = {2000, 1500};
  c.len_k = {2500, 1500};
  c.varlen = true;
  const auto d = make_data(c, 77);
  for (const ScoringVariant& kernel : scoring_kernels()) {
    SCOPED_TRACE(kernel.name);
    const std::vector<float> whole = gpu_scores(*d, 0, kernel);
    const std::vector<float> chunked = gpu_scores(*d, 1024, kernel);  // 256 strided rows per launch
    ASSERT_EQ(whole.size(), chunked.size());
    for (size_t n = 0; n < whole.size(); ++n) ASSERT_EQ(whole[n], chunked[n]) << "entry " << n;
  }
}

// The sm_90a kernel's two load paths put the same bytes in shared memory, so its scores agree bit
// for bit; and each case takes the path it allows.
TEST(GpuScoring, TmaLoadsEqualGathers) {
  SKIP_WITHOUT_GPU();
  if (!device_is_sm90()) GTEST_SKIP() << "needs a compute capability 9.0 GPU";
  uint32_t seed = 500;
  std::map<std::string, int> paths;
  const ScoringVariant automatic{CudaKernel::kSm90, Sm90ScoringLoads::kAuto, "sm90"};
  const ScoringVariant gather{CudaKernel::kSm90, Sm90ScoringLoads::kGather, "sm90-gather"};
  for (const Case& c : scoring_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    ScoringParams p = scoring_params(*d, true, nullptr);
    p.kernel = CudaKernel::kSm90;
    const std::string path = cuda::scoring_load_path(p);
    const bool tma_ok = !c.varlen && c.len_q[0] % c.stride == 0 && c.len_k[0] % c.stride == 0;
    EXPECT_EQ(path, tma_ok ? "tma" : "gather");
    ++paths[path];
    const std::vector<float> gathered = gpu_scores(*d, 0, gather);
    const std::vector<float> got = gpu_scores(*d, 0, automatic);
    ASSERT_EQ(got.size(), gathered.size());
    for (size_t n = 0; n < got.size(); ++n) ASSERT_EQ(got[n], gathered[n]) << "entry " << n;
  }
  EXPECT_GE(paths["tma"], 18);
  EXPECT_GE(paths["gather"], 16);
}

TEST(GpuSelection, MatchesCpuOnReferenceScores) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (const Case& c : scoring_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    const std::vector<float> scores = cpu_scores(*d);
    const std::vector<float> tau = thresholds_for(c.heads_q);
    for (int flags = 0; flags < 8; ++flags) {
      const bool sink = flags & 1, diagonal = flags & 2, dense_last = flags & 4;
      const Selection ref = cpu_select(*d, scores, tau, sink, diagonal, dense_last);
      const Selection got = gpu_select(*d, scores, tau, sink, diagonal, dense_last);
      EXPECT_EQ(selection_mismatches(ref, got, n_kblocks(*d)), 0)
          << "keep_sink " << sink << " keep_diagonal " << diagonal << " dense_last " << dense_last;
    }
  }
}

TEST(GpuSelection, TiesAndThresholdEdgesExact) {
  SKIP_WITHOUT_GPU();
  // Scores on a coarse grid (multiples of 1/8, many zeros and ties): every sum is exact in float64,
  // so the GPU must reproduce the reference's tie order and crossing block bit for bit.
  std::mt19937 rng(5);
  for (bool causal : {true, false})
    for (int64_t len : {128, 1000, 5000}) {
      Case c;
      c.name = "ties";
      c.causal = causal;
      c.heads_q = 8;
      c.heads_kv = 8;
      c.len_q = {int32_t(len), int32_t(len / 2 + 1)};
      c.len_k = {int32_t(len), int32_t(len)};
      c.varlen = true;
      SCOPED_TRACE(describe(c));
      const auto d = make_data(c, 9);
      std::vector<float> scores(d->batch * c.heads_q * n_qblocks(*d) * n_kblocks(*d));
      std::uniform_int_distribution<int> level(0, 6);
      for (auto& s : scores) s = float(std::max(0, level(rng) - 2)) / 8.f;
      const std::vector<float> tau = {0.f, 0.1f, 0.3f, 0.5f, 0.7f, 0.9f, 0.999f, 1.f};
      for (int flags = 0; flags < 4; ++flags) {
        const Selection ref = cpu_select(*d, scores, tau, flags & 1, flags & 2);
        const Selection got = gpu_select(*d, scores, tau, flags & 1, flags & 2);
        EXPECT_EQ(selection_mismatches(ref, got, n_kblocks(*d)), 0) << "flags " << flags;
      }
    }
}

// The published code's rule (docs/selection-rules.md): the sink competes, one block more per
// row. Causal rows need the sink and the diagonal; non-causal rows take it as the smallest set.
TEST(GpuSelection, PublishedRuleMatchesCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 150;
  for (const Case& c : scoring_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    const std::vector<float> scores = cpu_scores(*d);
    const std::vector<float> tau = thresholds_for(c.heads_q);
    for (bool dense_last : {false, true}) {
      const bool keep = c.causal;
      const SelectionRule rule = SelectionRule::kPublished;
      const Selection ref = cpu_select(*d, scores, tau, keep, keep, dense_last, rule);
      const Selection got = gpu_select(*d, scores, tau, keep, keep, dense_last, rule);
      EXPECT_EQ(selection_mismatches(ref, got, n_kblocks(*d)), 0) << "dense_last " << dense_last;
    }
  }
  // Coarse grid: ties at the crossing score and below it, zeros, rows the diagonal alone fills.
  std::mt19937 rng(6);
  for (int64_t len : {128, 1000, 5000}) {
    Case c;
    c.name = "published-ties";
    c.heads_q = 8;
    c.heads_kv = 8;
    c.len_q = {int32_t(len), int32_t(len / 2 + 1)};
    c.len_k = {int32_t(len), int32_t(len)};
    c.varlen = true;
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, 10);
    std::vector<float> scores(d->batch * c.heads_q * n_qblocks(*d) * n_kblocks(*d));
    std::uniform_int_distribution<int> level(0, 6);
    for (auto& s : scores) s = float(std::max(0, level(rng) - 2)) / 8.f;
    const std::vector<float> tau = {0.f, 0.1f, 0.3f, 0.5f, 0.7f, 0.9f, 0.999f, 1.f};
    const Selection ref = cpu_select(*d, scores, tau, true, true, false, SelectionRule::kPublished);
    const Selection got = gpu_select(*d, scores, tau, true, true, false, SelectionRule::kPublished);
    EXPECT_EQ(selection_mismatches(ref, got, n_kblocks(*d)), 0);
  }
}

TEST(GpuAttention, DenseMatchesReference) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 200;
  for (const Case& c : attention_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    expect_attention_close(*d, nullptr);
  }
}

TEST(GpuAttention, SparseMatchesReference) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 300;
  for (const Case& c : attention_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    const std::vector<float> scores = cpu_scores(*d);
    const Selection sel = cpu_select(*d, scores, thresholds_for(c.heads_q), c.causal, c.causal);
    expect_attention_close(*d, &sel);
  }
}

TEST(GpuAttention, UnsortedAndOutOfRangeIndicesAreIgnoredLikeReference) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.name = "odd-index-lists";
  c.len_q = {500};
  c.len_k = {900};
  const auto d = make_data(c, 400);
  const int64_t rows = c.heads_q * n_qblocks(*d), nkb = n_kblocks(*d);
  Selection sel{std::vector<uint8_t>(rows * nkb), std::vector<int32_t>(rows), std::vector<int32_t>(rows * nkb, -1)};
  for (int64_t r = 0; r < rows; ++r) {
    // Descending order, a future block and a negative entry: all tolerated by the reference.
    int32_t n = 0;
    for (int32_t j = int32_t(nkb) - 1; j >= 0; j -= 2) sel.index[r * nkb + n++] = j;
    if (n < nkb) sel.index[r * nkb + n++] = -5;
    sel.count[r] = n;
  }
  expect_attention_close(*d, &sel);
}

TEST(GpuPipeline, EstimateThenAttendMatchesCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 500;
  int64_t rows_total = 0, rows_differing = 0;
  for (const Case& c : scoring_cases()) {
    SCOPED_TRACE(describe(c));
    if (c.block_size % 64 != 0) continue;
    const auto d = make_data(c, seed++);
    const std::vector<float> tau = thresholds_for(c.heads_q);
    const Selection ref = cpu_select(*d, cpu_scores(*d), tau, c.causal, c.causal);
    const Selection got = gpu_select(*d, gpu_scores(*d), tau, c.causal, c.causal);
    rows_total += int64_t(ref.count.size());
    rows_differing += selection_mismatches(ref, got, n_kblocks(*d));
    expect_attention_close(*d, &got);
  }
  // GPU and CPU block scores differ by rounding; a row's selection may differ only where that
  // rounding moves a score across the crossing point. Reported, and bounded loosely.
  std::printf("[pipeline] selection rows differing from the CPU pipeline: %lld of %lld\n",
              static_cast<long long>(rows_differing), static_cast<long long>(rows_total));
  EXPECT_LE(rows_differing, std::max<int64_t>(2, rows_total / 100));
}

// A small case that runs every kernel once; compute-sanitizer runs this filter.
TEST(GpuSanitizer, AllKernelsSmall) {
  SKIP_WITHOUT_GPU();
  for (DType t : {DType::kBFloat16, DType::kFloat16}) {
    Case c;
    c.name = "sanitizer";
    c.dtype = t;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.len_q = {1, 200, 77};
    c.len_k = {5, 300, 260};
    c.varlen = true;
    c.head_dim = t == DType::kBFloat16 ? 128 : 64;
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, 600);
    const std::vector<float> scores = gpu_scores(*d);
    EXPECT_EQ(gpu_scores(*d, 0, {CudaKernel::kSm80, Sm90ScoringLoads::kAuto, "sm80"}).size(), scores.size());
    const Selection sel = gpu_select(*d, scores, thresholds_for(c.heads_q), true, true);
    const RawOutput out = gpu_attention(*d, &sel);
    const RawOutput dense = gpu_attention(*d, nullptr);
    EXPECT_EQ(out.out.size(), dense.out.size());
    const RawOutput out_sm80 = gpu_attention(*d, &sel, CudaKernel::kSm80);
    EXPECT_EQ(out_sm80.out.size(), out.out.size());
  }
}

// ---- Sliding windows (problem.window) ----
// Windows below, equal to and above the block size, not multiples of it, and longer than the
// sequence; chunked prefill, GQA, varlen and padded batches; block sizes 64, 128 (the sm_90a
// attention kernel) and 256.
std::vector<Case> window_cases() {
  std::vector<Case> cases;
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (int64_t dim : {64, 128}) {
      Case c;
      c.dtype = t;
      c.head_dim = dim;
      c.name = "window-square";
      c.heads_q = 4;
      c.heads_kv = 4;
      c.len_q = {1000};
      c.len_k = {1000};
      for (int64_t w : {1, 77, 128, 300}) {
        c.window = w;
        cases.push_back(c);
      }
      c.name = "window-chunked-gqa4";
      c.heads_q = 8;
      c.heads_kv = 2;
      c.len_q = {300};
      c.len_k = {1029};
      c.stride = 16;
      c.window = 200;
      cases.push_back(c);
      c.name = "window-varlen-gqa8";
      c.heads_q = 8;
      c.heads_kv = 1;
      c.len_q = {130, 1, 700};
      c.len_k = {200, 77, 700};
      c.varlen = true;
      c.stride = 8;
      c.window = 129;
      cases.push_back(c);
      c.name = "window-batch2-chunked";
      c.heads_q = 4;
      c.heads_kv = 2;
      c.len_q = {500, 500};
      c.len_k = {800, 800};
      c.varlen = false;
      c.window = 250;
      cases.push_back(c);
    }
  Case c;
  c.name = "window-bs64";
  c.block_size = 64;
  c.stride = 4;
  c.len_q = {333};
  c.len_k = {555};
  c.window = 100;
  cases.push_back(c);
  c.name = "window-bs256";
  c.block_size = 256;
  c.stride = 16;
  c.len_q = {700};
  c.len_k = {900};
  c.window = 300;
  cases.push_back(c);
  c.name = "window-longer-than-keys";
  c.block_size = 128;
  c.stride = 8;
  c.len_q = {600};
  c.len_k = {600};
  c.window = 5000;
  cases.push_back(c);
  c.name = "window-long";
  c.heads_q = 2;
  c.heads_kv = 2;
  c.len_q = {4096};
  c.len_k = {4096};
  c.window = 1000;
  cases.push_back(c);
  return cases;
}

// Both scoring kernels: the scores of the CPU reference, and exactly 0 before the window.
TEST(GpuWindow, ScoringMatchesCpuAndZeroesBlocksBeforeTheWindow) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 700;
  for (const Case& c : window_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    const std::vector<float> ref = cpu_scores(*d);
    const int64_t nqb = n_qblocks(*d), nkb = n_kblocks(*d);
    const Problem pr = d->problem(false);
    for (const ScoringVariant& kernel : scoring_kernels()) {
      SCOPED_TRACE(kernel.name);
      const std::vector<float> got = gpu_scores(*d, 0, kernel);
      int64_t bad = 0, nonzero_outside = 0;
      for (size_t n = 0; n < ref.size(); ++n) {
        const double err = std::fabs(double(got[n]) - ref[n]);
        if (!(err <= 2e-4 + 2e-4 * std::fabs(ref[n]))) ++bad;
      }
      for (int64_t b = 0; b < d->batch; ++b) {
        const BlockGeometry g = block_geometry(pr, b, c.block_size);
        for (int64_t h = 0; h < c.heads_q; ++h)
          for (int64_t i = 0; i < g.num_q_blocks(); ++i)
            for (int64_t j = 0; j < g.first_block(i); ++j)
              nonzero_outside += got[((b * c.heads_q + h) * nqb + i) * nkb + j] != 0.f;
      }
      EXPECT_EQ(bad, 0) << "block scores differ from the CPU reference";
      EXPECT_EQ(nonzero_outside, 0) << "scores before the window are not zero";
    }
  }
}

// Selection from the reference's scores: bit-exact with the CPU, every flag and both rules.
TEST(GpuWindow, SelectionMatchesCpuExactly) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 800;
  for (const Case& c : window_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    const std::vector<float> scores = cpu_scores(*d);
    const std::vector<float> tau = thresholds_for(c.heads_q);
    for (int flags = 0; flags < 8; ++flags) {
      const bool sink = flags & 1, diagonal = flags & 2, dense_last = flags & 4;
      const Selection ref = cpu_select(*d, scores, tau, sink, diagonal, dense_last);
      const Selection got = gpu_select(*d, scores, tau, sink, diagonal, dense_last);
      EXPECT_EQ(selection_mismatches(ref, got, n_kblocks(*d)), 0)
          << "keep_sink " << sink << " keep_diagonal " << diagonal << " dense_last " << dense_last;
    }
    const Selection ref = cpu_select(*d, scores, tau, true, true, false, SelectionRule::kPublished);
    const Selection got = gpu_select(*d, scores, tau, true, true, false, SelectionRule::kPublished);
    EXPECT_EQ(selection_mismatches(ref, got, n_kblocks(*d)), 0) << "published rule";
  }
  // Coarse grid of scores (ties, zeros), including nonzero scores before the window that both
  // sides must ignore.
  std::mt19937 rng(8);
  for (int64_t window : {1, 100, 128, 700})
    for (int64_t len : {1000, 5000}) {
      Case c;
      c.name = "window-ties";
      c.heads_q = 8;
      c.heads_kv = 8;
      c.len_q = {int32_t(len), int32_t(len / 2 + 1)};
      c.len_k = {int32_t(len), int32_t(len)};
      c.varlen = true;
      c.window = window;
      SCOPED_TRACE(describe(c));
      const auto d = make_data(c, 11);
      std::vector<float> scores(d->batch * c.heads_q * n_qblocks(*d) * n_kblocks(*d));
      std::uniform_int_distribution<int> level(0, 6);
      for (auto& s : scores) s = float(std::max(0, level(rng) - 2)) / 8.f;
      const std::vector<float> tau = {0.f, 0.1f, 0.3f, 0.5f, 0.7f, 0.9f, 0.999f, 1.f};
      for (int flags = 0; flags < 4; ++flags) {
        const Selection ref = cpu_select(*d, scores, tau, flags & 1, flags & 2);
        const Selection got = gpu_select(*d, scores, tau, flags & 1, flags & 2);
        EXPECT_EQ(selection_mismatches(ref, got, n_kblocks(*d)), 0) << "flags " << flags;
      }
      const Selection ref = cpu_select(*d, scores, tau, true, true, false, SelectionRule::kPublished);
      const Selection got = gpu_select(*d, scores, tau, true, true, false, SelectionRule::kPublished);
      EXPECT_EQ(selection_mismatches(ref, got, n_kblocks(*d)), 0) << "published rule";
    }
}

// Dense and sparse windowed attention, sm_80 everywhere and sm_90a on compute capability 9.0
// (block size 128), against the float64 windowed oracle and the CPU reference.
TEST(GpuWindow, AttentionMatchesReference) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 900;
  for (const Case& c : window_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    {
      SCOPED_TRACE("dense");
      expect_attention_close(*d, nullptr);
    }
    const std::vector<float> scores = cpu_scores(*d);
    const Selection sel = cpu_select(*d, scores, thresholds_for(c.heads_q), true, true);
    expect_attention_close(*d, &sel);
  }
}

// A block list holding every key block, in descending order: the kernels skip the blocks before
// the window and mask its edge, giving the dense windowed answer.
TEST(GpuWindow, BlocksBeforeTheWindowInTheListAreIgnored) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.name = "window-full-list";
  c.len_q = {500};
  c.len_k = {900};
  c.window = 150;
  const auto d = make_data(c, 950);
  const int64_t rows = c.heads_q * n_qblocks(*d), nkb = n_kblocks(*d);
  Selection sel{std::vector<uint8_t>(rows * nkb), std::vector<int32_t>(rows, int32_t(nkb)),
                std::vector<int32_t>(rows * nkb)};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = 0; n < nkb; ++n) sel.index[r * nkb + n] = int32_t(nkb - 1 - n);
  expect_attention_close(*d, &sel);
}

TEST(GpuWindow, EstimateThenAttendMatchesCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 1000;
  int64_t rows_total = 0, rows_differing = 0;
  for (const Case& c : window_cases()) {
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, seed++);
    const std::vector<float> tau = thresholds_for(c.heads_q);
    const Selection ref = cpu_select(*d, cpu_scores(*d), tau, true, true);
    const Selection got = gpu_select(*d, gpu_scores(*d), tau, true, true);
    rows_total += int64_t(ref.count.size());
    rows_differing += selection_mismatches(ref, got, n_kblocks(*d));
    expect_attention_close(*d, &got);
  }
  std::printf("[window pipeline] selection rows differing from the CPU pipeline: %lld of %lld\n",
              static_cast<long long>(rows_differing), static_cast<long long>(rows_total));
  EXPECT_LE(rows_differing, std::max<int64_t>(2, rows_total / 100));
}

// Every kernel once on a small windowed case, both attention kernels; compute-sanitizer runs
// this filter.
TEST(GpuWindowSanitizer, AllKernelsSmall) {
  SKIP_WITHOUT_GPU();
  for (DType t : {DType::kBFloat16, DType::kFloat16}) {
    Case c;
    c.name = "window-sanitizer";
    c.dtype = t;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.len_q = {1, 200, 77, 300};
    c.len_k = {5, 300, 260, 300};
    c.varlen = true;
    c.window = 90;
    c.head_dim = t == DType::kBFloat16 ? 128 : 64;
    SCOPED_TRACE(describe(c));
    const auto d = make_data(c, 1100);
    for (const ScoringVariant& kernel : scoring_kernels()) {
      const std::vector<float> scores = gpu_scores(*d, 0, kernel);
      const Selection sel = gpu_select(*d, scores, thresholds_for(c.heads_q), true, true);
      for (CudaKernel attention : {CudaKernel::kSm80, CudaKernel::kAuto}) {
        const RawOutput out = gpu_attention(*d, &sel, attention);
        const RawOutput dense = gpu_attention(*d, nullptr, attention);
        EXPECT_EQ(out.out.size(), dense.out.size());
      }
    }
  }
}

TEST(GpuWindow, BadWindowsAreRefused) {
  // Host-only: no device needed.
  alignas(16) static uint16_t dummy[64];
  AttentionParams a;
  a.problem.max_len_q = a.problem.max_len_k = 100;
  a.problem.head_dim = 128;
  a.q = a.k = a.v = {dummy, DType::kFloat16, 0, 0, 128};
  a.out = {dummy, DType::kFloat16, 0, 0, 128};
  a.problem.window = 64;
  EXPECT_TRUE(cuda::supports(a)) << cuda::unsupported_reason(a);
  a.problem.window = -3;
  EXPECT_NE(cuda::unsupported_reason(a).find("window -3"), std::string::npos);
  a.problem.window = 64;
  a.problem.causal = false;
  EXPECT_NE(cuda::unsupported_reason(a).find("needs causal attention"), std::string::npos);
}

TEST(GpuSupport, ReasonsNameTheUnsupportedValue) {
  // Host-only: no device needed.
  alignas(16) static uint16_t dummy[64];
  ScoringParams s;
  s.problem.max_len_q = s.problem.max_len_k = 100;
  s.problem.head_dim = 128;
  s.q = {dummy, DType::kBFloat16, 0, 0, 128};
  s.k = s.q;
  float out;
  s.block_scores = &out;
  EXPECT_TRUE(cuda::supports(s)) << cuda::unsupported_reason(s);
  s.problem.head_dim = 96;
  EXPECT_NE(cuda::unsupported_reason(s).find("head_dim 96"), std::string::npos);
  s.problem.head_dim = 128;
  s.stride = 32;
  EXPECT_NE(cuda::unsupported_reason(s).find("block_size / stride"), std::string::npos);
  s.stride = 8;
  s.q.dtype = DType::kFloat32;
  EXPECT_NE(cuda::unsupported_reason(s).find("float32"), std::string::npos);

  AttentionParams a;
  a.problem = s.problem;
  a.q = a.k = a.v = {dummy, DType::kFloat16, 0, 0, 128};
  a.out = {dummy, DType::kFloat16, 0, 0, 128};
  EXPECT_TRUE(cuda::supports(a)) << cuda::unsupported_reason(a);
  a.block_size = 32;
  EXPECT_NE(cuda::unsupported_reason(a).find("block_size 32"), std::string::npos);

  SelectionParams p;
  p.problem = s.problem;
  p.block_scores = &out;
  p.thresholds = &out;
  int32_t slots[4];
  p.kv_block_count = p.kv_block_index = slots;
  p.rule = SelectionRule::kPublished;
  EXPECT_TRUE(cuda::supports(p)) << cuda::unsupported_reason(p);
  p.keep_sink = false;
  EXPECT_NE(cuda::unsupported_reason(p).find("keep_sink"), std::string::npos);
}

}  // namespace
}  // namespace xattn::kernels
