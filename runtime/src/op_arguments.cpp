#include "op_arguments.h"

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "xattn/error.h"

namespace xattn::runtime::op_arguments {
namespace {

// What the CUDA kernels are built for (kernels/include/xattn/kernels/cuda.h; the kernels check
// again before each launch).
bool cuda_head_dim(int64_t d) { return d == 64 || d == 128; }
bool cuda_scoring_blocks(int64_t block_size, int64_t stride) {
  const int64_t columns = block_size / stride;
  return columns == 8 || columns == 16 || columns == 32 || columns == 64;
}
bool cuda_attention_block(int64_t block_size) { return block_size >= 64 && block_size % 64 == 0; }

// The sizes of q, k or v in either layout.
struct Sizes {
  int64_t batch, heads, len, head_dim;
};

// [batch, heads, len, head_dim] (packed: false) or [total, heads, head_dim] (packed: true).
Sizes check_tensor(const at::Tensor& t, const char* name, bool packed) {
  XATTN_CHECK_ARG(t.defined(), name, " is undefined; pass a tensor");
  if (packed) {
    XATTN_CHECK_ARG(t.dim() == 3, name, " must be [total_", name[0] == 'q' ? "q" : "k", ", heads, ",
                    "head_dim] (flash-attn's varlen layout), got ", t.dim(), " dimensions ",
                    t.sizes());
  } else {
    XATTN_CHECK_ARG(t.dim() == 4, name, " must be [batch, heads, len, head_dim] (the layout of ",
                    "scaled_dot_product_attention), got ", t.dim(), " dimensions ", t.sizes());
  }
  const at::ScalarType dtype = t.scalar_type();
  XATTN_CHECK_ARG(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, name,
                  " has dtype ", dtype, "; supported: float32, float16, bfloat16");
  XATTN_CHECK_ARG(t.device().is_cpu() || t.device().is_cuda(), name, " is on ", t.device(),
                  "; pass CPU or CUDA tensors");
#ifndef XATTN_TORCH_HAS_CUDA
  XATTN_CHECK(!t.is_cuda(), ErrorKind::kCuda, name, " is a CUDA tensor, but this xattn was built ",
              "against a LibTorch without CUDA; rebuild with a CUDA LibTorch or pass CPU tensors");
#endif
  for (int64_t axis = 0; axis < t.dim(); ++axis)
    XATTN_CHECK_ARG(t.size(axis) >= 1, name, " has shape ", t.sizes(),
                    ": every size must be at least 1 (an empty sequence has nothing to attend)");
  const Sizes s = packed ? Sizes{1, t.size(1), t.size(0), t.size(2)}
                         : Sizes{t.size(0), t.size(1), t.size(2), t.size(3)};
  if (t.is_cuda()) {
    XATTN_CHECK_ARG(dtype != at::kFloat, name, " is a float32 CUDA tensor; the CUDA kernels are ",
                    "built for float16 and bfloat16: pass ", name, ".to(torch.bfloat16)");
    XATTN_CHECK_ARG(cuda_head_dim(s.head_dim), "head_dim ", s.head_dim,
                    " is not built for CUDA; built: 64, 128");
  }
  return s;
}

// A note for errors that a [batch, len, heads, head_dim] tensor (flash-attn's and transformers'
// q/k/v before the transpose) would cause: heads and len swapped.
const char* kLayoutHint =
    "; if q, k and v are [batch, len, heads, head_dim], pass q.transpose(1, 2) (likewise k, v)";

// q and k (and v when defined) of one problem.
void check_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor* v, bool packed) {
  const Sizes sq = check_tensor(q, "q", packed), sk = check_tensor(k, "k", packed);
  // Self-attention in [batch, len, heads, head_dim] with heads_q > heads_kv: the "heads" agree
  // (both len) and the "lengths" are heads_q > heads_kv.
  const bool swapped = !packed && sq.heads == sk.heads && sq.len > sk.len && sq.len % sk.len == 0;
  XATTN_CHECK_ARG(q.device() == k.device(), "q is on ", q.device(), " but k is on ", k.device(),
                  "; move them to the same device");
  XATTN_CHECK_ARG(q.scalar_type() == k.scalar_type(), "q is ", q.scalar_type(), " but k is ",
                  k.scalar_type(), "; use one dtype");
  XATTN_CHECK_ARG(sq.batch == sk.batch, "batch of q (", sq.batch, ") and k (", sk.batch,
                  ") differ");
  XATTN_CHECK_ARG(sq.head_dim == sk.head_dim, "head_dim of q (", sq.head_dim, ") and k (",
                  sk.head_dim, ") differ");
  XATTN_CHECK_ARG(sq.heads % sk.heads == 0, "heads of q (", sq.heads,
                  ") must be a multiple of heads of k and v (", sk.heads,
                  "): grouped-query attention shares each k/v head among heads_q / heads_kv ",
                  "query heads", packed ? "" : kLayoutHint);
  if (!packed)
    XATTN_CHECK_ARG(sq.len <= sk.len, "len_q ", sq.len, " must be at most len_k ", sk.len,
                    " (queries are the last len_q positions of the keys)",
                    swapped ? kLayoutHint : "");
  if (v) {
    check_tensor(*v, "v", packed);
    XATTN_CHECK_ARG(v->sizes() == k.sizes(), "v ", v->sizes(), " must have the shape of k ",
                    k.sizes());
    XATTN_CHECK_ARG(v->scalar_type() == k.scalar_type() && v->device() == k.device(), "v is ",
                    v->scalar_type(), " on ", v->device(), " but k is ", k.scalar_type(), " on ",
                    k.device(), "; use one dtype and device");
  }
}

void check_block_size(int64_t block_size, bool cuda, bool attention) {
  XATTN_CHECK_ARG(block_size >= 1 && block_size <= (int64_t(1) << 30) &&
                      (block_size & (block_size - 1)) == 0,
                  "block_size ", block_size, " must be a power of two (64, 128 or 256)");
  if (cuda && attention)
    XATTN_CHECK_ARG(cuda_attention_block(block_size), "block_size ", block_size,
                    " is not built for CUDA attention; built: multiples of 64 (64, 128, 256)");
}

void check_stride(int64_t stride, int64_t block_size, bool cuda) {
  XATTN_CHECK_ARG(stride >= 1 && block_size % stride == 0, "stride ", stride,
                  " must be a positive divisor of block_size ", block_size, " (e.g. 8 or 16)");
  if (cuda)
    XATTN_CHECK_ARG(cuda_scoring_blocks(block_size, stride), "block_size / stride = ",
                    block_size / stride, " is not built for CUDA scoring; built: 8, 16, 32, 64 ",
                    "(e.g. block_size 128 with stride 8 or 16)");
}

void check_scale(std::optional<double> scale) {
  if (scale)
    XATTN_CHECK_ARG(std::isfinite(*scale) && *scale > 0, "scale ", *scale,
                    " must be a finite positive number (or None for the default)");
}

// One τ in [0, 1] per query head; floating point; any device (read on the host). len_q (0 for
// packed tensors) names the likely cause when the count matches it instead: q passed as
// [batch, len, heads, head_dim].
void check_thresholds(const at::Tensor& thresholds, int64_t heads_q, int64_t len_q) {
  XATTN_CHECK_ARG(thresholds.defined(), "thresholds is undefined; pass a float tensor [heads_q]");
  XATTN_CHECK_ARG(at::isFloatingType(thresholds.scalar_type()), "thresholds has dtype ",
                  thresholds.scalar_type(), "; pass a floating-point tensor [heads_q] of τ in ",
                  "[0, 1] (e.g. torch.float32)");
  XATTN_CHECK_ARG(thresholds.dim() != 1 || thresholds.numel() == heads_q ||
                      thresholds.numel() != len_q,
                  "thresholds has ", thresholds.numel(), " values, one per head, but q has ",
                  heads_q, " heads and len ", len_q, ": q looks like [batch, len, heads, ",
                  "head_dim]; pass q.transpose(1, 2), k.transpose(1, 2) and v.transpose(1, 2) ",
                  "([batch, heads, len, head_dim], the layout of scaled_dot_product_attention)");
  XATTN_CHECK_ARG(thresholds.dim() == 1 && thresholds.numel() == heads_q, "thresholds has shape ",
                  thresholds.sizes(), "; pass one τ per query head: [", heads_q, "]");
  const at::Tensor values = thresholds.detach().to(at::kCPU, at::kDouble).contiguous();
  const double* tau = values.data_ptr<double>();
  for (int64_t h = 0; h < heads_q; ++h)
    XATTN_CHECK_ARG(std::isfinite(tau[h]) && tau[h] >= 0.0 && tau[h] <= 1.0, "thresholds[", h,
                    "] is ", tau[h], "; every τ must lie in [0, 1] (1 keeps every block)");
}

// Host copy of cu_seqlens: an integer tensor [batch + 1] on any device.
std::vector<int64_t> offsets_of(const at::Tensor& cu_seqlens, const char* name) {
  XATTN_CHECK_ARG(cu_seqlens.defined(), name, " is undefined; pass an integer tensor [batch + 1]");
  const at::ScalarType dtype = cu_seqlens.scalar_type();
  XATTN_CHECK_ARG(at::isIntegralType(dtype, /*includeBool=*/false), name, " has dtype ", dtype,
                  "; pass an integer tensor (torch.int32) [batch + 1] of sequence offsets");
  XATTN_CHECK_ARG(cu_seqlens.dim() == 1 && cu_seqlens.numel() >= 2, name, " has shape ",
                  cu_seqlens.sizes(), "; pass [batch + 1] offsets: 0, end of sequence 1, ...");
  const at::Tensor values = cu_seqlens.detach().to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(values.data_ptr<int64_t>(),
                              values.data_ptr<int64_t>() + values.numel());
}

}  // namespace

void check_estimate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& thresholds,
                    int64_t stride, int64_t block_size, std::optional<double> scale) {
  check_problem(q, k, nullptr, false);
  check_block_size(block_size, q.is_cuda(), false);
  check_stride(stride, block_size, q.is_cuda());
  check_scale(scale);
  check_thresholds(thresholds, q.size(1), q.size(2));
}

int64_t check_block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& mask, std::optional<double> scale) {
  check_problem(q, k, &v, false);
  check_scale(scale);
  XATTN_CHECK_ARG(mask.defined(), "mask is undefined; pass the bool mask estimate returns");
  XATTN_CHECK_ARG(mask.scalar_type() == at::kBool, "mask has dtype ", mask.scalar_type(),
                  "; pass a bool tensor (the mask estimate returns, or mask.bool())");
  XATTN_CHECK_ARG(mask.device() == q.device(), "mask is on ", mask.device(), " but q is on ",
                  q.device(), "; move it to q's device");
  const int64_t batch = q.size(0), heads = q.size(1), len_q = q.size(2), len_k = k.size(2);
  XATTN_CHECK_ARG(mask.dim() == 4 && mask.size(0) == batch && mask.size(1) == heads, "mask has ",
                  "shape ", mask.sizes(), "; expected [batch, heads_q, nQB, nKB] with batch ",
                  batch, " and heads_q ", heads);
  for (int64_t block : {128, 64, 256, 32, 512, 16}) {
    if ((len_q + block - 1) / block == mask.size(2) && (len_k + block - 1) / block == mask.size(3)) {
      check_block_size(block, q.is_cuda(), true);
      return block;
    }
  }
  XATTN_CHECK_ARG(false, "mask has ", mask.size(2), "x", mask.size(3), " blocks, which fits no ",
                  "block size (16 to 512) for len_q ", len_q, " and len_k ", len_k,
                  "; at block size 128 it would be ", (len_q + 127) / 128, "x", (len_k + 127) / 128);
  return 0;
}

void check_block_sparse_attention_compact(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const at::Tensor& kv_block_count,
                                          const at::Tensor& kv_block_index, int64_t block_size,
                                          std::optional<double> scale) {
  check_problem(q, k, &v, false);
  check_scale(scale);
  check_block_size(block_size, q.is_cuda(), true);
  const int64_t nqb = (q.size(2) + block_size - 1) / block_size;
  const int64_t nkb = (k.size(2) + block_size - 1) / block_size;
  const std::vector<int64_t> rows = {q.size(0), q.size(1), nqb};
  const std::vector<int64_t> entries = {q.size(0), q.size(1), nqb, nkb};
  for (const auto& [t, name, shape] :
       {std::tuple<const at::Tensor&, const char*, const std::vector<int64_t>&>{
            kv_block_count, "kv_block_count", rows},
        {kv_block_index, "kv_block_index", entries}}) {
    XATTN_CHECK_ARG(t.defined(), name, " is undefined; pass the int32 tensor select_blocks gives");
    XATTN_CHECK_ARG(t.scalar_type() == at::kInt, name, " has dtype ", t.scalar_type(),
                    "; pass torch.int32");
    XATTN_CHECK_ARG(t.device() == q.device(), name, " is on ", t.device(), " but q is on ",
                    q.device(), "; move it to q's device");
    XATTN_CHECK_ARG(t.sizes() == at::IntArrayRef(shape), name, " has shape ", t.sizes(),
                    "; expected ", at::IntArrayRef(shape), " for block_size ", block_size);
  }
}

void check_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& thresholds, int64_t stride, int64_t block_size,
                   std::optional<double> scale) {
  check_problem(q, k, &v, false);
  check_block_size(block_size, q.is_cuda(), true);
  check_stride(stride, block_size, q.is_cuda());
  check_scale(scale);
  check_thresholds(thresholds, q.size(1), q.size(2));
}

VarlenOffsets check_prefill_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                   const at::Tensor& thresholds, int64_t stride,
                                   int64_t block_size) {
  check_problem(q, k, &v, true);
  check_block_size(block_size, q.is_cuda(), true);
  check_stride(stride, block_size, q.is_cuda());
  check_thresholds(thresholds, q.size(1), 0);
  VarlenOffsets offsets{offsets_of(cu_seqlens_q, "cu_seqlens_q"),
                        offsets_of(cu_seqlens_k, "cu_seqlens_k")};
  XATTN_CHECK_ARG(offsets.q.size() == offsets.k.size(), "cu_seqlens_q has ", offsets.q.size(),
                  " entries and cu_seqlens_k ", offsets.k.size(), "; both need batch + 1");
  XATTN_CHECK_ARG(offsets.q.front() == 0 && offsets.k.front() == 0, "cu_seqlens_q and ",
                  "cu_seqlens_k must start at 0, got ", offsets.q.front(), " and ",
                  offsets.k.front());
  const int64_t total_q = q.size(0), total_k = k.size(0);
  XATTN_CHECK_ARG(offsets.q.back() == total_q, "cu_seqlens_q ends at ", offsets.q.back(),
                  " but q holds ", total_q, " rows; the last offset is the total row count");
  XATTN_CHECK_ARG(offsets.k.back() == total_k, "cu_seqlens_k ends at ", offsets.k.back(),
                  " but k and v hold ", total_k, " rows; the last offset is the total row count");
  XATTN_CHECK_ARG(total_k <= std::numeric_limits<int32_t>::max(),
                  "a packed batch must hold fewer than 2^31 rows");
  for (size_t b = 0; b + 1 < offsets.q.size(); ++b) {
    const int64_t len_q = offsets.q[b + 1] - offsets.q[b], len_k = offsets.k[b + 1] - offsets.k[b];
    XATTN_CHECK_ARG(len_q >= 1 && len_q <= len_k, "sequence ", b, " has len_q ", len_q,
                    " and len_k ", len_k, " (cu_seqlens_q ", offsets.q[b], " to ",
                    offsets.q[b + 1], ", cu_seqlens_k ", offsets.k[b], " to ", offsets.k[b + 1],
                    "); each sequence needs 1 <= len_q <= len_k, so the offsets must ascend");
  }
  return offsets;
}

void check_window(int64_t window, bool causal) {
  XATTN_CHECK_ARG(window >= 0, "window ", window,
                  " must be >= 0 (a sliding window of that many keys; 0: none)");
  XATTN_CHECK_ARG(window == 0 || causal, "window ", window,
                  " needs causal=True (a sliding window looks back from each query)");
}

}  // namespace xattn::runtime::op_arguments
