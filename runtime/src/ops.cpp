// XAttention on LibTorch tensors: checks, params from tensors, and dispatch to the CPU reference
// or (for CUDA tensors, when LibTorch has CUDA) to the kernels.
#include "xattn/ops.h"

#include <cmath>
#include <cstdlib>

#include "cuda_dispatch.h"
#include "xattn/error.h"
#include "xattn/kernels/cpu.h"

namespace xattn::runtime {

#ifndef XATTN_TORCH_HAS_CUDA
// Without a CUDA LibTorch, on_cuda() rejects CUDA tensors before any of these is reached.
namespace cuda_dispatch {
void antidiagonal_scores(const kernels::ScoringParams&) { std::abort(); }
void select_blocks(const kernels::SelectionParams&) { std::abort(); }
void block_sparse_attention(const kernels::AttentionParams&) { std::abort(); }
std::string device_name(int) { std::abort(); }
}  // namespace cuda_dispatch
#endif

namespace {

using kernels::DType;

DType to_kernel_dtype(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      XATTN_CHECK_ARG(false, name, " has dtype ", t.scalar_type(),
                      "; supported: float32, float16, bfloat16");
  }
  return DType::kFloat32;
}

// [batch, heads, len, head_dim] with unit stride on head_dim (a copy is made otherwise).
at::Tensor checked_qkv(const at::Tensor& t, const char* name) {
  XATTN_CHECK_ARG(t.defined(), name, " is undefined");
  XATTN_CHECK_ARG(t.dim() == 4, name, " must be [batch, heads, len, head_dim], got ", t.dim(),
                  " dimensions ", t.sizes());
  to_kernel_dtype(t, name);
  return t.stride(3) == 1 ? t : t.contiguous();
}

kernels::TensorView view_of(const at::Tensor& t) {
  return {t.data_ptr(), to_kernel_dtype(t, "tensor"), t.stride(0), t.stride(1), t.stride(2)};
}

kernels::Problem problem_of(const at::Tensor& q, const at::Tensor& k, bool causal,
                            int64_t window) {
  XATTN_CHECK_ARG(q.device() == k.device(), "q is on ", q.device(), " but k is on ", k.device(),
                  "; move them to the same device");
  XATTN_CHECK_ARG(q.scalar_type() == k.scalar_type(), "q is ", q.scalar_type(), " but k is ",
                  k.scalar_type(), "; use one dtype");
  XATTN_CHECK_ARG(q.size(0) == k.size(0), "batch of q (", q.size(0), ") and k (", k.size(0),
                  ") differ");
  XATTN_CHECK_ARG(q.size(3) == k.size(3), "head_dim of q (", q.size(3), ") and k (", k.size(3),
                  ") differ");
  XATTN_CHECK_ARG(k.size(1) > 0 && q.size(1) % k.size(1) == 0, "heads of q (", q.size(1),
                  ") must be a multiple of heads of k (", k.size(1), ")");
  XATTN_CHECK_ARG(q.size(2) >= 1 && q.size(2) <= k.size(2), "len_q ", q.size(2),
                  " must be in [1, len_k = ", k.size(2),
                  "] (queries are the last len_q positions of the keys)");
  kernels::Problem p;
  p.batch = q.size(0);
  p.heads_q = q.size(1);
  p.heads_kv = k.size(1);
  p.head_dim = q.size(3);
  p.max_len_q = q.size(2);
  p.max_len_k = k.size(2);
  p.causal = causal;
  p.window = window;
  XATTN_CHECK_ARG(window >= 0, "window ", window, " must be >= 0 (0: no sliding window)");
  XATTN_CHECK_ARG(window == 0 || causal, "a sliding window (", window,
                  ") needs causal attention");
  return p;
}

bool on_cuda(const at::Tensor& t) {
  if (t.device().is_cpu()) return false;
  XATTN_CHECK_ARG(t.is_cuda(), "tensors on ", t.device(), " are not supported (use CPU or CUDA)");
#ifndef XATTN_TORCH_HAS_CUDA
  XATTN_CHECK(false, ErrorKind::kCuda,
              "got CUDA tensors, but this xattn was built against a LibTorch without CUDA; "
              "rebuild with a CUDA LibTorch or pass CPU tensors");
#endif
  return true;
}

template <typename Params>
void check_valid(const Params& params) {
  const std::string error = kernels::cpu::validate(params);
  XATTN_CHECK_ARG(error.empty(), error);
}

int64_t num_blocks(int64_t len, int64_t block_size) { return (len + block_size - 1) / block_size; }

void check_block_params(int64_t stride, int64_t block_size) {
  XATTN_CHECK_ARG(block_size > 0 && (block_size & (block_size - 1)) == 0,
                  "block_size ", block_size, " must be a power of two (64, 128 or 256)");
  XATTN_CHECK_ARG(stride > 0 && block_size % stride == 0, "stride ", stride,
                  " must divide block_size ", block_size, " (2, 4, 8, 16 or 32)");
}

// (count, ascending indices padded with -1) from a boolean block mask, on the mask's device.
std::pair<at::Tensor, at::Tensor> compact_from_mask(const at::Tensor& mask) {
  const int64_t nkb = mask.size(-1);
  const at::Tensor keep = mask.to(at::kBool);
  const at::Tensor count = keep.sum(-1).to(at::kInt).contiguous();
  const at::Tensor position = at::arange(nkb, mask.options().dtype(at::kInt)).expand_as(keep);
  const at::Tensor sort_key = at::where(keep, position, position + int(nkb));
  const at::Tensor sorted = std::get<0>(sort_key.sort(-1));
  const at::Tensor index =
      at::where(sorted < int(nkb), sorted, at::full({}, -1, sorted.options())).contiguous();
  return {count, index};
}

}  // namespace

at::Tensor antidiagonal_scores(const at::Tensor& q_in, const at::Tensor& k_in,
                               const EstimateOptions& options) {
  const at::Tensor q = checked_qkv(q_in, "q"), k = checked_qkv(k_in, "k");
  check_block_params(options.stride, options.block_size);
  kernels::ScoringParams params;
  params.problem = problem_of(q, k, options.causal, options.window);
  params.q = view_of(q);
  params.k = view_of(k);
  params.stride = int32_t(options.stride);
  params.block_size = int32_t(options.block_size);
  params.scale = float(options.scale.value_or(
      1.0 / (std::sqrt(double(q.size(3))) * double(options.stride))));
  at::Tensor scores = at::empty({q.size(0), q.size(1), num_blocks(q.size(2), options.block_size),
                                 num_blocks(k.size(2), options.block_size)},
                                q.options().dtype(at::kFloat));
  params.block_scores = scores.data_ptr<float>();
  check_valid(params);
  if (on_cuda(q)) {
    cuda_dispatch::antidiagonal_scores(params);
  } else {
    kernels::cpu::antidiagonal_scores(params);
  }
  return scores;
}

namespace {

// select_blocks, with or without the bool mask (prefill needs only the compact form).
std::tuple<at::Tensor, at::Tensor, at::Tensor> select(const at::Tensor& block_scores_in,
                                                      const at::Tensor& thresholds_in,
                                                      int64_t len_q, int64_t len_k,
                                                      const EstimateOptions& options,
                                                      bool with_mask) {
  XATTN_CHECK_ARG(block_scores_in.dim() == 4 && block_scores_in.scalar_type() == at::kFloat,
                  "block_scores must be float32 [batch, heads_q, nQB, nKB], got ",
                  block_scores_in.scalar_type(), " ", block_scores_in.sizes());
  const at::Tensor scores = block_scores_in.contiguous();
  const int64_t batch = scores.size(0), heads = scores.size(1);
  const int64_t nqb = num_blocks(len_q, options.block_size), nkb = num_blocks(len_k, options.block_size);
  XATTN_CHECK_ARG(scores.size(2) == nqb && scores.size(3) == nkb, "block_scores has ",
                  scores.size(2), "x", scores.size(3), " blocks, expected ", nqb, "x", nkb,
                  " for len_q ", len_q, ", len_k ", len_k, ", block_size ", options.block_size);
  XATTN_CHECK_ARG(thresholds_in.numel() == heads, "thresholds has ", thresholds_in.numel(),
                  " values; expected one per query head (", heads, ")");
  const at::Tensor thresholds =
      to_device_async(thresholds_in.to(at::kFloat), scores.device()).reshape({heads}).contiguous();

  kernels::SelectionParams params;
  params.problem.batch = batch;
  params.problem.heads_q = heads;
  params.problem.heads_kv = heads;
  params.problem.max_len_q = len_q;
  params.problem.max_len_k = len_k;
  params.problem.causal = options.causal;
  params.problem.window = options.window;
  params.block_size = int32_t(options.block_size);
  params.block_scores = scores.data_ptr<float>();
  params.thresholds = thresholds.data_ptr<float>();
  // In causal mode the sink and the diagonal are always kept (the method's forced blocks).
  params.keep_sink = options.causal || options.keep_sink;
  params.keep_diagonal = options.causal || options.keep_diagonal;
  params.dense_last_query_block = options.causal && options.dense_last_query_block;
  params.rule = options.selection_rule;
  at::Tensor mask;
  if (with_mask) {
    mask = at::empty({batch, heads, nqb, nkb}, scores.options().dtype(at::kBool));
    params.mask = reinterpret_cast<uint8_t*>(mask.data_ptr<bool>());
  }
  at::Tensor count = at::empty({batch, heads, nqb}, scores.options().dtype(at::kInt));
  at::Tensor index = at::empty({batch, heads, nqb, nkb}, scores.options().dtype(at::kInt));
  params.kv_block_count = count.data_ptr<int32_t>();
  params.kv_block_index = index.data_ptr<int32_t>();
  check_valid(params);
  if (on_cuda(scores)) {
    cuda_dispatch::select_blocks(params);
  } else {
    kernels::cpu::select_blocks(params);
  }
  return {mask, count, index};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> select_blocks(const at::Tensor& block_scores,
                                                             const at::Tensor& thresholds,
                                                             int64_t len_q, int64_t len_k,
                                                             const EstimateOptions& options) {
  return select(block_scores, thresholds, len_q, len_k, options, /*with_mask=*/true);
}

std::tuple<at::Tensor, at::Tensor> estimate(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& thresholds,
                                            const EstimateOptions& options) {
  at::Tensor scores = antidiagonal_scores(q, k, options);
  auto selection = select_blocks(scores, thresholds, q.size(2), k.size(2), options);
  return {scores, std::get<0>(selection)};
}

std::tuple<at::Tensor, at::Tensor> block_sparse_attention_compact(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& kv_block_count, const at::Tensor& kv_block_index, bool causal,
    std::optional<double> scale, int64_t block_size, int64_t window) {
  const at::Tensor q = checked_qkv(q_in, "q"), k = checked_qkv(k_in, "k"), v = checked_qkv(v_in, "v");
  check_block_params(1, block_size);
  kernels::AttentionParams params;
  params.problem = problem_of(q, k, causal, window);
  XATTN_CHECK_ARG(v.sizes() == k.sizes(), "v ", v.sizes(), " must have the shape of k ", k.sizes());
  XATTN_CHECK_ARG(v.scalar_type() == k.scalar_type() && v.device() == k.device(),
                  "v must have the dtype and device of k");
  params.q = view_of(q);
  params.k = view_of(k);
  params.v = view_of(v);
  params.scale = float(scale.value_or(1.0 / std::sqrt(double(q.size(3)))));
  params.block_size = int32_t(block_size);

  at::Tensor count, index;
  if (kv_block_count.defined()) {
    const int64_t nqb = num_blocks(q.size(2), block_size), nkb = num_blocks(k.size(2), block_size);
    const std::vector<int64_t> row_shape = {q.size(0), q.size(1), nqb};
    XATTN_CHECK_ARG(kv_block_count.sizes() == at::IntArrayRef(row_shape),
                    "kv_block_count must be [batch, heads_q, nQB] = ", at::IntArrayRef(row_shape),
                    ", got ", kv_block_count.sizes());
    XATTN_CHECK_ARG(kv_block_index.dim() == 4 && kv_block_index.size(3) == nkb &&
                        kv_block_index.sizes().slice(0, 3) == at::IntArrayRef(row_shape),
                    "kv_block_index must be [batch, heads_q, nQB, nKB] with nKB = ", nkb,
                    ", got ", kv_block_index.sizes());
    count = kv_block_count.to(q.device(), at::kInt).contiguous();
    index = kv_block_index.to(q.device(), at::kInt).contiguous();
    params.kv_block_count = count.data_ptr<int32_t>();
    params.kv_block_index = index.data_ptr<int32_t>();
  }
  at::Tensor out = at::empty_like(q, at::MemoryFormat::Contiguous);
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  params.out = {out.data_ptr(), to_kernel_dtype(out, "out"), out.stride(0), out.stride(1),
                out.stride(2)};
  params.lse = lse.data_ptr<float>();
  check_valid(params);
  if (on_cuda(q)) {
    cuda_dispatch::block_sparse_attention(params);
  } else {
    kernels::cpu::block_sparse_attention(params);
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> block_sparse_attention(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v,
                                                          const at::Tensor& mask, bool causal,
                                                          std::optional<double> scale,
                                                          int64_t block_size, int64_t window) {
  XATTN_CHECK_ARG(mask.defined() && mask.dim() == 4, "mask must be [batch, heads_q, nQB, nKB]");
  XATTN_CHECK_ARG(mask.device() == q.device(), "mask is on ", mask.device(), " but q on ",
                  q.device());
  auto [count, index] = compact_from_mask(mask);
  return block_sparse_attention_compact(q, k, v, count, index, causal, scale, block_size, window);
}

std::tuple<at::Tensor, at::Tensor> dense_attention(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, bool causal,
                                                   std::optional<double> scale,
                                                   int64_t window) {
  return block_sparse_attention_compact(q, k, v, at::Tensor(), at::Tensor(), causal, scale, 128,
                                        window);
}

at::Tensor exact_block_mass(const at::Tensor& q_in, const at::Tensor& k_in, bool causal,
                            int64_t block_size, std::optional<double> scale, int64_t window) {
  const at::Tensor q = checked_qkv(q_in, "q"), k = checked_qkv(k_in, "k");
  check_block_params(1, block_size);
  kernels::Problem problem = problem_of(q, k, causal, window);
  const double softmax_scale = scale.value_or(1.0 / std::sqrt(double(q.size(3))));
  const int64_t nqb = num_blocks(q.size(2), block_size), nkb = num_blocks(k.size(2), block_size);
  if (!on_cuda(q)) {
    kernels::BlockMassParams params;
    params.problem = problem;
    params.q = view_of(q);
    params.k = view_of(k);
    params.scale = float(softmax_scale);
    params.block_size = int32_t(block_size);
    at::Tensor mass = at::empty({q.size(0), q.size(1), nqb, nkb}, q.options().dtype(at::kFloat));
    params.block_mass = mass.data_ptr<float>();
    kernels::cpu::exact_block_mass(params);
    return mass;
  }
  // On the GPU: float32 softmax one query block at a time with ATen (a calibration-time tool).
  const int64_t batch = q.size(0), heads_q = q.size(1), group = heads_q / k.size(1);
  const int64_t len_q = q.size(2), len_k = k.size(2), padded_k = nkb * block_size;
  const at::Tensor k_groups = k.to(at::kFloat).repeat_interleave(group, 1);
  at::Tensor mass = at::zeros({batch, heads_q, nqb, nkb}, q.options().dtype(at::kFloat));
  const at::Tensor key_position = at::arange(len_k, q.options().dtype(at::kLong));
  for (int64_t i = 0; i < nqb; ++i) {
    const int64_t q0 = i * block_size, q1 = std::min(len_q, q0 + block_size);
    at::Tensor logits = at::matmul(q.slice(2, q0, q1).to(at::kFloat), k_groups.transpose(2, 3)) *
                        softmax_scale;
    if (causal) {
      const at::Tensor query_position =
          at::arange(q0, q1, key_position.options()) + (len_k - len_q);
      at::Tensor hidden = key_position.unsqueeze(0) > query_position.unsqueeze(1);
      if (window > 0)
        hidden = hidden.logical_or(key_position.unsqueeze(0) <=
                                   query_position.unsqueeze(1) - window);
      logits.masked_fill_(hidden, -std::numeric_limits<float>::infinity());
    }
    at::Tensor probs = at::softmax(logits, -1);
    probs = at::constant_pad_nd(probs, {0, padded_k - len_k});
    mass.select(2, i).copy_(probs.reshape({batch, heads_q, q1 - q0, nkb, block_size})
                                .sum(-1)
                                .mean(2));
  }
  return mass;
}

std::tuple<at::Tensor, at::Tensor> prefill_with_lse(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v,
                                                    const at::Tensor& thresholds,
                                                    const EstimateOptions& options,
                                                    std::optional<double> attention_scale) {
  EstimateOptions scoring = options;
  if (!scoring.scale && attention_scale)
    scoring.scale = *attention_scale / double(options.stride);
  const at::Tensor scores = antidiagonal_scores(q, k, scoring);
  auto [mask, count, index] =
      select(scores, thresholds, q.size(2), k.size(2), scoring, /*with_mask=*/false);
  return block_sparse_attention_compact(q, k, v, count, index, options.causal, attention_scale,
                                        options.block_size, options.window);
}

at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& thresholds, const EstimateOptions& options) {
  return std::get<0>(prefill_with_lse(q, k, v, thresholds, options, std::nullopt));
}

at::Tensor to_device_async(const at::Tensor& tensor, at::Device device) {
  if (!device.is_cuda() || !tensor.device().is_cpu()) return tensor.to(device);
  // The caching host allocator keeps the pinned block until the copy has run.
  return tensor.contiguous().pin_memory().to(device, /*non_blocking=*/true);
}

at::Tensor head_density_on_device(const at::Tensor& kv_block_count, int64_t len_q, int64_t len_k,
                                  int64_t block_size, bool causal, int64_t window) {
  XATTN_CHECK_ARG(kv_block_count.dim() == 3, "kv_block_count must be [batch, heads_q, nQB]");
  const kernels::BlockGeometry geometry{len_q, len_k, block_size, len_k - len_q, causal, window};
  XATTN_CHECK_ARG(kv_block_count.size(2) == geometry.num_q_blocks(), "kv_block_count has ",
                  kv_block_count.size(2), " query blocks; expected ", geometry.num_q_blocks());
  double allowed = 0;
  for (int64_t i = 0; i < geometry.num_q_blocks(); ++i) allowed += double(geometry.allowed_blocks(i));
  return kv_block_count.to(at::kDouble).sum(at::IntArrayRef{0, 2}) /
         (allowed * double(kv_block_count.size(0)));
}

at::Tensor head_density(const at::Tensor& kv_block_count, int64_t len_q, int64_t len_k,
                        int64_t block_size, bool causal, int64_t window) {
  return head_density_on_device(kv_block_count, len_q, len_k, block_size, causal, window)
      .to(at::kCPU);
}

}  // namespace xattn::runtime
