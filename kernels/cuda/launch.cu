// Public entry points of the CUDA kernels: parameter checks, workspace sizing, query chunking of
// the scoring pass and the dtype x head_dim switch over the compiled specialisations.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "launchers.h"
#include "sm90/tensor_maps.h"
#include "xattn/error.h"
#include "xattn/kernels/cuda.h"

namespace xattn::kernels::cuda {
namespace {

constexpr int64_t kScoringRowsPerCta = 256;  // a multiple of every variant's CTA rows
constexpr size_t kDefaultScratchBytes = size_t(1) << 30;

// Numbers are formatted without iostreams (xattn/error.h says why).
template <typename... Args>
std::string message(const Args&... args) {
  return xattn::detail::concat(args...);
}

std::string problem_reason(const Problem& p) {
  if (p.batch < 1 || p.heads_q < 1 || p.heads_kv < 1 || p.heads_q % p.heads_kv != 0)
    return message("head counts (", p.heads_q, ", ", p.heads_kv,
                   ") must be positive with heads_q a multiple of heads_kv");
  if (p.max_len_q < 1 || p.max_len_k < 1 || p.max_len_q > p.max_len_k)
    return message("lengths (", p.max_len_q, ", ", p.max_len_k, ") must satisfy 1 <= len_q <= len_k");
  if (p.heads_q > 65535 * 1024LL || p.batch > 65535)
    return message("batch ", p.batch, " / heads_q ", p.heads_q, " exceed the launch grid");
  if (p.window < 0) return message("window ", p.window, " must be >= 0 (0: no sliding window)");
  if (p.window > 0 && !p.causal)
    return message("a sliding window (", p.window, ") needs causal attention");
  return {};
}

std::string view_reason(const char* name, const TensorView& v, int64_t head_dim) {
  if (!v.data) return message(name, " is null");
  if (v.dtype != DType::kFloat16 && v.dtype != DType::kBFloat16)
    return message(name, " is ", dtype_name(v.dtype),
                   "; the CUDA kernels are built for float16 and bfloat16");
  if (head_dim != 64 && head_dim != 128)
    return message("head_dim ", head_dim, " is not built for CUDA; built: 64, 128");
  if (reinterpret_cast<uintptr_t>(v.data) % 16 != 0 || v.token_stride % 8 != 0 ||
      v.head_stride % 8 != 0 || v.batch_stride % 8 != 0)
    return message(name, " rows must be 16-byte aligned (strides multiples of 8 elements); "
                   "pass a contiguous tensor");
  return {};
}

int64_t scoring_chunk_rows(const ScoringParams& p) {
  const Problem& pr = p.problem;
  const int64_t n_rows = ceil_div(ceil_div(pr.max_len_q, p.stride), kScoringRowsPerCta) *
                         kScoringRowsPerCta;
  const int64_t nkb = ceil_div(pr.max_len_k, p.block_size);
  int64_t rows;
  if (p.chunk_len_q > 0) {
    rows = ceil_div(ceil_div(p.chunk_len_q, p.stride), kScoringRowsPerCta) * kScoringRowsPerCta;
  } else {
    const int64_t per_row = pr.batch * pr.heads_q * nkb * int64_t(sizeof(float));
    rows = int64_t(kDefaultScratchBytes) / per_row / kScoringRowsPerCta * kScoringRowsPerCta;
  }
  return std::min(n_rows, std::max(rows, kScoringRowsPerCta));
}

// Sliding window: the scoring kernels score every causal block; the blocks before the window of
// each query block are then set to 0, as the CPU reference does. One thread per score.
__global__ void zero_outside_window_kernel(const Problem pr, int64_t block_size, float* scores) {
  const int64_t nqb = ceil_div(pr.max_len_q, block_size), nkb = ceil_div(pr.max_len_k, block_size);
  const int64_t n = pr.batch * pr.heads_q * nqb * nkb;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = e % nkb, i = (e / nkb) % nqb, b = e / (nkb * nqb * pr.heads_q);
    const BlockGeometry g = block_geometry(pr, b, block_size);
    if (i < g.num_q_blocks() && j < g.first_block(i)) scores[e] = 0.f;
  }
}

__global__ void fill_kernel(float* data, int64_t n, float value) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    data[i] = value;
}


std::string kernel_choice_reason(CudaKernel k) {
  if (k != CudaKernel::kAuto && k != CudaKernel::kSm80 && k != CudaKernel::kSm90)
    return message("kernel choice ", int32_t(k), " is unknown (auto 0, sm80 1, sm90 2)");
  return {};
}

bool scoring_runs_on_sm90(const ScoringParams& p) {
  if (p.kernel == CudaKernel::kSm80) return false;
  return p.kernel == CudaKernel::kSm90 || detail::sm90::device_runs_sm90();
}

}  // namespace


std::string unsupported_reason(const ScoringParams& p) {
  if (auto e = problem_reason(p.problem); !e.empty()) return e;
  if (auto e = view_reason("q", p.q, p.problem.head_dim); !e.empty()) return e;
  if (auto e = view_reason("k", p.k, p.problem.head_dim); !e.empty()) return e;
  if (p.q.dtype != p.k.dtype) return "q and k must share one dtype";
  if (p.stride < 1 || p.block_size < 1 || p.block_size % p.stride != 0)
    return message("stride ", p.stride, " must divide block_size ", p.block_size);
  const int64_t cols = p.block_size / p.stride;
  if (cols != 8 && cols != 16 && cols != 32 && cols != 64)
    return message("block_size / stride = ", cols,
                   " is not built for CUDA scoring; built: 8, 16, 32, 64 (e.g. 128 / 8, 128 / 16)");
  if (!p.block_scores) return "block_scores is null";
  if (p.sm90_loads != Sm90ScoringLoads::kAuto && p.sm90_loads != Sm90ScoringLoads::kGather)
    return message("sm90_loads ", int32_t(p.sm90_loads), " is unknown (auto 0, gather 1)");
  if (auto e = kernel_choice_reason(p.kernel); !e.empty()) return e;
  if (p.kernel == CudaKernel::kSm90 && !detail::sm90::device_runs_sm90())
    return "the sm_90a scoring kernel needs a compute capability 9.0 GPU (H100/H200)";
  return {};
}

std::string unsupported_reason(const SelectionParams& p) {
  if (auto e = problem_reason(p.problem); !e.empty()) return e;
  if (p.block_size < 1) return message("block_size ", p.block_size, " must be positive");
  if (!p.block_scores || !p.thresholds || !p.kv_block_count || !p.kv_block_index)
    return "block_scores, thresholds, kv_block_count and kv_block_index must be set";
  if (p.rule != SelectionRule::kSmallestSet && p.rule != SelectionRule::kPublished)
    return message("selection rule ", int32_t(p.rule), " is unknown (smallest 0, published 1)");
  if (p.rule == SelectionRule::kPublished && p.problem.causal && !(p.keep_sink && p.keep_diagonal))
    return "the published selection rule needs keep_sink and keep_diagonal in causal mode";
  return {};
}

std::string unsupported_reason(const AttentionParams& p) {
  if (auto e = problem_reason(p.problem); !e.empty()) return e;
  if (auto e = view_reason("q", p.q, p.problem.head_dim); !e.empty()) return e;
  if (auto e = view_reason("k", p.k, p.problem.head_dim); !e.empty()) return e;
  if (auto e = view_reason("v", p.v, p.problem.head_dim); !e.empty()) return e;
  const TensorView out{p.out.data, p.out.dtype, p.out.batch_stride, p.out.head_stride,
                       p.out.token_stride};
  if (auto e = view_reason("out", out, p.problem.head_dim); !e.empty()) return e;
  if (p.q.dtype != p.k.dtype || p.q.dtype != p.v.dtype || p.q.dtype != p.out.dtype)
    return "q, k, v and out must share one dtype";
  if (p.block_size < 64 || p.block_size % 64 != 0)
    return message("block_size ", p.block_size,
                   " is not built for CUDA attention; built: multiples of 64 (64, 128, 256)");
  if ((p.kv_block_count == nullptr) != (p.kv_block_index == nullptr))
    return "kv_block_count and kv_block_index must be given together";
  if (auto e = kernel_choice_reason(p.kernel); !e.empty()) return e;
  if (p.kernel == CudaKernel::kSm90) {
    if (!detail::sm90::device_runs_sm90())
      return "the sm_90a attention kernel needs a compute capability 9.0 GPU (H100/H200)";
    if (auto e = detail::sm90::attention_unsupported_reason(p); !e.empty())
      return "the sm_90a attention kernel does not run these parameters: " + e;
  }
  return {};
}

static bool runs_on_sm90(const AttentionParams& p) {
  if (p.kernel == CudaKernel::kSm90) return true;  // checked by unsupported_reason
  if (p.kernel == CudaKernel::kSm80) return false;
  return detail::sm90::device_runs_sm90() && detail::sm90::attention_unsupported_reason(p).empty();
}

std::string scoring_load_path(const ScoringParams& p) {
  if (!scoring_runs_on_sm90(p)) return "sm80";
  return detail::sm90::scoring_loads(p) == detail::sm90::ScoringLoadPath::kTma ? "tma" : "gather";
}

size_t antidiagonal_scores_workspace_bytes(const ScoringParams& p) {
  const Problem& pr = p.problem;
  const int64_t nkb = ceil_div(pr.max_len_k, p.block_size);
  return size_t(pr.batch * pr.heads_q * scoring_chunk_rows(p) * nkb) * sizeof(float);
}

cudaError_t antidiagonal_scores(const ScoringParams& p, void* workspace, size_t workspace_bytes,
                                cudaStream_t stream) {
  if (!supports(p)) return cudaErrorInvalidValue;
  if (!workspace || workspace_bytes < antidiagonal_scores_workspace_bytes(p))
    return cudaErrorInvalidValue;
  const Problem& pr = p.problem;
  const int64_t nqb = ceil_div(pr.max_len_q, p.block_size), nkb = ceil_div(pr.max_len_k, p.block_size);
  cudaError_t err = cudaMemsetAsync(p.block_scores, 0,
                                    size_t(pr.batch * pr.heads_q * nqb * nkb) * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  const int64_t chunk_rows = scoring_chunk_rows(p);
  const int64_t total_rows = ceil_div(pr.max_len_q, p.stride);
  const bool sm90 = scoring_runs_on_sm90(p);
  // Every launch keeps the full chunk pitch in the scratch; CTAs past the last row exit at once.
  for (int64_t row_begin = 0; row_begin < total_rows; row_begin += chunk_rows) {
    const detail::ScoringChunk chunk{row_begin, chunk_rows, static_cast<float*>(workspace)};
    const bool bf16 = p.q.dtype == DType::kBFloat16;
    const int64_t d = pr.head_dim;
    if (sm90) {
      if (bf16 && d == 64) err = detail::launch_antidiagonal_scoring_sm90<__nv_bfloat16, 64>(p, chunk, stream);
      else if (bf16) err = detail::launch_antidiagonal_scoring_sm90<__nv_bfloat16, 128>(p, chunk, stream);
      else if (d == 64) err = detail::launch_antidiagonal_scoring_sm90<__half, 64>(p, chunk, stream);
      else err = detail::launch_antidiagonal_scoring_sm90<__half, 128>(p, chunk, stream);
      if (err != cudaSuccess) return err;
      continue;
    }
    if (bf16 && d == 64) err = detail::launch_antidiagonal_scoring<__nv_bfloat16, 64>(p, chunk, stream);
    else if (bf16) err = detail::launch_antidiagonal_scoring<__nv_bfloat16, 128>(p, chunk, stream);
    else if (d == 64) err = detail::launch_antidiagonal_scoring<__half, 64>(p, chunk, stream);
    else err = detail::launch_antidiagonal_scoring<__half, 128>(p, chunk, stream);
    if (err != cudaSuccess) return err;
  }
  if (pr.window > 0) {
    const int64_t n = pr.batch * pr.heads_q * nqb * nkb;
    zero_outside_window_kernel<<<unsigned(std::min<int64_t>(ceil_div(n, 256), 4096)), 256, 0,
                                 stream>>>(pr, p.block_size, p.block_scores);
    if (err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t select_blocks(const SelectionParams& p, cudaStream_t stream) {
  if (!supports(p)) return cudaErrorInvalidValue;
  return detail::launch_select_blocks(p, stream);
}

cudaError_t block_sparse_attention(const AttentionParams& p, cudaStream_t stream) {
  if (!supports(p)) return cudaErrorInvalidValue;
  const Problem& pr = p.problem;
  if (p.lse && pr.cu_seqlens_q) {
    // Rows past a sequence's length are not visited; give them the reference's -inf.
    const int64_t n = pr.batch * pr.heads_q * pr.max_len_q;
    fill_kernel<<<unsigned(std::min<int64_t>(ceil_div(n, 256), 4096)), 256, 0, stream>>>(
        p.lse, n, -INFINITY);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  const bool bf16 = p.q.dtype == DType::kBFloat16;
  if (runs_on_sm90(p)) {
    if (bf16 && pr.head_dim == 64) return detail::launch_block_sparse_attention_sm90<__nv_bfloat16, 64>(p, stream);
    if (bf16) return detail::launch_block_sparse_attention_sm90<__nv_bfloat16, 128>(p, stream);
    if (pr.head_dim == 64) return detail::launch_block_sparse_attention_sm90<__half, 64>(p, stream);
    return detail::launch_block_sparse_attention_sm90<__half, 128>(p, stream);
  }
  if (bf16 && pr.head_dim == 64) return detail::launch_block_sparse_attention<__nv_bfloat16, 64>(p, stream);
  if (bf16) return detail::launch_block_sparse_attention<__nv_bfloat16, 128>(p, stream);
  if (pr.head_dim == 64) return detail::launch_block_sparse_attention<__half, 64>(p, stream);
  return detail::launch_block_sparse_attention<__half, 128>(p, stream);
}

}  // namespace xattn::kernels::cuda
