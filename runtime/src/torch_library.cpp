// The `xattn` op library: torch.ops.load_library("libxattn_ops.so") in Python, then
// torch.ops.xattn.estimate / block_sparse_attention / prefill / prefill_varlen; C++ programs reach
// the same ops
// through the dispatcher or call xattn/ops.h directly. Signatures are stable (README).
#include <torch/library.h>

#include <vector>

#include "xattn/engine.h"
#include "xattn/error.h"
#include "xattn/ops.h"

namespace xattn::runtime {
namespace {

// LibTorch 1.13 passes c10::optional, which later versions alias to std::optional.
std::optional<double> to_std(const c10::optional<double>& value) {
  return value.has_value() ? std::optional<double>(*value) : std::nullopt;
}

EstimateOptions options_of(int64_t stride, int64_t block_size, bool causal,
                           std::optional<double> scale, bool dense_last_query_block) {
  EstimateOptions options;
  options.dense_last_query_block = dense_last_query_block;
  options.stride = stride;
  options.block_size = block_size;
  options.causal = causal;
  options.scale = scale;
  return options;
}

std::tuple<at::Tensor, at::Tensor> estimate_op(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& thresholds, int64_t stride,
                                               int64_t block_size, bool causal,
                                               c10::optional<double> scale,
                                               bool dense_last_query_block) {
  return estimate(q, k, thresholds,
                  options_of(stride, block_size, causal, to_std(scale), dense_last_query_block));
}

// The mask's shape fixes the block size: the usual sizes are tried, 128 first.
int64_t block_size_of_mask(const at::Tensor& q, const at::Tensor& k, const at::Tensor& mask) {
  XATTN_CHECK_ARG(mask.dim() == 4, "mask must be [batch, heads_q, nQB, nKB], got ", mask.sizes());
  for (int64_t block : {128, 64, 256, 32, 512, 16}) {
    if ((q.size(2) + block - 1) / block == mask.size(2) &&
        (k.size(2) + block - 1) / block == mask.size(3))
      return block;
  }
  XATTN_CHECK_ARG(false, "mask has ", mask.size(2), "x", mask.size(3), " blocks, which fits no ",
                  "block size for len_q ", q.size(2), " and len_k ", k.size(2));
  return 0;
}

std::tuple<at::Tensor, at::Tensor> block_sparse_attention_op(const at::Tensor& q,
                                                             const at::Tensor& k,
                                                             const at::Tensor& v,
                                                             const at::Tensor& mask, bool causal,
                                                             c10::optional<double> scale) {
  return block_sparse_attention(q, k, v, mask, causal, to_std(scale),
                                block_size_of_mask(q, k, mask));
}

at::Tensor prefill_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& thresholds, int64_t stride, int64_t block_size,
                      bool causal, bool dense_last_query_block) {
  return prefill(q, k, v, thresholds,
                 options_of(stride, block_size, causal, std::nullopt, dense_last_query_block));
}

std::vector<int64_t> offsets_of(const at::Tensor& cu_seqlens, const char* name) {
  XATTN_CHECK_ARG(cu_seqlens.dim() == 1 && cu_seqlens.numel() >= 2 &&
                      !at::isFloatingType(cu_seqlens.scalar_type()),
                  name, " must be an integer tensor [batch + 1] of sequence offsets (0, end of "
                  "sequence 1, ...), got ", cu_seqlens.scalar_type(), " ", cu_seqlens.sizes());
  const at::Tensor offsets = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(offsets.data_ptr<int64_t>(),
                              offsets.data_ptr<int64_t>() + offsets.numel());
}

// Packed sequences in flash-attn's varlen layout: q [total_q, heads_q, head_dim], k and v
// [total_k, heads_kv, head_dim], sequence b at rows cu_seqlens[b] .. cu_seqlens[b + 1]. One
// launch per kernel through runtime::Engine; every sequence runs XAttention, as prefill does.
at::Tensor prefill_varlen_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                             const at::Tensor& thresholds, int64_t stride, int64_t block_size,
                             bool causal, bool dense_last_query_block) {
  XATTN_CHECK_ARG(q.dim() == 3 && k.dim() == 3 && v.dim() == 3,
                  "prefill_varlen takes q [total_q, heads_q, head_dim] and k, v [total_k, "
                  "heads_kv, head_dim] (the flash-attn varlen layout), got q ", q.sizes(), ", k ",
                  k.sizes(), ", v ", v.sizes());
  EngineSettings settings;
  settings.stride = stride;
  settings.block_size = block_size;
  settings.causal = causal;
  settings.dense_last_query_block = dense_last_query_block;
  DensePolicy always_sparse;
  always_sparse.crossover_len = 0;
  always_sparse.dense_decode = false;
  Engine engine(thresholds.reshape({1, -1}), settings, always_sparse);
  // [total, heads, d] viewed as one packed [1, heads, total, d] sequence: no copy.
  const at::Tensor qp = q.transpose(0, 1).unsqueeze(0), kp = k.transpose(0, 1).unsqueeze(0),
                   vp = v.transpose(0, 1).unsqueeze(0);
  const Plan plan = engine.plan(ProblemShape::varlen(qp, kp, offsets_of(cu_seqlens_q, "cu_seqlens_q"),
                                                     offsets_of(cu_seqlens_k, "cu_seqlens_k")));
  return engine.run(plan, 0, qp, kp, vp)[0].transpose(0, 1).contiguous();
}

}  // namespace
}  // namespace xattn::runtime

TORCH_LIBRARY(xattn, m) {
  using namespace xattn::runtime;
  m.def(
      "estimate(Tensor q, Tensor k, Tensor thresholds, int stride=8, int block_size=128, "
      "bool causal=True, float? scale=None, bool dense_last_query_block=True) -> (Tensor, Tensor)",
      &estimate_op);
  m.def(
      "block_sparse_attention(Tensor q, Tensor k, Tensor v, Tensor mask, bool causal=True, "
      "float? scale=None) -> (Tensor, Tensor)",
      &block_sparse_attention_op);
  m.def(
      "prefill(Tensor q, Tensor k, Tensor v, Tensor thresholds, int stride=8, "
      "int block_size=128, bool causal=True, bool dense_last_query_block=True) -> Tensor",
      &prefill_op);
  m.def(
      "prefill_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
      "Tensor thresholds, int stride=8, int block_size=128, bool causal=True, "
      "bool dense_last_query_block=True) -> Tensor",
      &prefill_varlen_op);
}
