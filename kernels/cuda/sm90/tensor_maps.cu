// TMA descriptors of the attention and scoring operands (see tensor_maps.h).
#include "tensor_maps.h"

#include <cudaTypedefs.h>

#include <initializer_list>

#include "xattn/error.h"

namespace xattn::kernels::cuda::detail::sm90 {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // clear the sticky-free error this query may leave
      return PFN_cuTensorMapEncodeTiled_v12000(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encoder;
}

// TMA strides are in bytes, multiples of 16 and below 2^40; a dimension of extent 1 is never
// stepped, so any valid stride stands in for whatever the view holds there.
constexpr int64_t kMaxStrideBytes = int64_t(1) << 40;
bool stride_ok(int64_t elements) {
  const int64_t bytes = elements * 2;
  return bytes > 0 && bytes % 16 == 0 && bytes < kMaxStrideBytes;
}
int64_t stride_or_placeholder(int64_t extent, int64_t elements) {
  return extent > 1 ? elements * 2 : 16;
}

struct MapShape {
  int64_t tokens, heads, batch;
};

MapShape q_shape(const AttentionParams& p) {
  const Problem& pr = p.problem;
  if (pr.cu_seqlens_q) return {p.packed_tokens_q, pr.heads_q, 1};
  return {pr.max_len_q, pr.heads_q, pr.batch};
}
MapShape k_shape(const AttentionParams& p) {
  const Problem& pr = p.problem;
  if (pr.cu_seqlens_k) return {p.packed_tokens_k, pr.heads_kv, 1};
  return {pr.max_len_k, pr.heads_kv, pr.batch};
}

// Empty when a dimension of `extent` steps by `elements` TMA can express (one of extent 1 is never
// stepped), else a message naming it.
std::string stride_reason(const char* name, const char* dimension, int64_t extent,
                          int64_t elements) {
  if (extent <= 1 || stride_ok(elements)) return {};
  return xattn::detail::concat(name, " ", dimension, " stride ", elements, " is not TMA-addressable");
}

std::string view_reason(const char* name, const TensorView& v, const MapShape& shape) {
  for (const std::string& e : {stride_reason(name, "token", shape.tokens, v.token_stride),
                               stride_reason(name, "head", shape.heads, v.head_stride),
                               stride_reason(name, "batch", shape.batch, v.batch_stride)})
    if (!e.empty()) return e;
  if (shape.tokens >= (int64_t(1) << 31)) return xattn::detail::concat(name, " has too many tokens");
  return {};
}

// A tiled map of `rank` dimensions (innermost first; strides in elements for dimensions 1..rank-1)
// with the 128-byte swizzle every sm_90a operand uses.
cudaError_t encode_tiled(CUtensorMap* map, const TensorView& v, int rank, const int64_t* dims,
                         const int64_t* stride_elements, const uint32_t* box) {
  const auto encoder = tensor_map_encoder();
  if (!encoder) return cudaErrorNotSupported;
  const CUtensorMapDataType type = v.dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                               : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  cuuint64_t global_dims[5], strides[4];
  cuuint32_t boxes[5], element_strides[5];
  for (int i = 0; i < rank; ++i) {
    global_dims[i] = cuuint64_t(dims[i]);
    boxes[i] = box[i];
    element_strides[i] = 1;
    if (i > 0) strides[i - 1] = cuuint64_t(stride_or_placeholder(dims[i], stride_elements[i - 1]));
  }
  const CUresult r = encoder(map, type, cuuint32_t(rank), const_cast<void*>(v.data), global_dims,
                             strides, boxes, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                             CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t encode(CUtensorMap* map, const TensorView& v, const MapShape& shape, int64_t head_dim,
                   int box_rows) {
  const int64_t dims[4] = {head_dim, shape.tokens, shape.heads, shape.batch};
  const int64_t strides[3] = {v.token_stride, v.head_stride, v.batch_stride};
  const uint32_t box[4] = {64, uint32_t(box_rows), 1, 1};
  return encode_tiled(map, v, 4, dims, strides, box);
}

// The strided view of one operand of the scoring kernel (see encode_scoring_maps).
struct StridedShape {
  int64_t stride, rows, heads, batch;
};

std::string strided_view_reason(const char* name, const TensorView& v, const StridedShape& s) {
  for (const std::string& e :
       {stride_reason(name, "token", s.stride, v.token_stride),
        stride_reason(name, "strided-row", s.rows, v.token_stride * s.stride),
        stride_reason(name, "head", s.heads, v.head_stride),
        stride_reason(name, "batch", s.batch, v.batch_stride)})
    if (!e.empty()) return e;
  if (s.rows < 1 || s.rows >= (int64_t(1) << 31))
    return xattn::detail::concat(name, " has ", s.rows, " strided rows");
  if (reinterpret_cast<uintptr_t>(v.data) % 16) return xattn::detail::concat(name, " is not 16-byte aligned");
  return {};
}

cudaError_t encode_strided(CUtensorMap* map, const TensorView& v, const StridedShape& s,
                           int64_t head_dim, int box_rows) {
  const int64_t dims[5] = {head_dim, s.stride, s.rows, s.heads, s.batch};
  const int64_t strides[4] = {v.token_stride, v.token_stride * s.stride, v.head_stride,
                              v.batch_stride};
  const uint32_t box[5] = {64, 1, uint32_t(box_rows), 1, 1};
  return encode_tiled(map, v, 5, dims, strides, box);
}

StridedShape q_strided(const ScoringParams& p) {
  const Problem& pr = p.problem;
  return {p.stride, pr.max_len_q / p.stride, pr.heads_q, pr.batch};
}
StridedShape k_strided(const ScoringParams& p) {
  const Problem& pr = p.problem;
  return {p.stride, pr.max_len_k / p.stride, pr.heads_kv, pr.batch};
}

}  // namespace

std::string attention_unsupported_reason(const AttentionParams& p) {
  const Problem& pr = p.problem;
  if (p.block_size != 128)
    return xattn::detail::concat("block_size ", p.block_size, " (the sm_90a kernel runs 128)");
  if (pr.head_dim != 64 && pr.head_dim != 128)
    return xattn::detail::concat("head_dim ", pr.head_dim, " (the sm_90a kernel runs 64 and 128)");
  if ((pr.cu_seqlens_q && p.packed_tokens_q < 1) || (pr.cu_seqlens_k && p.packed_tokens_k < 1))
    return "varlen without packed_tokens_q / packed_tokens_k (they bound the TMA loads)";
  const TensorView out{p.out.data, p.out.dtype, p.out.batch_stride, p.out.head_stride,
                       p.out.token_stride};
  if (auto e = view_reason("q", p.q, q_shape(p)); !e.empty()) return e;
  if (auto e = view_reason("k", p.k, k_shape(p)); !e.empty()) return e;
  if (auto e = view_reason("v", p.v, k_shape(p)); !e.empty()) return e;
  if (reinterpret_cast<uintptr_t>(p.q.data) % 16 || reinterpret_cast<uintptr_t>(p.k.data) % 16 ||
      reinterpret_cast<uintptr_t>(p.v.data) % 16 || reinterpret_cast<uintptr_t>(out.data) % 16)
    return "q, k, v and out must be 16-byte aligned";
  return {};
}

std::string scoring_tma_unsupported_reason(const ScoringParams& p) {
  const Problem& pr = p.problem;
  if (pr.cu_seqlens_q || pr.cu_seqlens_k) return "varlen (sequences of different lengths)";
  if (p.stride < 1 || pr.max_len_q % p.stride || pr.max_len_k % p.stride)
    return xattn::detail::concat("lengths ", pr.max_len_q, " and ", pr.max_len_k,
                                 " are not both multiples of the stride ", p.stride);
  if (pr.head_dim % 64) return xattn::detail::concat("head_dim ", pr.head_dim);
  if (auto e = strided_view_reason("q", p.q, q_strided(p)); !e.empty()) return e;
  return strided_view_reason("k", p.k, k_strided(p));
}

ScoringLoadPath scoring_loads(const ScoringParams& p) {
  if (p.sm90_loads == Sm90ScoringLoads::kGather || !scoring_tma_unsupported_reason(p).empty())
    return ScoringLoadPath::kGather;
  return ScoringLoadPath::kTma;
}

bool device_runs_sm90() {
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major == 9 && minor == 0 && tensor_map_encoder() != nullptr;
}

cudaError_t encode_attention_maps(const AttentionParams& p, int box_rows, CUtensorMap* q_map,
                                  CUtensorMap* k_map, CUtensorMap* v_map) {
  const int64_t d = p.problem.head_dim;
  if (cudaError_t e = encode(q_map, p.q, q_shape(p), d, box_rows); e != cudaSuccess) return e;
  if (cudaError_t e = encode(k_map, p.k, k_shape(p), d, box_rows); e != cudaSuccess) return e;
  return encode(v_map, p.v, k_shape(p), d, box_rows);
}

cudaError_t encode_scoring_maps(const ScoringParams& p, int q_box_rows, int k_box_rows,
                                CUtensorMap* q_map, CUtensorMap* k_map) {
  const int64_t d = p.problem.head_dim;
  if (cudaError_t e = encode_strided(q_map, p.q, q_strided(p), d, q_box_rows); e != cudaSuccess)
    return e;
  return encode_strided(k_map, p.k, k_strided(p), d, k_box_rows);
}

}  // namespace xattn::kernels::cuda::detail::sm90
