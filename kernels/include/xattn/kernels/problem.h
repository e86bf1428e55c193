// Shapes, tensor views and block geometry shared by every XAttention kernel family.
//
// Nothing here depends on LibTorch or on the CUDA runtime: the same structs are filled by the
// runtime for the CPU reference (host pointers) and for the CUDA kernels (device pointers).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define XATTN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define XATTN_HOST_DEVICE inline
#endif

namespace xattn::kernels {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

// Read-only view of q, k or v. Logical layout [batch, heads, len, head_dim] with unit stride on
// head_dim; strides are in elements. For variable-length batches the sequences are packed along
// the token axis and `batch_stride` is ignored: sequence b starts at token cu_seqlens[b].
struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kFloat32;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t token_stride = 0;
};

// Writable view with the same conventions (the attention output).
struct MutableTensorView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t token_stride = 0;
};

// The attention problem: head counts, lengths, the causal convention and the sliding window.
// Causal attention is bottom-right aligned: query i of a sequence sits at absolute position
// len_k - len_q + i. With cu_seqlens_* set, the lengths vary per sequence and max_len_* bound them.
// window > 0 (causal only): the query at position p sees keys p - window + 1 .. p, as in
// transformers' sliding-window attention (Mistral, Phi-3, Qwen2 layer_types); 0: no window.
struct Problem {
  int64_t batch = 1;
  int64_t heads_q = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 64;
  int64_t max_len_q = 0;
  int64_t max_len_k = 0;
  const int32_t* cu_seqlens_q = nullptr;  // [batch + 1] or null for equal lengths
  const int32_t* cu_seqlens_k = nullptr;  // [batch + 1] or null for equal lengths
  bool causal = true;
  int64_t window = 0;

  XATTN_HOST_DEVICE int64_t len_q(int64_t b) const {
    return cu_seqlens_q ? int64_t(cu_seqlens_q[b + 1] - cu_seqlens_q[b]) : max_len_q;
  }
  XATTN_HOST_DEVICE int64_t len_k(int64_t b) const {
    return cu_seqlens_k ? int64_t(cu_seqlens_k[b + 1] - cu_seqlens_k[b]) : max_len_k;
  }
  // Absolute position of query 0 of sequence b (bottom-right alignment).
  XATTN_HOST_DEVICE int64_t query_offset(int64_t b) const { return len_k(b) - len_q(b); }
  XATTN_HOST_DEVICE int64_t group_size() const { return heads_q / heads_kv; }
  XATTN_HOST_DEVICE int64_t kv_head(int64_t hq) const { return hq / (heads_q / heads_kv); }
};

// Element offset of (sequence b, head h, token 0) in a view.
XATTN_HOST_DEVICE int64_t sequence_base(const int32_t* cu_seqlens, int64_t b, int64_t h,
                                        int64_t batch_stride, int64_t head_stride,
                                        int64_t token_stride) {
  const int64_t token0 = cu_seqlens ? int64_t(cu_seqlens[b]) : 0;
  const int64_t batch_part = cu_seqlens ? 0 : b * batch_stride;
  return batch_part + h * head_stride + token0 * token_stride;
}

XATTN_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Block geometry of one sequence. Query block i covers queries [i*bs, min((i+1)*bs, len_q)),
// key block j covers keys [j*bs, min((j+1)*bs, len_k)). Row i may attend to key blocks
// first_block(i) .. end_block(i) - 1: with a sliding window, the blocks whose every key lies
// before the window of the block's first query are not allowed.
struct BlockGeometry {
  int64_t len_q, len_k, block_size, query_offset;
  bool causal;
  int64_t window = 0;

  XATTN_HOST_DEVICE int64_t num_q_blocks() const { return ceil_div(len_q, block_size); }
  XATTN_HOST_DEVICE int64_t num_k_blocks() const { return ceil_div(len_k, block_size); }
  // The key block holding the last query of block i (its absolute position). In causal mode it is
  // the last allowed key block of row i; in both modes it is the row's "diagonal" block.
  XATTN_HOST_DEVICE int64_t diagonal_block(int64_t i) const {
    int64_t last_query = (i + 1) * block_size < len_q ? (i + 1) * block_size : len_q;
    int64_t d = (query_offset + last_query - 1) / block_size;
    int64_t nk = num_k_blocks();
    return d < nk - 1 ? (d < 0 ? 0 : d) : nk - 1;
  }
  // The key block holding the first query of block i (its absolute position); the diagonal
  // block when the queries are aligned to blocks. With a sliding window selection forces it
  // beside the diagonal, so that every row keeps its own position.
  XATTN_HOST_DEVICE int64_t first_diagonal_block(int64_t i) const {
    const int64_t d = (query_offset + i * block_size) / block_size;
    const int64_t last = diagonal_block(i);
    return d < last ? d : last;
  }
  // First key the queries of block i may see: the window start of its first query (0 without a
  // window).
  XATTN_HOST_DEVICE int64_t first_visible_key(int64_t i) const {
    const int64_t first = query_offset + i * block_size - window + 1;
    return window > 0 && causal && first > 0 ? first : 0;
  }
  // First key block query block i may attend to.
  XATTN_HOST_DEVICE int64_t first_block(int64_t i) const {
    const int64_t f = first_visible_key(i) / block_size;
    const int64_t last = causal ? diagonal_block(i) : num_k_blocks() - 1;
    return f < last ? f : last;
  }
  // One past the last key block query block i may attend to.
  XATTN_HOST_DEVICE int64_t end_block(int64_t i) const {
    return causal ? diagonal_block(i) + 1 : num_k_blocks();
  }
  // Number of key blocks query block i may attend to (first_block .. end_block - 1).
  XATTN_HOST_DEVICE int64_t allowed_blocks(int64_t i) const { return end_block(i) - first_block(i); }
};

XATTN_HOST_DEVICE BlockGeometry block_geometry(const Problem& p, int64_t b, int64_t block_size) {
  return BlockGeometry{p.len_q(b), p.len_k(b), block_size, p.query_offset(b), p.causal, p.window};
}

}  // namespace xattn::kernels
