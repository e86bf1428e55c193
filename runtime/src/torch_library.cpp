// The `xattn` op library: torch.ops.load_library("libxattn_ops.so") in Python (`import xattn`
// does it), then torch.ops.xattn.estimate / block_sparse_attention / prefill / prefill_with_lse /
// prefill_varlen; C++ programs reach the same ops through the dispatcher or call xattn/ops.h
// directly. Signatures are stable (README; arguments are only ever appended, with defaults).
// Every op takes `window` last (int, 0: none): a sliding window, causal only (ops.h).
// Every argument is checked before any allocation or launch (op_arguments.h); every failure
// reaches the caller as a c10::Error (RuntimeError in Python), never as another exception type.
//
// Kernels are registered per dispatch key: the real ones as CompositeExplicitAutograd (CPU and
// CUDA tensors; the code picks the backend), and shape-only ones for Meta, which FakeTensor and
// torch.compile use to trace a model through the ops without running them.
#include <torch/library.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

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
                           std::optional<double> scale, bool dense_last_query_block,
                           int64_t window) {
  op_arguments::check_window(window, causal);
  EstimateOptions options;
  options.window = window;
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
                                               bool dense_last_query_block, int64_t window) {
  return guarded("estimate", [&] {
    op_arguments::check_estimate(q, k, thresholds, stride, block_size, to_std(scale));
    return estimate(q, k, thresholds,
                    options_of(stride, block_size, causal, to_std(scale), dense_last_query_block,
                               window));
  });
}

// The mask's shape fixes the block size: the usual sizes are tried, 128 first.
std::tuple<at::Tensor, at::Tensor> block_sparse_attention_op(const at::Tensor& q,
                                                             const at::Tensor& k,
                                                             const at::Tensor& v,
                                                             const at::Tensor& mask, bool causal,
                                                             c10::optional<double> scale,
                                                             int64_t window) {
  return guarded("block_sparse_attention", [&] {
    const int64_t block_size =
        op_arguments::check_block_sparse_attention(q, k, v, mask, to_std(scale));
    op_arguments::check_window(window, causal);
    return block_sparse_attention(q, k, v, mask, causal, to_std(scale), block_size, window);
  });
}

std::tuple<at::Tensor, at::Tensor> block_sparse_attention_compact_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_block_count,
    const at::Tensor& kv_block_index, int64_t block_size, bool causal,
    c10::optional<double> scale, int64_t window) {
  return guarded("block_sparse_attention_compact", [&] {
    op_arguments::check_block_sparse_attention_compact(q, k, v, kv_block_count, kv_block_index,
                                                       block_size, to_std(scale));
    op_arguments::check_window(window, causal);
    return block_sparse_attention_compact(q, k, v, kv_block_count, kv_block_index, causal,
                                          to_std(scale), block_size, window);
  });
}

// scale is the attention's softmax scale; scoring runs at scale / stride (ops.h).
std::tuple<at::Tensor, at::Tensor> prefill_with_lse_op(const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& v,
                                                       const at::Tensor& thresholds,
                                                       int64_t stride, int64_t block_size,
                                                       bool causal, bool dense_last_query_block,
                                                       c10::optional<double> scale,
                                                       int64_t window) {
  return guarded("prefill_with_lse", [&] {
    op_arguments::check_prefill(q, k, v, thresholds, stride, block_size, to_std(scale));
    return prefill_with_lse(
        q, k, v, thresholds,
        options_of(stride, block_size, causal, std::nullopt, dense_last_query_block, window),
        to_std(scale));
  });
}

at::Tensor prefill_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& thresholds, int64_t stride, int64_t block_size,
                      bool causal, bool dense_last_query_block, c10::optional<double> scale,
                      int64_t window) {
  return guarded("prefill", [&] {
    op_arguments::check_prefill(q, k, v, thresholds, stride, block_size, to_std(scale));
    return std::get<0>(prefill_with_lse(
        q, k, v, thresholds,
        options_of(stride, block_size, causal, std::nullopt, dense_last_query_block, window),
        to_std(scale)));
  });
}

// Packed sequences in flash-attn's varlen layout: q [total_q, heads_q, head_dim], k and v
// [total_k, heads_kv, head_dim], sequence b at rows cu_seqlens[b] .. cu_seqlens[b + 1]. One
// launch per kernel through runtime::Engine; every sequence runs XAttention, as prefill does.
at::Tensor prefill_varlen_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                             const at::Tensor& thresholds, int64_t stride, int64_t block_size,
                             bool causal, bool dense_last_query_block, int64_t window) {
  return guarded("prefill_varlen", [&] {
    op_arguments::VarlenOffsets offsets = op_arguments::check_prefill_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, thresholds, stride, block_size);
    op_arguments::check_window(window, causal);
    EngineSettings settings;
    settings.layer_windows = {window};
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

// Meta kernels: output shapes and dtypes only, with the checks that need no values (ranks,
// heads, threshold count, block size) so a traced model fails at trace time as it would run.
// Values (τ in [0, 1], cu_seqlens) are checked when the real kernels run. Sizes are read as
// c10::SymInt, so they also serve torch.compile with symbolic lengths (dynamic shapes); a check
// on a symbolic size becomes a guard of the traced graph. Sizes in messages are printed as
// integers (guard_int: a failing trace may specialise them), never through an iostream
// (xattn/error.h says why).
int64_t concrete(const c10::SymInt& size) { return size.guard_int(__FILE__, __LINE__); }

std::vector<int64_t> concrete(c10::SymIntArrayRef sizes) {
  std::vector<int64_t> out;
  for (const c10::SymInt& size : sizes) out.push_back(concrete(size));
  return out;
}

void check_meta_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor* v,
                        int64_t dims) {
  for (const auto& [t, name] : {std::pair<const at::Tensor*, const char*>{&q, "q"}, {&k, "k"},
                                {v, "v"}}) {
    if (!t) continue;
    XATTN_CHECK_ARG(t->dim() == dims, name, " must be ",
                    dims == 4 ? "[batch, heads, len, head_dim]" : "[total, heads, head_dim]",
                    ", got ", t->dim(), " dimensions ", concrete(t->sym_sizes()));
  }
  // [batch, heads, ...] and [total, heads, ...] alike.
  const c10::SymInt heads_q = q.sym_size(1), heads_kv = k.sym_size(1);
  XATTN_CHECK_ARG(heads_kv > 0 && heads_q % heads_kv == 0, "heads of q (", concrete(heads_q),
                  ") must be a multiple of heads of k (", concrete(heads_kv), ")");
  XATTN_CHECK_ARG(q.sym_size(dims - 1) == k.sym_size(dims - 1), "head_dim of q (",
                  concrete(q.sym_size(dims - 1)), ") and k (", concrete(k.sym_size(dims - 1)),
                  ") differ");
  if (dims == 4)
    XATTN_CHECK_ARG(q.sym_size(2) <= k.sym_size(2), "len_q ", concrete(q.sym_size(2)),
                    " must be at most len_k ", concrete(k.sym_size(2)),
                    " (queries are the last len_q positions of the keys)",
                    heads_q == heads_kv ? "; if q, k and v are [batch, len, heads, head_dim], "
                                          "pass q.transpose(1, 2) (likewise k, v)"
                                        : "");
}

void check_meta_thresholds(const at::Tensor& thresholds, const at::Tensor& q, bool packed) {
  const c10::SymInt heads = q.sym_size(1), count = thresholds.sym_numel();
  const c10::SymInt len = packed ? c10::SymInt(0) : q.sym_size(2);
  XATTN_CHECK_ARG(count == heads || count != len, "thresholds has ", concrete(count),
                  " values, one per head, but q has ", concrete(heads), " heads and len ",
                  concrete(len),
                  ": q looks like [batch, len, heads, head_dim]; pass q.transpose(1, 2), ",
                  "k.transpose(1, 2) and v.transpose(1, 2)");
  XATTN_CHECK_ARG(thresholds.dim() == 1 && count == heads, "thresholds has shape ",
                  concrete(thresholds.sym_sizes()), "; pass one τ per query head: [",
                  concrete(heads), "]");
}

c10::SymInt blocks(const c10::SymInt& len, int64_t block_size) {
  return (len + (block_size - 1)) / block_size;
}

at::Tensor empty_sym(const std::vector<c10::SymInt>& shape, const at::TensorOptions& options) {
  return at::empty_symint(c10::SymIntArrayRef(shape.data(), shape.size()), options);
}

at::Tensor lse_like(const at::Tensor& q) {
  return empty_sym({q.sym_size(0), q.sym_size(1), q.sym_size(2)}, q.options().dtype(at::kFloat));
}

std::tuple<at::Tensor, at::Tensor> estimate_meta(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& thresholds, int64_t stride,
                                                 int64_t block_size, bool,
                                                 c10::optional<double>, bool, int64_t) {
  return guarded("estimate", [&] {
    check_meta_problem(q, k, nullptr, 4);
    check_meta_thresholds(thresholds, q, false);
    XATTN_CHECK_ARG(block_size > 0 && stride > 0 && block_size % stride == 0, "stride ", stride,
                    " must be a positive divisor of block_size ", block_size);
    const std::vector<c10::SymInt> shape = {q.sym_size(0), q.sym_size(1),
                                            blocks(q.sym_size(2), block_size),
                                            blocks(k.sym_size(2), block_size)};
    return std::make_tuple(empty_sym(shape, q.options().dtype(at::kFloat)),
                           empty_sym(shape, q.options().dtype(at::kBool)));
  });
}

std::tuple<at::Tensor, at::Tensor> block_sparse_attention_meta(const at::Tensor& q,
                                                               const at::Tensor& k,
                                                               const at::Tensor& v,
                                                               const at::Tensor& mask, bool,
                                                               c10::optional<double>, int64_t) {
  return guarded("block_sparse_attention", [&] {
    check_meta_problem(q, k, &v, 4);
    XATTN_CHECK_ARG(mask.dim() == 4 && mask.sym_size(0) == q.sym_size(0) &&
                        mask.sym_size(1) == q.sym_size(1),
                    "mask has shape ", concrete(mask.sym_sizes()),
                    "; expected [batch, heads_q, nQB, nKB]");
    return std::make_tuple(at::empty_like(q, at::MemoryFormat::Contiguous), lse_like(q));
  });
}

std::tuple<at::Tensor, at::Tensor> block_sparse_attention_compact_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor&,
    const at::Tensor&, int64_t, bool, c10::optional<double>, int64_t) {
  return guarded("block_sparse_attention_compact", [&] {
    check_meta_problem(q, k, &v, 4);
    return std::make_tuple(at::empty_like(q, at::MemoryFormat::Contiguous), lse_like(q));
  });
}

std::tuple<at::Tensor, at::Tensor> prefill_with_lse_meta(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const at::Tensor& thresholds, int64_t,
                                                         int64_t, bool, bool,
                                                         c10::optional<double>, int64_t) {
  return guarded("prefill_with_lse", [&] {
    check_meta_problem(q, k, &v, 4);
    check_meta_thresholds(thresholds, q, false);
    return std::make_tuple(at::empty_like(q, at::MemoryFormat::Contiguous), lse_like(q));
  });
}

at::Tensor prefill_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& thresholds, int64_t, int64_t, bool, bool,
                        c10::optional<double>, int64_t) {
  return guarded("prefill", [&] {
    check_meta_problem(q, k, &v, 4);
    check_meta_thresholds(thresholds, q, false);
    return at::empty_like(q, at::MemoryFormat::Contiguous);
  });
}

at::Tensor prefill_varlen_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor&, const at::Tensor&,
                               const at::Tensor& thresholds, int64_t, int64_t, bool, bool,
                               int64_t) {
  return guarded("prefill_varlen", [&] {
    check_meta_problem(q, k, &v, 3);
    check_meta_thresholds(thresholds, q, true);
    return at::empty_like(q, at::MemoryFormat::Contiguous);
  });
}

}  // namespace
}  // namespace xattn::runtime

TORCH_LIBRARY(xattn, m) {
  m.def(
      "estimate(Tensor q, Tensor k, Tensor thresholds, int stride=8, int block_size=128, "
      "bool causal=True, float? scale=None, bool dense_last_query_block=True, int window=0) -> "
      "(Tensor, Tensor)");
  m.def(
      "block_sparse_attention(Tensor q, Tensor k, Tensor v, Tensor mask, bool causal=True, "
      "float? scale=None, int window=0) -> (Tensor, Tensor)");
  m.def(
      "block_sparse_attention_compact(Tensor q, Tensor k, Tensor v, Tensor kv_block_count, "
      "Tensor kv_block_index, int block_size=128, bool causal=True, float? scale=None, "
      "int window=0) -> (Tensor, Tensor)");
  m.def(
      "prefill(Tensor q, Tensor k, Tensor v, Tensor thresholds, int stride=8, "
      "int block_size=128, bool causal=True, bool dense_last_query_block=True, "
      "float? scale=None, int window=0) -> Tensor");
  m.def(
      "prefill_with_lse(Tensor q, Tensor k, Tensor v, Tensor thresholds, int stride=8, "
      "int block_size=128, bool causal=True, bool dense_last_query_block=True, "
      "float? scale=None, int window=0) -> (Tensor, Tensor)");
  m.def(
      "prefill_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
      "Tensor thresholds, int stride=8, int block_size=128, bool causal=True, "
      "bool dense_last_query_block=True, int window=0) -> Tensor");
}

TORCH_LIBRARY_IMPL(xattn, CompositeExplicitAutograd, m) {
  using namespace xattn::runtime;
  m.impl("estimate", &estimate_op);
  m.impl("block_sparse_attention", &block_sparse_attention_op);
  m.impl("block_sparse_attention_compact", &block_sparse_attention_compact_op);
  m.impl("prefill", &prefill_op);
  m.impl("prefill_with_lse", &prefill_with_lse_op);
  m.impl("prefill_varlen", &prefill_varlen_op);
}

// The ops have no backward. Real tensors pass their autograd keys through the fallbacks LibTorch
// registers for every backend; meta tensors get no such fallback in LibTorch 1.13, so their
// autograd key falls through to the Meta kernels explicitly.
TORCH_LIBRARY_IMPL(xattn, AutogradMeta, m) {
  for (const char* op : {"estimate", "block_sparse_attention", "block_sparse_attention_compact",
                         "prefill", "prefill_with_lse", "prefill_varlen"})
    m.impl(op, torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(xattn, Meta, m) {
  using namespace xattn::runtime;
  m.impl("estimate", &estimate_meta);
  m.impl("block_sparse_attention", &block_sparse_attention_meta);
  m.impl("block_sparse_attention_compact", &block_sparse_attention_compact_meta);
  m.impl("prefill", &prefill_meta);
  m.impl("prefill_with_lse", &prefill_with_lse_meta);
  m.impl("prefill_varlen", &prefill_varlen_meta);
}
