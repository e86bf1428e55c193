// The plan/run engine; see xattn/engine.h. Plans allocate; runs fill the kernels' params structs
// with the planned buffers and launch (CPU reference or CUDA kernels), or run dense attention
// when the policy says so.
#include "xattn/engine.h"

#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <sstream>

#include "cuda_dispatch.h"
#include "xattn/error.h"
#include "xattn/kernels/cpu.h"
#include "xattn/ops.h"

// at::scaled_dot_product_attention with an explicit scale exists from LibTorch 2.1, enable_gqa
// from 2.5.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define XATTN_HAVE_SDPA 1
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
#define XATTN_HAVE_SDPA_GQA 1
#endif

namespace xattn::runtime {

namespace {

std::atomic<uint64_t> next_engine_id{1};

constexpr int64_t kCudaCrossoverLen = 8192;  // docs/benchmarks.md, "Short sequences"

kernels::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return kernels::DType::kFloat32;
    case at::kHalf:
      return kernels::DType::kFloat16;
    case at::kBFloat16:
      return kernels::DType::kBFloat16;
    default:
      XATTN_CHECK_ARG(false, "dtype ", t, " is not supported; use float32, float16 or bfloat16");
  }
  return kernels::DType::kFloat32;
}

kernels::TensorView view_of(const at::Tensor& t) {
  return {t.data_ptr(), kernel_dtype(t.scalar_type()), t.stride(0), t.stride(1), t.stride(2)};
}

at::Tensor unit_stride_head_dim(const at::Tensor& t) {
  return t.stride(3) == 1 ? t : t.contiguous();
}

std::string shape_text(at::IntArrayRef sizes) { return detail::concat(sizes); }

}  // namespace

// Dense attention: torch's fused SDPA on CUDA where its causal convention agrees with ours
// (non-causal, len_q == len_k, or a single query that sees every key) and no sliding window cuts
// the keys; the reference (or our dense kernels) otherwise. Grouped K/V heads go in as they are
// (enable_gqa): on the H200 that is 1-12 % faster than expanding them to the query heads first
// (bench/sdpa_gqa.py, bench/results/h200-e2e-speed/).
at::Tensor dense_fallback_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   bool causal, double scale, int64_t window) {
  if (window >= k.size(2)) window = 0;  // every key is in reach
#ifdef XATTN_HAVE_SDPA
  const int64_t len_q = q.size(2), len_k = k.size(2);
  if (q.is_cuda() && window == 0 && (!causal || len_q == len_k || len_q == 1)) {
    const bool is_causal = causal && len_q == len_k && len_q > 1;
#ifdef XATTN_HAVE_SDPA_GQA
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, is_causal, scale,
                                            /*enable_gqa=*/q.size(1) != k.size(1));
#else
    const int64_t group = q.size(1) / k.size(1);
    const at::Tensor ke = group > 1 ? k.repeat_interleave(group, 1) : k;
    const at::Tensor ve = group > 1 ? v.repeat_interleave(group, 1) : v;
    return at::scaled_dot_product_attention(q, ke, ve, {}, 0.0, is_causal, scale);
#endif
  }
#endif
  return std::get<0>(dense_attention(q, k, v, causal, scale, window));
}

ScoringScale parse_scoring_scale(const std::string& rule) {
  if (rule == "1/(sqrt(d)*S)") return ScoringScale::kInvSqrtDimTimesStride;
  if (rule == "1/sqrt(d)") return ScoringScale::kInvSqrtDim;
  XATTN_CHECK_ARG(false, "unknown scoring scale rule '", rule,
                  "'; supported: \"1/(sqrt(d)*S)\", \"1/sqrt(d)\"");
  return ScoringScale::kInvSqrtDimTimesStride;
}

std::string to_string(ScoringScale rule) {
  return rule == ScoringScale::kInvSqrtDim ? "1/sqrt(d)" : "1/(sqrt(d)*S)";
}

const char* to_string(AttentionPath path) {
  switch (path) {
    case AttentionPath::kSparse:
      return "sparse";
    case AttentionPath::kDense:
      return "dense";
    case AttentionPath::kMixed:
      return "mixed";
  }
  return "unknown";
}

const char* to_string(DenseReason reason) {
  switch (reason) {
    case DenseReason::kNone:
      return "none";
    case DenseReason::kBelowCrossover:
      return "below crossover length";
    case DenseReason::kDecode:
      return "decode (len_q 1)";
    case DenseReason::kWarmupStep:
      return "warm-up step";
    case DenseReason::kDenseLayer:
      return "dense layer";
    case DenseReason::kPredictedSlower:
      return "predicted slower than dense";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// ProblemShape

ProblemShape ProblemShape::of(const at::Tensor& q, const at::Tensor& k) {
  XATTN_CHECK_ARG(q.defined() && k.defined(), "q and k must be defined tensors");
  XATTN_CHECK_ARG(q.dim() == 4, "q must be [batch, heads_q, len_q, head_dim], got ",
                  shape_text(q.sizes()));
  XATTN_CHECK_ARG(k.dim() == 4, "k must be [batch, heads_kv, len_k, head_dim], got ",
                  shape_text(k.sizes()));
  ProblemShape s;
  s.batch = q.size(0);
  s.heads_q = q.size(1);
  s.heads_kv = k.size(1);
  s.len_q = q.size(2);
  s.len_k = k.size(2);
  s.head_dim = q.size(3);
  s.device = q.device();
  s.dtype = q.scalar_type();
  return s;
}

ProblemShape ProblemShape::varlen(const at::Tensor& q, const at::Tensor& k,
                                  std::vector<int64_t> cu_seqlens_q,
                                  std::vector<int64_t> cu_seqlens_k) {
  ProblemShape s = of(q, k);
  XATTN_CHECK_ARG(s.batch == 1,
                  "a varlen batch packs its sequences along the token axis: q must "
                  "be [1, heads_q, total_q, head_dim], got ",
                  shape_text(q.sizes()));
  XATTN_CHECK_ARG(cu_seqlens_q.size() >= 2,
                  "cu_seqlens_q needs at least 2 entries (0 and the "
                  "end of the first sequence), got ",
                  cu_seqlens_q.size());
  s.batch = int64_t(cu_seqlens_q.size()) - 1;
  s.cu_seqlens_q = std::move(cu_seqlens_q);
  s.cu_seqlens_k = std::move(cu_seqlens_k);
  return s;
}

int64_t ProblemShape::sequence_len_q(int64_t b) const {
  return is_varlen() ? cu_seqlens_q[size_t(b) + 1] - cu_seqlens_q[size_t(b)] : len_q;
}

int64_t ProblemShape::sequence_len_k(int64_t b) const {
  return is_varlen() ? cu_seqlens_k[size_t(b) + 1] - cu_seqlens_k[size_t(b)] : len_k;
}

std::string ProblemShape::describe() const {
  // No iostream for the numbers (xattn/error.h says why): this text ends up in error messages.
  return detail::concat(is_varlen() ? "varlen batch " : "batch ", batch, ", heads ", heads_q, "/",
                        heads_kv, ", len_q ", len_q, ", len_k ", len_k, ", head_dim ", head_dim,
                        ", ", device, " ", dtype);
}

bool ProblemShape::operator==(const ProblemShape& o) const {
  return batch == o.batch && heads_q == o.heads_q && heads_kv == o.heads_kv && len_q == o.len_q &&
         len_k == o.len_k && head_dim == o.head_dim && device == o.device && dtype == o.dtype &&
         cu_seqlens_q == o.cu_seqlens_q && cu_seqlens_k == o.cu_seqlens_k;
}

// ---------------------------------------------------------------------------------------------
// Plan

int64_t Plan::workspace_bytes() const {
  int64_t bytes = 0;
  for (const at::Tensor* t : {&thresholds_, &block_scores_, &kv_block_count_, &kv_block_index_,
                              &out_, &lse_, &cu_seqlens_q_, &cu_seqlens_k_}) {
    if (t->defined()) bytes += int64_t(t->nbytes());
  }
  // Layers with the same window share one tensor: count each once.
  std::vector<const void*> seen;
  for (const std::vector<at::Tensor>* per_layer : {&row_allowed_, &row_valid_}) {
    for (const at::Tensor& t : *per_layer) {
      if (!t.defined() || std::find(seen.begin(), seen.end(), t.data_ptr()) != seen.end())
        continue;
      seen.push_back(t.data_ptr());
      bytes += int64_t(t.nbytes());
    }
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Engine

Engine::Engine(at::Tensor thresholds, EngineSettings settings, DensePolicy policy)
    : id_(next_engine_id++), settings_(settings), policy_(policy) {
  XATTN_CHECK_ARG(thresholds.defined() && thresholds.dim() == 2 && thresholds.numel() > 0,
                  "thresholds must be [num_layers, heads_q] (one τ per layer and query head), got ",
                  thresholds.defined() ? shape_text(thresholds.sizes()) : "an undefined tensor");
  thresholds_ = thresholds.detach().to(at::kCPU, at::kFloat).contiguous().clone();
  XATTN_CHECK_ARG(
      at::isfinite(thresholds_).all().item<bool>() && (thresholds_ >= 0).all().item<bool>(),
      "thresholds must be finite and >= 0 (τ in [0, 1]; 1 keeps every block)");
  const int64_t bs = settings_.block_size, stride = settings_.stride;
  XATTN_CHECK_ARG(bs > 0 && (bs & (bs - 1)) == 0, "block_size ", bs,
                  " must be a power of two (64, 128 or 256)");
  XATTN_CHECK_ARG(stride > 0 && bs % stride == 0, "stride ", stride, " must divide block_size ", bs,
                  " (2, 4, 8, 16 or 32)");
  XATTN_CHECK_ARG(!settings_.attention_scale || *settings_.attention_scale > 0,
                  "attention_scale must be positive");
  XATTN_CHECK_ARG(!policy_.crossover_len || *policy_.crossover_len >= 0,
                  "crossover_len must be >= 0 (0: never dense by length)");
  XATTN_CHECK_ARG(policy_.warmup_steps >= 0 && policy_.dense_layers >= 0,
                  "warmup_steps and dense_layers must be >= 0");
  XATTN_CHECK_ARG(settings_.layer_windows.empty() ||
                      int64_t(settings_.layer_windows.size()) == thresholds_.size(0),
                  "layer_windows has ", settings_.layer_windows.size(),
                  " entries; expected none or one per layer (", thresholds_.size(0), ")");
  for (size_t l = 0; l < settings_.layer_windows.size(); ++l) {
    const int64_t w = settings_.layer_windows[l];
    XATTN_CHECK_ARG(w >= 0, "layer ", l, ": sliding window ", w, " must be >= 0 (0: none)");
    XATTN_CHECK_ARG(w == 0 || settings_.causal, "layer ", l, ": a sliding window (", w,
                    ") needs causal attention");
  }
  if (settings_.causal) {
    // The method's forced blocks in causal mode.
    settings_.keep_sink = true;
    settings_.keep_diagonal = true;
  }
}

Plan Engine::plan(const ProblemShape& shape) const {
  XATTN_CHECK_ARG(shape.heads_q == heads_q(), "the problem has ", shape.heads_q,
                  " query heads but the thresholds have ", heads_q(),
                  " per layer: the thresholds (profile) belong to another model");
  XATTN_CHECK_ARG(shape.heads_kv >= 1 && shape.heads_q % shape.heads_kv == 0, "heads_q ",
                  shape.heads_q, " must be a multiple of heads_kv ", shape.heads_kv);
  XATTN_CHECK_ARG(shape.batch >= 1 && shape.head_dim >= 1 && shape.len_q >= 1 && shape.len_k >= 1,
                  "every size must be >= 1: ", shape.describe());
  kernel_dtype(shape.dtype);
  XATTN_CHECK_ARG(shape.device.is_cpu() || shape.device.is_cuda(), "tensors on ", shape.device,
                  " are not supported (use CPU or CUDA)");
#ifndef XATTN_TORCH_HAS_CUDA
  XATTN_CHECK(!shape.device.is_cuda(), ErrorKind::kCuda,
              "got CUDA tensors, but this xattn was built against a LibTorch without CUDA; "
              "rebuild with a CUDA LibTorch or pass CPU tensors");
#endif

  Plan plan;
  plan.engine_id_ = id_;
  plan.shape_ = shape;
  const int64_t batch = shape.batch, bs = settings_.block_size;

  // Sequence lengths, checked on the host (the kernels trust them).
  std::vector<int32_t> cu_q, cu_k;
  if (shape.is_varlen()) {
    XATTN_CHECK_ARG(shape.cu_seqlens_q.size() == size_t(batch) + 1 &&
                        shape.cu_seqlens_k.size() == size_t(batch) + 1,
                    "cu_seqlens_q and cu_seqlens_k must both have batch + 1 = ", batch + 1,
                    " entries, got ", shape.cu_seqlens_q.size(), " and ",
                    shape.cu_seqlens_k.size());
    XATTN_CHECK_ARG(shape.cu_seqlens_q.front() == 0 && shape.cu_seqlens_k.front() == 0,
                    "cu_seqlens_q and cu_seqlens_k must start at 0");
    XATTN_CHECK_ARG(
        shape.cu_seqlens_q.back() == shape.len_q && shape.cu_seqlens_k.back() == shape.len_k,
        "cu_seqlens end at ", shape.cu_seqlens_q.back(), " (q) and ", shape.cu_seqlens_k.back(),
        " (k), but the packed tensors hold ", shape.len_q, " and ", shape.len_k, " tokens");
    XATTN_CHECK_ARG(shape.len_k <= std::numeric_limits<int32_t>::max(),
                    "a packed batch must hold fewer than 2^31 tokens");
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t lq = shape.sequence_len_q(b), lk = shape.sequence_len_k(b);
      XATTN_CHECK_ARG(lq >= 1 && lq <= lk, "sequence ", b, " has len_q ", lq, " and len_k ", lk,
                      "; each sequence needs 1 <= len_q <= len_k (cu_seqlens must ascend)");
      plan.max_len_q_ = std::max(plan.max_len_q_, lq);
      plan.max_len_k_ = std::max(plan.max_len_k_, lk);
    }
    cu_q.assign(shape.cu_seqlens_q.begin(), shape.cu_seqlens_q.end());
    cu_k.assign(shape.cu_seqlens_k.begin(), shape.cu_seqlens_k.end());
  } else {
    XATTN_CHECK_ARG(shape.cu_seqlens_k.empty(), "cu_seqlens_k given without cu_seqlens_q");
    XATTN_CHECK_ARG(shape.len_q <= shape.len_k, "len_q ", shape.len_q, " must be <= len_k ",
                    shape.len_k, " (queries are the last len_q positions of the keys)");
    plan.max_len_q_ = shape.len_q;
    plan.max_len_k_ = shape.len_k;
  }
  plan.num_q_blocks_ = (plan.max_len_q_ + bs - 1) / bs;
  plan.num_k_blocks_ = (plan.max_len_k_ + bs - 1) / bs;

  kernels::Problem problem;
  problem.batch = batch;
  problem.heads_q = shape.heads_q;
  problem.heads_kv = shape.heads_kv;
  problem.head_dim = shape.head_dim;
  problem.max_len_q = plan.max_len_q_;
  problem.max_len_k = plan.max_len_k_;
  problem.causal = settings_.causal;
  problem.cu_seqlens_q = cu_q.empty() ? nullptr : cu_q.data();
  problem.cu_seqlens_k = cu_k.empty() ? nullptr : cu_k.data();
  const std::string error = kernels::cpu::validate(problem);
  XATTN_CHECK_ARG(error.empty(), error, " (", shape.describe(), ")");

  // Which sequences run dense whatever the layer and step.
  plan.crossover_len_ =
      policy_.crossover_len.value_or(shape.device.is_cuda() ? kCudaCrossoverLen : 0);
  bool any_sparse = false;
  for (int64_t b = 0; b < batch; ++b) {
    DenseReason reason = DenseReason::kNone;
    if (policy_.dense_decode && shape.sequence_len_q(b) == 1) {
      reason = DenseReason::kDecode;
    } else if (shape.sequence_len_k(b) < plan.crossover_len_) {
      reason = DenseReason::kBelowCrossover;
    }
    plan.length_reason_.push_back(reason);
    plan.short_or_decode_.push_back(reason != DenseReason::kNone);
    any_sparse = any_sparse || reason == DenseReason::kNone;
  }

  const double d = double(shape.head_dim);
  plan.scoring_scale_ = float(settings_.scoring_scale == ScoringScale::kInvSqrtDim
                                  ? 1.0 / std::sqrt(d)
                                  : 1.0 / (std::sqrt(d) * double(settings_.stride)));
  plan.attention_scale_ = float(settings_.attention_scale.value_or(1.0 / std::sqrt(d)));

  const auto on_device = at::TensorOptions().device(shape.device);
  const int64_t tensor_batch = shape.is_varlen() ? 1 : batch;
  if (policy_.cost_table) {
    plan.cost_table_ = policy_.cost_table;
  } else if (shape.device.is_cuda()) {
    plan.cost_table_ = cuda_device_cost_table(shape.device.index());
  }

  plan.out_ = at::empty({tensor_batch, shape.heads_q, shape.len_q, shape.head_dim},
                        on_device.dtype(shape.dtype));
  plan.dense_head_density_ = at::ones({shape.heads_q}, at::TensorOptions().dtype(at::kDouble));
  if (any_sparse) {
    const int64_t h = shape.heads_q, nqb = plan.num_q_blocks_, nkb = plan.num_k_blocks_;
    plan.thresholds_ = to_device_async(thresholds_, shape.device);
    plan.block_scores_ = at::empty({batch, h, nqb, nkb}, on_device.dtype(at::kFloat));
    plan.kv_block_count_ = at::zeros({batch, h, nqb}, on_device.dtype(at::kInt));
    plan.kv_block_index_ = at::empty({batch, h, nqb, nkb}, on_device.dtype(at::kInt));
    plan.lse_ = at::empty({batch, h, plan.max_len_q_}, on_device.dtype(at::kFloat));
    if (shape.is_varlen()) {
      plan.cu_seqlens_q_ = to_device_async(at::tensor(cu_q, at::kInt), shape.device);
      plan.cu_seqlens_k_ = to_device_async(at::tensor(cu_k, at::kInt), shape.device);
    }
    // Allowed blocks of every (sequence, query block) row, 0 past a sequence's end: the
    // denominator of the per-head density. One tensor per distinct sliding window.
    struct Rows {
      int64_t window;
      at::Tensor allowed, valid;
      double total;
    };
    std::vector<Rows> by_window;
    for (int64_t layer = 0; layer < num_layers(); ++layer) {
      const int64_t window = settings_.window(layer);
      auto found = std::find_if(by_window.begin(), by_window.end(),
                                [&](const Rows& e) { return e.window == window; });
      if (found == by_window.end()) {
        problem.window = window;
        at::Tensor allowed = at::zeros({batch, 1, nqb}, at::kDouble);
        auto a = allowed.accessor<double, 3>();
        for (int64_t b = 0; b < batch; ++b) {
          const kernels::BlockGeometry g = kernels::block_geometry(problem, b, bs);
          for (int64_t i = 0; i < g.num_q_blocks(); ++i) a[b][0][i] = double(g.allowed_blocks(i));
        }
        const at::Tensor valid = (allowed > 0).to(at::kDouble);
        by_window.push_back({window, to_device_async(allowed, shape.device),
                             to_device_async(valid, shape.device), allowed.sum().item<double>()});
        found = by_window.end() - 1;
      }
      plan.row_allowed_.push_back(found->allowed);
      plan.row_valid_.push_back(found->valid);
      plan.allowed_total_.push_back(found->total);
    }
  }
  return plan;
}

CostTable cuda_device_cost_table(int index) {
#ifdef XATTN_TORCH_HAS_CUDA
  return builtin_cost_table(cuda_dispatch::device_name(index));
#else
  (void)index;
  throw Error(ErrorKind::kInvalidArgument,
              "this xattn was built without CUDA: no CUDA device has a cost table here");
#endif
}

DenseReason Engine::call_dense_reason(const Plan& plan, int64_t layer,
                                      std::optional<int64_t> step) const {
  XATTN_CHECK_ARG(plan.engine_id_ == id_,
                  "this plan was made by another engine; call plan() on the engine that runs it");
  XATTN_CHECK_ARG(layer >= 0 && layer < num_layers(), "layer ", layer, " has no thresholds (",
                  num_layers(), " layers)");
  XATTN_CHECK_ARG(policy_.warmup_steps == 0 || step.has_value(), "the policy runs the first ",
                  policy_.warmup_steps, " denoising steps dense: pass the step index to run()");
  XATTN_CHECK_ARG(!step || *step >= 0, "denoising step ", *step, " must be >= 0");
  if (step && *step < policy_.warmup_steps) return DenseReason::kWarmupStep;
  if (layer < policy_.dense_layers) return DenseReason::kDenseLayer;
  return DenseReason::kNone;
}

void Engine::set_density_model(DensityModel model) {
  XATTN_CHECK_ARG(int64_t(model.density.size()) == num_layers(), "the density model has ",
                  model.density.size(), " layers but the thresholds have ", num_layers());
  XATTN_CHECK_ARG(model.exponent.empty() || model.exponent.size() == model.density.size(),
                  "the density model needs one exponent per layer (or none)");
  density_model_ = std::move(model);
  ++density_version_;
}

std::vector<DenseReason> Engine::sequence_reasons(const Plan& plan, int64_t layer,
                                                  std::optional<int64_t> step,
                                                  std::string* decision) const {
  const DenseReason call_reason = call_dense_reason(plan, layer, step);
  const ProblemShape& s = plan.shape_;
  const bool cost_rule = plan.cost_table_ && density_model_ && !policy_.force_sparse;
  std::vector<DenseReason> reasons;
  for (int64_t b = 0; b < s.batch; ++b) {
    DenseReason reason =
        call_reason != DenseReason::kNone ? call_reason : plan.length_reason_[size_t(b)];
    if (reason == DenseReason::kNone && cost_rule) {
      if (plan.decisions_version_ != density_version_) {
        plan.decisions_.assign(size_t(num_layers() * s.batch), std::nullopt);
        plan.decisions_version_ = density_version_;
      }
      std::optional<DispatchDecision>& cached = plan.decisions_[size_t(layer * s.batch + b)];
      if (!cached) {
        CallGeometry call;
        call.len_q = s.sequence_len_q(b);
        call.len_k = s.sequence_len_k(b);
        call.heads_q = s.heads_q;
        call.head_dim = s.head_dim;
        call.block_size = settings_.block_size;
        call.stride = settings_.stride;
        call.causal = settings_.causal;
        cached = decide_dispatch(*plan.cost_table_, *density_model_, layer, call);
      }
      const DispatchDecision& d = *cached;
      if (!d.sparse) reason = DenseReason::kPredictedSlower;
      if (decision && decision->empty()) *decision = d.reason;
    }
    reasons.push_back(reason);
  }
  return reasons;
}

AttentionPath Engine::path_for(const Plan& plan, int64_t layer, std::optional<int64_t> step) const {
  int64_t dense = 0;
  for (DenseReason r : sequence_reasons(plan, layer, step, nullptr))
    dense += r != DenseReason::kNone;
  if (dense == 0) return AttentionPath::kSparse;
  return dense == plan.shape_.batch ? AttentionPath::kDense : AttentionPath::kMixed;
}

void Engine::check_inputs(const Plan& plan, int64_t, const at::Tensor& q, const at::Tensor& k,
                          const at::Tensor& v) const {
  const ProblemShape& s = plan.shape_;
  const int64_t tensor_batch = s.is_varlen() ? 1 : s.batch;
  const std::vector<int64_t> q_shape = {tensor_batch, s.heads_q, s.len_q, s.head_dim};
  const std::vector<int64_t> kv_shape = {tensor_batch, s.heads_kv, s.len_k, s.head_dim};
  const char* fix = "; make a plan for this shape with Engine::plan";
  for (auto [t, name, expected] : {std::tuple{&q, "q", &q_shape}, std::tuple{&k, "k", &kv_shape},
                                   std::tuple{&v, "v", &kv_shape}}) {
    XATTN_CHECK_ARG(t->defined(), name, " is undefined");
    XATTN_CHECK_ARG(t->sizes() == at::IntArrayRef(*expected), name, " has shape ",
                    shape_text(t->sizes()), " but the plan expects ",
                    shape_text(at::IntArrayRef(*expected)), " (", s.describe(), ")", fix);
    XATTN_CHECK_ARG(t->device() == s.device && t->scalar_type() == s.dtype, name, " is ",
                    t->device(), " ", t->scalar_type(), " but the plan is for ", s.device, " ",
                    s.dtype, fix);
  }
}

at::Tensor Engine::run(const Plan& plan, int64_t layer, const at::Tensor& q_in,
                       const at::Tensor& k_in, const at::Tensor& v_in,
                       std::optional<int64_t> denoising_step) {
  RunInfo info;
  const std::vector<DenseReason> reasons =
      sequence_reasons(plan, layer, denoising_step, &info.decision);
  check_inputs(plan, layer, q_in, k_in, v_in);
  const ProblemShape& s = plan.shape_;
  const int64_t batch = s.batch;
  const bool causal = settings_.causal;
  const int64_t window = settings_.window(layer);

  info.layer = layer;
  info.step = denoising_step;
  int64_t dense_count = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const bool dense = reasons[size_t(b)] != DenseReason::kNone;
    info.sequence_paths.push_back(dense ? AttentionPath::kDense : AttentionPath::kSparse);
    dense_count += dense;
    if (dense && info.reason == DenseReason::kNone) info.reason = reasons[size_t(b)];
  }
  info.path = dense_count == 0       ? AttentionPath::kSparse
              : dense_count == batch ? AttentionPath::kDense
                                     : AttentionPath::kMixed;

  // Dense slices of a varlen batch, written into the planned output.
  auto dense_sequences = [&](const at::Tensor& out) {
    for (int64_t b = 0; b < batch; ++b) {
      if (info.sequence_paths[size_t(b)] != AttentionPath::kDense) continue;
      const int64_t q0 = s.cu_seqlens_q[size_t(b)], k0 = s.cu_seqlens_k[size_t(b)];
      const int64_t lq = s.sequence_len_q(b), lk = s.sequence_len_k(b);
      out.narrow(2, q0, lq).copy_(dense_fallback_attention(
          q_in.narrow(2, q0, lq), k_in.narrow(2, k0, lk), v_in.narrow(2, k0, lk), causal,
          plan.attention_scale_, window));
    }
  };

  if (info.path == AttentionPath::kDense) {
    at::Tensor out;
    if (s.is_varlen()) {
      dense_sequences(plan.out_);
      out = plan.out_;
    } else {
      out = dense_fallback_attention(q_in, k_in, v_in, causal, plan.attention_scale_, window);
    }
    // On the host: a dense call launches nothing but the attention itself.
    info.head_density = plan.dense_head_density_;
    last_run_ = std::move(info);
    return out;
  }

  const at::Tensor q = unit_stride_head_dim(q_in), k = unit_stride_head_dim(k_in),
                   v = unit_stride_head_dim(v_in);
  kernels::Problem problem;
  problem.batch = batch;
  problem.heads_q = s.heads_q;
  problem.heads_kv = s.heads_kv;
  problem.head_dim = s.head_dim;
  problem.max_len_q = plan.max_len_q_;
  problem.max_len_k = plan.max_len_k_;
  problem.causal = causal;
  problem.window = window;
  if (s.is_varlen()) {
    problem.cu_seqlens_q = plan.cu_seqlens_q_.data_ptr<int32_t>();
    problem.cu_seqlens_k = plan.cu_seqlens_k_.data_ptr<int32_t>();
  }
  const bool cuda = s.device.is_cuda();

  kernels::ScoringParams scoring;
  scoring.problem = problem;
  scoring.q = view_of(q);
  scoring.k = view_of(k);
  scoring.stride = int32_t(settings_.stride);
  scoring.block_size = int32_t(settings_.block_size);
  scoring.scale = plan.scoring_scale_;
  scoring.block_scores = plan.block_scores_.data_ptr<float>();

  kernels::SelectionParams selection;
  selection.problem = problem;
  selection.block_size = int32_t(settings_.block_size);
  selection.block_scores = plan.block_scores_.data_ptr<float>();
  selection.thresholds = plan.thresholds_.data_ptr<float>() + layer * s.heads_q;
  selection.keep_sink = settings_.keep_sink;
  selection.keep_diagonal = settings_.keep_diagonal;
  selection.dense_last_query_block = settings_.causal && settings_.dense_last_query_block;
  selection.kv_block_count = plan.kv_block_count_.data_ptr<int32_t>();
  selection.kv_block_index = plan.kv_block_index_.data_ptr<int32_t>();

  kernels::AttentionParams attention;
  attention.problem = problem;
  attention.q = view_of(q);
  attention.k = view_of(k);
  attention.v = view_of(v);
  attention.scale = plan.attention_scale_;
  attention.block_size = int32_t(settings_.block_size);
  attention.kv_block_count = plan.kv_block_count_.data_ptr<int32_t>();
  attention.kv_block_index = plan.kv_block_index_.data_ptr<int32_t>();
  const at::Tensor& out = plan.out_;
  attention.out = {out.data_ptr(), kernel_dtype(out.scalar_type()), out.stride(0), out.stride(1),
                   out.stride(2)};
  attention.lse = plan.lse_.data_ptr<float>();
  if (s.is_varlen()) {  // packed [1, heads, tokens, d]: the rows that bound the sm_90a TMA loads
    attention.packed_tokens_q = s.len_q;
    attention.packed_tokens_k = s.len_k;
  }

  if (cuda) {
    cuda_dispatch::antidiagonal_scores(scoring);
    cuda_dispatch::select_blocks(selection);
  } else {
    kernels::cpu::antidiagonal_scores(scoring);
    kernels::cpu::select_blocks(selection);
  }
  // Mixed batch: dense sequences keep no block in the sparse launch; dense attention fills them.
  const at::Tensor& row_allowed = plan.row_allowed_[size_t(layer)];
  at::Tensor sparse_rows;
  if (info.path == AttentionPath::kMixed) {
    sparse_rows = row_allowed > 0;
    std::vector<double> sparse_sequence;
    for (auto p : info.sequence_paths) sparse_sequence.push_back(p == AttentionPath::kSparse);
    const at::Tensor keep =
        to_device_async(at::tensor(sparse_sequence, at::kDouble), s.device).view({batch, 1, 1});
    for (int64_t b = 0; b < batch; ++b) {
      if (info.sequence_paths[size_t(b)] == AttentionPath::kDense) plan.kv_block_count_[b].zero_();
    }
    sparse_rows = sparse_rows * keep;
  }
  if (cuda) {
    cuda_dispatch::block_sparse_attention(attention);
  } else {
    kernels::cpu::block_sparse_attention(attention);
  }
  if (info.path == AttentionPath::kMixed) dense_sequences(plan.out_);

  // Density per head: kept blocks of sparse rows plus every allowed block of dense sequences,
  // over all allowed blocks. Stays on the device (no synchronisation); three tensor ops when
  // every sequence ran sparse (each op is host time in a forward pass bound by the host).
  if (info.path == AttentionPath::kSparse) {
    info.head_density = (plan.kv_block_count_ * plan.row_valid_[size_t(layer)])
                            .sum(at::IntArrayRef{0, 2})
                            .div_(plan.allowed_total_[size_t(layer)]);
  } else {
    const at::Tensor kept =
        (plan.kv_block_count_.to(at::kDouble) * sparse_rows).sum(at::IntArrayRef{0, 2});
    const at::Tensor dense_allowed = (row_allowed * sparse_rows.logical_not()).sum();
    info.head_density = (kept + dense_allowed) / row_allowed.sum();
  }
  last_run_ = std::move(info);
  return out;
}

at::Tensor Engine::last_head_density() const {
  return last_run_.head_density.defined() ? last_run_.head_density.to(at::kCPU) : at::Tensor();
}

}  // namespace xattn::runtime
