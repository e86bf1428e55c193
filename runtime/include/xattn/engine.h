// The XAttention prefill engine: per-layer per-head thresholds and kernel settings given once, a
// plan that sizes every buffer for one problem shape, and a run that only launches.
//
//   xattn::runtime::Engine engine(thresholds /* [layers, heads_q] */, settings, policy);
//   xattn::runtime::Plan plan = engine.plan(xattn::runtime::ProblemShape::of(q, k));
//   for (layer ...) out = engine.run(plan, layer, q, k, v);   // q, k, v of that layer
//   engine.last_run().head_density                            // telemetry of the last call
//
// Tensors use the layout of torch's scaled_dot_product_attention: q [batch, heads_q, len_q,
// head_dim], k and v [batch, heads_kv, len_k, head_dim], heads_q a multiple of heads_kv,
// float32 / float16 / bfloat16. CPU tensors run the CPU reference, CUDA tensors the kernels on the
// current stream. Causal attention is bottom-right aligned (query i sits at position
// len_k - len_q + i), so len_q < len_k is a chunked prefill.
//
// Variable-length batches: sequences packed along the token axis, q [1, heads_q, total_q,
// head_dim], k and v [1, heads_kv, total_k, head_dim], with cu_seqlens_q / cu_seqlens_k
// [num_sequences + 1] (ascending, from 0) in the shape; the kernels take the offsets directly, so
// a varlen batch is one launch per kernel.
//
// Dense fallbacks are explicit and recorded (RunInfo): decode steps (len_q == 1), attention over
// fewer keys than the crossover length, calls where the cost model (xattn/cost_model.h) predicts
// dense cheaper than estimate + sparse at the layer's predicted density, and the warm-up of video
// diffusion models (the first denoising steps and optionally the first layers). Dense means at::scaled_dot_product_attention
// on CUDA (runtime::dense_attention for causal chunks with 1 < len_q < len_k, where torch's causal
// mask would be top-left aligned) and runtime::dense_attention on CPU.
//
// Every check failure throws xattn::Error naming the mismatch and the fix.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "xattn/cost_model.h"

namespace xattn::runtime {

// How the antidiagonal scores are scaled before their softmax, as a rule of head_dim d and
// stride S. Profiles store the rule as text ("1/(sqrt(d)*S)", the published code's choice).
enum class ScoringScale { kInvSqrtDimTimesStride, kInvSqrtDim };

// "1/(sqrt(d)*S)" or "1/sqrt(d)"; anything else throws, naming the supported rules.
ScoringScale parse_scoring_scale(const std::string& rule);
std::string to_string(ScoringScale rule);

// The kernel settings the thresholds were calibrated with.
struct EngineSettings {
  int64_t stride = 8;        // S: 2, 4, 8, 16 or 32, dividing block_size
  int64_t block_size = 128;  // power of two
  bool causal = true;        // false for video diffusion transformers
  ScoringScale scoring_scale = ScoringScale::kInvSqrtDimTimesStride;
  std::optional<double> attention_scale;  // softmax scale; default 1/sqrt(head_dim)
  // Non-causal only (causal mode always keeps key block 0 and the diagonal block).
  bool keep_sink = true;
  bool keep_diagonal = true;
  // Causal: each sequence's last query block keeps every allowed key block. Its last row makes
  // the first generated token; a key only that row needs (a passkey) can hold too little of the
  // block's antidiagonal mass to be selected. Costs one block row (1/256 of the blocks at 32K).
  bool dense_last_query_block = true;
  // Sliding window per layer (causal only): empty, or one entry per layer, 0 for none. Layer l's
  // query at position p sees keys p - window + 1 .. p, on the sparse path (key blocks before the
  // window are never selected, its edge is masked per token) and on every dense fallback.
  std::vector<int64_t> layer_windows;

  int64_t window(int64_t layer) const {
    return layer_windows.empty() ? 0 : layer_windows[size_t(layer)];
  }
};

// When to run dense attention instead of XAttention.
struct DensePolicy {
  // Sequences attending to fewer than this many keys run dense. Unset: 8192 for CUDA tensors
  // (docs/benchmarks.md: on the H200 cuDNN dense beats estimate + sparse below about 8K at the
  // densities seen there) and 0 for CPU tensors (the reference path is always sparse).
  std::optional<int64_t> crossover_len;
  // Decode steps (len_q == 1) run dense: one query row gains nothing from block selection.
  bool dense_decode = true;
  // Video warm-up: denoising steps 0 .. warmup_steps - 1 run dense (the published video results
  // used 5 of 50). When it is > 0, run() must be given the step index.
  int64_t warmup_steps = 0;
  // Layers 0 .. dense_layers - 1 run dense at every step.
  int64_t dense_layers = 0;
  // Density-aware dispatch: a sequence runs dense when the cost table predicts dense attention
  // cheaper than estimate + sparse at the layer's predicted density for its length
  // (decide_dispatch). Needs the engine's density model (Engine::set_density_model; make_engine
  // sets the profile's). Unset: the built-in table of the CUDA device (builtin_cost_table); CPU
  // tensors then use none (the reference path is always sparse).
  std::optional<CostTable> cost_table;
  // Experiments: never dense by the cost rule (the length, decode and warm-up rules still apply;
  // crossover_len = 0 removes the length rule).
  bool force_sparse = false;
};

// The built-in cost table (builtin_cost_table) of CUDA device `index` (-1: the current one), by
// the name CUDA reports; needs an xattn built with CUDA.
CostTable cuda_device_cost_table(int index = -1);

// One attention problem. For a varlen batch set cu_seqlens_q and cu_seqlens_k; then batch is the
// number of sequences and len_q / len_k are the packed totals (the tensors' dimension 2).
struct ProblemShape {
  int64_t batch = 1;
  int64_t heads_q = 1;
  int64_t heads_kv = 1;
  int64_t len_q = 0;
  int64_t len_k = 0;
  int64_t head_dim = 0;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> cu_seqlens_q;  // [batch + 1] or empty (every sequence len_q, len_k)
  std::vector<int64_t> cu_seqlens_k;

  // The shape of q [batch, heads_q, len_q, head_dim] and k [batch, heads_kv, len_k, head_dim].
  static ProblemShape of(const at::Tensor& q, const at::Tensor& k);
  // A packed varlen batch: q [1, heads_q, total_q, d], k [1, heads_kv, total_k, d].
  static ProblemShape varlen(const at::Tensor& q, const at::Tensor& k,
                             std::vector<int64_t> cu_seqlens_q, std::vector<int64_t> cu_seqlens_k);

  bool is_varlen() const { return !cu_seqlens_q.empty(); }
  int64_t sequence_len_q(int64_t b) const;
  int64_t sequence_len_k(int64_t b) const;
  // e.g. "batch 2, heads 8/2, len_q 4096, len_k 4096, head_dim 128, cuda:0 BFloat16"
  std::string describe() const;
  bool operator==(const ProblemShape& other) const;
  bool operator!=(const ProblemShape& other) const { return !(*this == other); }
};

enum class AttentionPath {
  kSparse,  // XAttention: scoring, selection, block-sparse attention
  kDense,   // dense attention for the whole call
  kMixed,   // varlen batch: some sequences sparse, some dense
};

enum class DenseReason {
  kNone,  // sparse
  kBelowCrossover,
  kDecode,
  kWarmupStep,
  kDenseLayer,
  kPredictedSlower,  // the cost model predicts estimate + sparse slower than dense
};

const char* to_string(AttentionPath path);
const char* to_string(DenseReason reason);

// Buffers and geometry for one ProblemShape, made by Engine::plan and reused by every run with
// that shape (all layers, all steps). Holds on the shape's device: the thresholds, block scores
// [batch, heads_q, nQB, nKB] float32, kept-block counts [batch, heads_q, nQB] and indices
// [batch, heads_q, nQB, nKB] int32, the output like q and its log-sum-exp, and cu_seqlens.
class Plan {
 public:
  const ProblemShape& shape() const { return shape_; }
  int64_t num_q_blocks() const { return num_q_blocks_; }  // of the longest sequence
  int64_t num_k_blocks() const { return num_k_blocks_; }
  int64_t crossover_len() const { return crossover_len_; }
  // Bytes of the planned device buffers.
  int64_t workspace_bytes() const;

 private:
  friend class Engine;
  uint64_t engine_id_ = 0;  // the engine that made it
  ProblemShape shape_;
  int64_t max_len_q_ = 0, max_len_k_ = 0, num_q_blocks_ = 0, num_k_blocks_ = 0;
  int64_t crossover_len_ = 0;
  float scoring_scale_ = 0.f, attention_scale_ = 0.f;
  at::Tensor thresholds_;  // [layers, heads_q] float32
  at::Tensor block_scores_, kv_block_count_, kv_block_index_, out_, lse_;
  at::Tensor cu_seqlens_q_, cu_seqlens_k_;  // int32 on the device (varlen only)
  // Per layer, [batch, 1, nQB] float64: allowed blocks per row, and 1 where a row has any
  // (layers with one window share them); and the allowed blocks of all rows, on the host.
  std::vector<at::Tensor> row_allowed_, row_valid_;
  std::vector<double> allowed_total_;
  std::optional<CostTable> cost_table_;     // the dispatch's costs; unset: no cost rule
  std::vector<bool> short_or_decode_;       // per sequence: dense by length or decode
  std::vector<DenseReason> length_reason_;  // per sequence: kBelowCrossover, kDecode or kNone
  // [heads_q] float64 ones on the host: the density every dense call reports.
  at::Tensor dense_head_density_;
  // The cost rule's verdicts, per (layer, sequence), made once for the engine's density model
  // of version decisions_version_: a forward pass bound by the host must not pay for them on
  // every call.
  mutable std::vector<std::optional<DispatchDecision>> decisions_;
  mutable uint64_t decisions_version_ = 0;
};

// What the last run() did.
struct RunInfo {
  int64_t layer = -1;
  std::optional<int64_t> step;
  AttentionPath path = AttentionPath::kDense;
  DenseReason reason = DenseReason::kNone;    // why dense (for kMixed: the reason of the first
                                              // dense sequence)
  std::vector<AttentionPath> sequence_paths;  // [batch]: kSparse or kDense per sequence
  // The cost rule's verdict for the first sequence it judged, e.g. "predicted density 46% at
  // 16384: sparse 9.1 ms >= dense 7.5 ms"; empty when it judged none (no cost table or density
  // model, force_sparse, or every sequence dense by another rule).
  std::string decision;
  // [heads_q] float64: kept / allowed blocks over every sequence and query block (dense
  // sequences count as fully kept, so a dense call reports 1). On the plan's device after a
  // sparse or mixed call (read it after the forward pass, not between layers: reading waits for
  // the GPU), on the host after a dense call (then the plan's one tensor of ones: read it, do
  // not write it).
  at::Tensor head_density;
};

class Engine {
 public:
  // thresholds [num_layers, heads_q]: one τ per layer and query head (a profile's table).
  Engine(at::Tensor thresholds, EngineSettings settings = {}, DensePolicy policy = {});

  int64_t num_layers() const { return thresholds_.size(0); }
  int64_t heads_q() const { return thresholds_.size(1); }
  const at::Tensor& thresholds() const { return thresholds_; }  // CPU float32
  const EngineSettings& settings() const { return settings_; }
  const DensePolicy& policy() const { return policy_; }

  // Checks the shape against the thresholds and settings and allocates every buffer.
  Plan plan(const ProblemShape& shape) const;

  // Attention of `layer` on tensors of the planned shape. Launches only: no allocation on the
  // sparse path except a contiguous copy of an input whose head_dim stride is not 1. Returns the
  // output shaped like q; on the sparse and mixed paths it is the plan's output buffer, valid until
  // the next run with the same plan (clone it to keep it). `denoising_step` is required when the
  // policy has warm-up steps.
  at::Tensor run(const Plan& plan, int64_t layer, const at::Tensor& q, const at::Tensor& k,
                 const at::Tensor& v, std::optional<int64_t> denoising_step = std::nullopt);

  // Predicted kept density per layer against length, for the cost rule (make_engine sets the
  // profile's). Without one the cost rule is off.
  void set_density_model(DensityModel model);
  const std::optional<DensityModel>& density_model() const { return density_model_; }

  // The path the policy picks for a call with the plan, without running anything.
  AttentionPath path_for(const Plan& plan, int64_t layer,
                         std::optional<int64_t> denoising_step = std::nullopt) const;

  // Telemetry of the last run; path kDense and layer -1 before the first.
  const RunInfo& last_run() const { return last_run_; }
  // last_run().head_density on the CPU; undefined before the first run.
  at::Tensor last_head_density() const;

 private:
  DenseReason call_dense_reason(const Plan& plan, int64_t layer, std::optional<int64_t> step) const;
  // Per sequence: why it runs dense (kNone: sparse); `decision` gets the cost rule's text.
  std::vector<DenseReason> sequence_reasons(const Plan& plan, int64_t layer,
                                            std::optional<int64_t> step,
                                            std::string* decision) const;
  void check_inputs(const Plan& plan, int64_t layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) const;

  uint64_t id_;
  at::Tensor thresholds_;
  EngineSettings settings_;
  DensePolicy policy_;
  std::optional<DensityModel> density_model_;
  uint64_t density_version_ = 1;  // changes with density_model_ (plans' cached verdicts)
  RunInfo last_run_;
};

}  // namespace xattn::runtime
