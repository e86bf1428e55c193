// The `xattn` op library: torch.ops.load_library("libxattn_ops.so") in Python, then
// torch.ops.xattn.estimate / block_sparse_attention / prefill / prefill_varlen; C++ programs reach
// the same ops
// through the dispatcher or call xattn/ops.h directly. Signatures are stable (README). Every
// argument is checked before any allocation or launch (op_arguments.h); every failure reaches
// the caller as a c10::Error (RuntimeError in Python), never as another exception type.
#include <torch/library.h>

#include <string>

#include "op_arguments.h"
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

// Runs an op's body (argument checks first, then the work) and lets only c10::Error out: an
// xattn::Error or any other C++ exception becomes one through TORCH_CHECK, so Python raises a
// RuntimeError whose text is "xattn.<op>: <message>". The message is built here as one string
// (no iostream formatting of numbers; xattn/error.h says why).
template <typename Body>
auto guarded(const char* op, Body&& body) -> decltype(body()) {
  std::string message;
  try {
    return body();
  } catch (const c10::Error&) {
    throw;
  } catch (const Error& e) {
    message = std::string("xattn.") + op + ": " + e.what();
  } catch (const std::exception& e) {
    message = std::string("xattn.") + op + ": internal error: " + e.what();
  }
  TORCH_CHECK(false, message);
}

std::tuple<at::Tensor, at::Tensor> estimate_op(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& thresholds, int64_t stride,
                                               int64_t block_size, bool causal,
                                               c10::optional<double> scale,
                                               bool dense_last_query_block) {
  return guarded("estimate", [&] {
    op_arguments::check_estimate(q, k, thresholds, stride, block_size, to_std(scale));
    return estimate(q, k, thresholds,
                    options_of(stride, block_size, causal, to_std(scale), dense_last_query_block));
  });
}

// The mask's shape fixes the block size: the usual sizes are tried, 128 first.
std::tuple<at::Tensor, at::Tensor> block_sparse_attention_op(const at::Tensor& q,
                                                             const at::Tensor& k,
                                                             const at::Tensor& v,
                                                             const at::Tensor& mask, bool causal,
                                                             c10::optional<double> scale) {
  return guarded("block_sparse_attention", [&] {
    const int64_t block_size =
        op_arguments::check_block_sparse_attention(q, k, v, mask, to_std(scale));
    return block_sparse_attention(q, k, v, mask, causal, to_std(scale), block_size);
  });
}

std::tuple<at::Tensor, at::Tensor> block_sparse_attention_compact_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_block_count,
    const at::Tensor& kv_block_index, int64_t block_size, bool causal,
    c10::optional<double> scale) {
  return guarded("block_sparse_attention_compact", [&] {
    op_arguments::check_block_sparse_attention_compact(q, k, v, kv_block_count, kv_block_index,
                                                       block_size, to_std(scale));
    return block_sparse_attention_compact(q, k, v, kv_block_count, kv_block_index, causal,
                                          to_std(scale), block_size);
  });
}

at::Tensor prefill_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& thresholds, int64_t stride, int64_t block_size,
                      bool causal, bool dense_last_query_block) {
  return guarded("prefill", [&] {
    op_arguments::check_prefill(q, k, v, thresholds, stride, block_size);
    return prefill(q, k, v, thresholds,
                   options_of(stride, block_size, causal, std::nullopt, dense_last_query_block));
  });
}

// Packed sequences in flash-attn's varlen layout: q [total_q, heads_q, head_dim], k and v
// [total_k, heads_kv, head_dim], sequence b at rows cu_seqlens[b] .. cu_seqlens[b + 1]. One
// launch per kernel through runtime::Engine; every sequence runs XAttention, as prefill does.
at::Tensor prefill_varlen_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                             const at::Tensor& thresholds, int64_t stride, int64_t block_size,
                             bool causal, bool dense_last_query_block) {
  return guarded("prefill_varlen", [&] {
    op_arguments::VarlenOffsets offsets = op_arguments::check_prefill_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, thresholds, stride, block_size);
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
    const Plan plan =
        engine.plan(ProblemShape::varlen(qp, kp, std::move(offsets.q), std::move(offsets.k)));
    return engine.run(plan, 0, qp, kp, vp)[0].transpose(0, 1).contiguous();
  });
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
      "block_sparse_attention_compact(Tensor q, Tensor k, Tensor v, Tensor kv_block_count, "
      "Tensor kv_block_index, int block_size=128, bool causal=True, float? scale=None) -> "
      "(Tensor, Tensor)",
      &block_sparse_attention_compact_op);
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
