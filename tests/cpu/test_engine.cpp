// The plan/run engine on CPU tensors: sparse runs equal ops::prefill with the layer's thresholds
// (batch, GQA, chunked prefill, non-causal), the dense fallbacks (crossover, decode, warm-up
// steps, dense layers) equal dense_attention and say so, telemetry equals head_density, a varlen
// batch equals its sequences run one by one (also when some of them fall back), shape mismatches
// and profiles of other models are refused with clear messages.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "xattn/calibrate/calibration.h"
#include "xattn/engine.h"
#include "xattn/engine_profile.h"
#include "xattn/error.h"
#include "xattn/io/paths.h"
#include "xattn/io/profile.h"
#include "xattn/kernels/problem.h"
#include "xattn/model/load_engine.h"
#include "xattn/ops.h"

namespace xattn::runtime {
namespace {


struct Qkv {
  at::Tensor q, k, v;
};

// Inputs with some structure (a shared direction plus noise) so that selection keeps a mix of
// blocks rather than all or none.
Qkv random_qkv(int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t len_q, int64_t len_k,
               int64_t d) {
  const at::Tensor direction = at::randn({1, 1, 1, d});
  Qkv x;
  x.q = at::randn({batch, heads_q, len_q, d}) + 2.0 * direction;
  x.k = at::randn({batch, heads_kv, len_k, d}) +
        2.0 * direction * at::rand({batch, heads_kv, len_k, 1});
  x.v = at::randn({batch, heads_kv, len_k, d});
  return x;
}

at::Tensor layer_thresholds(int64_t layers, int64_t heads) {
  // Distinct per layer and head, from 0.5 to 0.98.
  return at::linspace(0.5, 0.98, layers * heads, at::kFloat).view({layers, heads});
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

EstimateOptions options_of(const EngineSettings& s) {
  EstimateOptions o;
  o.stride = s.stride;
  o.block_size = s.block_size;
  o.causal = s.causal;
  o.keep_sink = s.keep_sink;
  o.keep_diagonal = s.keep_diagonal;
  return o;
}

template <typename Fn>
std::string error_of(Fn&& fn, ErrorKind expected_kind) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), expected_kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an xattn::Error";
  return "";
}

void expect_contains(const std::string& text, const std::string& needle) {
  EXPECT_NE(text.find(needle), std::string::npos) << "'" << needle << "' not in: " << text;
}

struct Case {
  int64_t batch, heads_q, heads_kv, len_q, len_k, d, block, stride;
  bool causal;
};

TEST(Engine, SparseRunEqualsPrefillWithTheLayersThresholds) {
  at::manual_seed(1);
  const std::vector<Case> cases = {
      {2, 4, 2, 300, 300, 32, 64, 8, true},    // batch, GQA, ragged last block
      {1, 4, 4, 129, 400, 16, 64, 4, true},    // chunked prefill, bottom-right causal
      {1, 6, 2, 640, 640, 32, 128, 16, true},  // block 128, S 16
      {2, 4, 1, 200, 200, 32, 64, 8, false},   // non-causal (video)
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message()
                 << "len_q " << c.len_q << " len_k " << c.len_k << " causal " << c.causal);
    const int64_t layers = 3;
    EngineSettings settings;
    settings.block_size = c.block;
    settings.stride = c.stride;
    settings.causal = c.causal;
    const at::Tensor tau = layer_thresholds(layers, c.heads_q);
    Engine engine(tau, settings);
    const Qkv x = random_qkv(c.batch, c.heads_q, c.heads_kv, c.len_q, c.len_k, c.d);
    const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));
    EXPECT_EQ(plan.crossover_len(), 0);  // CPU default: always sparse
    for (int64_t layer = 0; layer < layers; ++layer) {
      const at::Tensor out = engine.run(plan, layer, x.q, x.k, x.v);
      const at::Tensor expected = prefill(x.q, x.k, x.v, tau[layer], options_of(settings));
      EXPECT_EQ(engine.last_run().path, AttentionPath::kSparse);
      EXPECT_EQ(engine.last_run().reason, DenseReason::kNone);
      EXPECT_EQ(engine.last_run().layer, layer);
      EXPECT_TRUE(out.isfinite().all().item<bool>());
      EXPECT_LE(max_abs_diff(out, expected), 1e-6);
    }
    // The layers' thresholds differ, so their densities do too (the right row was used).
    engine.run(plan, 0, x.q, x.k, x.v);
    const at::Tensor density0 = engine.last_head_density();
    engine.run(plan, layers - 1, x.q, x.k, x.v);
    EXPECT_GT(engine.last_head_density().sum().item<double>(), density0.sum().item<double>());
  }
}

TEST(Engine, TelemetryDensityEqualsHeadDensity) {
  at::manual_seed(2);
  EngineSettings settings;
  settings.block_size = 64;
  const at::Tensor tau = layer_thresholds(2, 4);
  Engine engine(tau, settings);
  const Qkv x = random_qkv(2, 4, 2, 200, 456, 32);
  const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));
  engine.run(plan, 1, x.q, x.k, x.v);
  const EstimateOptions o = options_of(settings);
  const at::Tensor scores = antidiagonal_scores(x.q, x.k, o);
  const at::Tensor count = std::get<1>(select_blocks(scores, tau[1], 200, 456, o));
  const at::Tensor expected = head_density(count, 200, 456, 64, true);
  const at::Tensor density = engine.last_head_density();
  ASSERT_EQ(density.sizes(), expected.sizes());
  EXPECT_LE(max_abs_diff(density, expected), 1e-12);
  EXPECT_GT(density.min().item<double>(), 0.0);
  EXPECT_LT(density.min().item<double>(), 1.0);  // something was skipped
}

TEST(Engine, BelowTheCrossoverRunsDense) {
  at::manual_seed(3);
  DensePolicy policy;
  policy.crossover_len = 512;
  EngineSettings settings;
  settings.block_size = 64;
  Engine engine(layer_thresholds(2, 4), settings, policy);
  const Qkv x = random_qkv(1, 4, 2, 300, 300, 32);
  const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));
  EXPECT_EQ(engine.path_for(plan, 0), AttentionPath::kDense);
  const at::Tensor out = engine.run(plan, 0, x.q, x.k, x.v);
  EXPECT_EQ(engine.last_run().path, AttentionPath::kDense);
  EXPECT_EQ(engine.last_run().reason, DenseReason::kBelowCrossover);
  EXPECT_LE(max_abs_diff(out, std::get<0>(dense_attention(x.q, x.k, x.v, true, std::nullopt))),
            1e-6);
  EXPECT_TRUE(engine.last_head_density().eq(1.0).all().item<bool>());

  // At the crossover length it is sparse.
  const Qkv y = random_qkv(1, 4, 2, 512, 512, 32);
  const Plan long_plan = engine.plan(ProblemShape::of(y.q, y.k));
  engine.run(long_plan, 0, y.q, y.k, y.v);
  EXPECT_EQ(engine.last_run().path, AttentionPath::kSparse);
}

TEST(Engine, DecodeIsDense) {
  at::manual_seed(4);
  EngineSettings settings;
  settings.block_size = 64;
  Engine engine(layer_thresholds(1, 4), settings);  // crossover 0 on CPU
  const Qkv x = random_qkv(2, 4, 2, 1, 333, 32);
  const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));
  const at::Tensor out = engine.run(plan, 0, x.q, x.k, x.v);
  EXPECT_EQ(engine.last_run().path, AttentionPath::kDense);
  EXPECT_EQ(engine.last_run().reason, DenseReason::kDecode);
  EXPECT_LE(max_abs_diff(out, std::get<0>(dense_attention(x.q, x.k, x.v, true, std::nullopt))),
            1e-6);
  // With dense_decode off the single row goes through selection.
  DensePolicy sparse_decode;
  sparse_decode.dense_decode = false;
  Engine engine2(layer_thresholds(1, 4), settings, sparse_decode);
  engine2.run(engine2.plan(ProblemShape::of(x.q, x.k)), 0, x.q, x.k, x.v);
  EXPECT_EQ(engine2.last_run().path, AttentionPath::kSparse);
}

TEST(Engine, VideoWarmupStepsAndLayersAreDenseThenSparse) {
  at::manual_seed(5);
  EngineSettings settings;
  settings.block_size = 64;
  settings.causal = false;
  DensePolicy policy;
  policy.warmup_steps = 2;
  policy.dense_layers = 1;
  const at::Tensor tau = layer_thresholds(3, 4);
  Engine engine(tau, settings, policy);
  const Qkv x = random_qkv(1, 4, 4, 256, 256, 32);
  const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));
  const at::Tensor dense = std::get<0>(dense_attention(x.q, x.k, x.v, false, std::nullopt));
  for (int64_t step = 0; step < 4; ++step) {
    for (int64_t layer = 0; layer < 3; ++layer) {
      SCOPED_TRACE(testing::Message() << "step " << step << " layer " << layer);
      const at::Tensor out = engine.run(plan, layer, x.q, x.k, x.v, step);
      const RunInfo& info = engine.last_run();
      ASSERT_TRUE(info.step.has_value());
      EXPECT_EQ(*info.step, step);
      if (step < 2) {
        EXPECT_EQ(info.path, AttentionPath::kDense);
        EXPECT_EQ(info.reason, DenseReason::kWarmupStep);
        EXPECT_LE(max_abs_diff(out, dense), 1e-6);
      } else if (layer < 1) {
        EXPECT_EQ(info.path, AttentionPath::kDense);
        EXPECT_EQ(info.reason, DenseReason::kDenseLayer);
        EXPECT_LE(max_abs_diff(out, dense), 1e-6);
      } else {
        EXPECT_EQ(info.path, AttentionPath::kSparse);
        EXPECT_LE(max_abs_diff(out, prefill(x.q, x.k, x.v, tau[layer], options_of(settings))),
                  1e-6);
        EXPECT_GT(max_abs_diff(out, dense), 1e-4);  // really sparse
      }
    }
  }
  // Warm-up needs the step index.
  const std::string message =
      error_of([&] { engine.run(plan, 1, x.q, x.k, x.v); }, ErrorKind::kInvalidArgument);
  expect_contains(message, "pass the step index");
}

TEST(Engine, VarlenBatchEqualsPerSequenceRuns) {
  at::manual_seed(6);
  EngineSettings settings;
  settings.block_size = 64;
  const int64_t heads_q = 4, heads_kv = 2, d = 32;
  const at::Tensor tau = layer_thresholds(2, heads_q);
  // Sequences of different lengths, the second a chunked prefill (len_q < len_k).
  const std::vector<int64_t> cu_q = {0, 150, 279, 579}, cu_k = {0, 150, 429, 729};
  const Qkv x = random_qkv(1, heads_q, heads_kv, cu_q.back(), cu_k.back(), d);
  for (int64_t crossover : {0, 200}) {
    SCOPED_TRACE(testing::Message() << "crossover " << crossover);
    DensePolicy policy;
    policy.crossover_len = crossover;
    Engine engine(tau, settings, policy);
    const Plan plan = engine.plan(ProblemShape::varlen(x.q, x.k, cu_q, cu_k));
    const at::Tensor out = engine.run(plan, 1, x.q, x.k, x.v).clone();
    const RunInfo& info = engine.last_run();
    ASSERT_EQ(info.sequence_paths.size(), 3u);
    // Sequence 0 attends to 150 keys: dense when the crossover is 200.
    EXPECT_EQ(info.path, crossover ? AttentionPath::kMixed : AttentionPath::kSparse);
    EXPECT_EQ(info.sequence_paths[0], crossover ? AttentionPath::kDense : AttentionPath::kSparse);
    EXPECT_EQ(info.sequence_paths[1], AttentionPath::kSparse);
    if (crossover) EXPECT_EQ(info.reason, DenseReason::kBelowCrossover);

    Engine single(tau, settings, policy);
    at::Tensor kept = at::zeros({heads_q}, at::kDouble), allowed = at::zeros({}, at::kDouble);
    for (size_t b = 0; b + 1 < cu_q.size(); ++b) {
      const int64_t lq = cu_q[b + 1] - cu_q[b], lk = cu_k[b + 1] - cu_k[b];
      const at::Tensor q = x.q.narrow(2, cu_q[b], lq), k = x.k.narrow(2, cu_k[b], lk),
                       v = x.v.narrow(2, cu_k[b], lk);
      const at::Tensor expected = single.run(single.plan(ProblemShape::of(q, k)), 1, q, k, v);
      EXPECT_LE(max_abs_diff(out.narrow(2, cu_q[b], lq), expected), 1e-6) << "sequence " << b;
      // Density over the batch: kept blocks of every sequence over allowed blocks.
      const kernels::BlockGeometry g{lq, lk, 64, lk - lq, true};
      double rows = 0;
      for (int64_t i = 0; i < g.num_q_blocks(); ++i) rows += double(g.allowed_blocks(i));
      kept += single.last_head_density() * rows;
      allowed += rows;
    }
    EXPECT_LE(max_abs_diff(engine.last_head_density(), kept / allowed), 1e-12);
  }
}

TEST(Engine, MismatchedShapesAreRefusedClearly) {
  at::manual_seed(7);
  EngineSettings settings;
  settings.block_size = 64;
  Engine engine(layer_thresholds(2, 4), settings);
  const Qkv x = random_qkv(1, 4, 2, 256, 256, 32);
  const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));

  const Qkv longer = random_qkv(1, 4, 2, 300, 300, 32);
  std::string m = error_of([&] { engine.run(plan, 0, longer.q, longer.k, longer.v); },
                           ErrorKind::kInvalidArgument);
  expect_contains(m, "q has shape [1, 4, 300, 32] but the plan expects [1, 4, 256, 32]");
  expect_contains(m, "Engine::plan");

  m = error_of([&] { engine.run(plan, 0, x.q.to(at::kHalf), x.k, x.v); },
               ErrorKind::kInvalidArgument);
  expect_contains(m, "but the plan is for");

  m = error_of([&] { engine.run(plan, 2, x.q, x.k, x.v); }, ErrorKind::kInvalidArgument);
  expect_contains(m, "layer 2 has no thresholds");

  const Qkv other_heads = random_qkv(1, 8, 2, 256, 256, 32);
  m = error_of([&] { engine.plan(ProblemShape::of(other_heads.q, other_heads.k)); },
               ErrorKind::kInvalidArgument);
  expect_contains(m, "8 query heads but the thresholds have 4");

  Engine other(layer_thresholds(2, 4), settings);
  m = error_of([&] { other.run(plan, 0, x.q, x.k, x.v); }, ErrorKind::kInvalidArgument);
  expect_contains(m, "another engine");

  m = error_of(
      [&] {
        engine.plan(ProblemShape::varlen(x.q, x.k, {0, 100, 200}, {0, 100, 256}));
      },
      ErrorKind::kInvalidArgument);
  expect_contains(m, "packed tensors hold 256");

  m = error_of([&] { Engine(at::ones({4}), settings); }, ErrorKind::kInvalidArgument);
  expect_contains(m, "[num_layers, heads_q]");
}

// CUDA tensors (skipped without a device): the engine's kernels launches equal ops::prefill on
// the same device, varlen equals per-sequence runs, the dense fallbacks (SDPA, and the kernels for
// causal chunks) agree with dense attention, telemetry equals head_density.
TEST(EngineCuda, SparseVarlenAndDensePaths) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device (or LibTorch without CUDA)";
  at::manual_seed(8);
  const auto cuda = [](const at::Tensor& t) { return t.to(at::kCUDA, at::kBFloat16); };
  EngineSettings settings;  // block 128, stride 8
  const int64_t heads_q = 8, heads_kv = 2, d = 128;
  const at::Tensor tau = layer_thresholds(2, heads_q);
  DensePolicy sparse_policy;
  sparse_policy.crossover_len = 0;
  Engine engine(tau, settings, sparse_policy);

  // Sparse, batch 2, ragged length: equals ops::prefill on the GPU, density equals head_density.
  Qkv x = random_qkv(2, heads_q, heads_kv, 3000, 3000, d);
  x = {cuda(x.q), cuda(x.k), cuda(x.v)};
  const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));
  const at::Tensor out = engine.run(plan, 1, x.q, x.k, x.v).clone();
  EXPECT_EQ(engine.last_run().path, AttentionPath::kSparse);
  const EstimateOptions o = options_of(settings);
  EXPECT_LE(max_abs_diff(out, prefill(x.q, x.k, x.v, tau[1], o)), 1e-6);
  const at::Tensor count =
      std::get<1>(select_blocks(antidiagonal_scores(x.q, x.k, o), tau[1], 3000, 3000, o));
  EXPECT_LE(max_abs_diff(engine.last_head_density(), head_density(count, 3000, 3000, 128, true)),
            1e-12);

  // Varlen (one chunked sequence) equals per-sequence runs.
  const std::vector<int64_t> cu_q = {0, 1000, 1500, 4000}, cu_k = {0, 1000, 2700, 5200};
  Qkv p = random_qkv(1, heads_q, heads_kv, cu_q.back(), cu_k.back(), d);
  p = {cuda(p.q), cuda(p.k), cuda(p.v)};
  const Plan varlen_plan = engine.plan(ProblemShape::varlen(p.q, p.k, cu_q, cu_k));
  const at::Tensor packed = engine.run(varlen_plan, 0, p.q, p.k, p.v).clone();
  for (size_t b = 0; b + 1 < cu_q.size(); ++b) {
    const int64_t lq = cu_q[b + 1] - cu_q[b], lk = cu_k[b + 1] - cu_k[b];
    const at::Tensor q = p.q.narrow(2, cu_q[b], lq), k = p.k.narrow(2, cu_k[b], lk),
                     v = p.v.narrow(2, cu_k[b], lk);
    const at::Tensor single = engine.run(engine.plan(ProblemShape::of(q, k)), 0, q, k, v);
    EXPECT_LE(max_abs_diff(packed.narrow(2, cu_q[b], lq), single), 1e-6) << "sequence " << b;
  }

  // Dense fallbacks with the default CUDA crossover (8192): SDPA for full causal prefill and
  // decode, our kernels for causal chunks; all against dense_attention (bf16 rounding).
  Engine default_engine(tau, settings);
  for (auto [len_q, len_k, reason] :
       {std::tuple{int64_t(3000), int64_t(3000), DenseReason::kBelowCrossover},
        std::tuple{int64_t(1), int64_t(3000), DenseReason::kDecode},
        std::tuple{int64_t(700), int64_t(3000), DenseReason::kBelowCrossover}}) {
    SCOPED_TRACE(testing::Message() << "len_q " << len_q << " len_k " << len_k);
    Qkv y = random_qkv(1, heads_q, heads_kv, len_q, len_k, d);
    y = {cuda(y.q), cuda(y.k), cuda(y.v)};
    const Plan dense_plan = default_engine.plan(ProblemShape::of(y.q, y.k));
    EXPECT_EQ(dense_plan.crossover_len(), 8192);
    const at::Tensor got = default_engine.run(dense_plan, 0, y.q, y.k, y.v);
    EXPECT_EQ(default_engine.last_run().path, AttentionPath::kDense);
    EXPECT_EQ(default_engine.last_run().reason, reason);
    EXPECT_LE(max_abs_diff(got, std::get<0>(dense_attention(y.q, y.k, y.v, true, std::nullopt))),
              2e-2);
  }

  // Non-causal warm-up step through SDPA.
  EngineSettings video = settings;
  video.causal = false;
  DensePolicy warmup;
  warmup.warmup_steps = 1;
  warmup.crossover_len = 0;
  Engine video_engine(tau, video, warmup);
  Qkv z = random_qkv(1, heads_q, heads_kv, 2048, 2048, d);
  z = {cuda(z.q), cuda(z.k), cuda(z.v)};
  const Plan video_plan = video_engine.plan(ProblemShape::of(z.q, z.k));
  const at::Tensor warm = video_engine.run(video_plan, 1, z.q, z.k, z.v, 0);
  EXPECT_EQ(video_engine.last_run().reason, DenseReason::kWarmupStep);
  EXPECT_LE(max_abs_diff(warm, std::get<0>(dense_attention(z.q, z.k, z.v, false, std::nullopt))),
            2e-2);
  const at::Tensor later = video_engine.run(video_plan, 1, z.q, z.k, z.v, 1);
  EXPECT_EQ(video_engine.last_run().path, AttentionPath::kSparse);
  EXPECT_LE(max_abs_diff(later, prefill(z.q, z.k, z.v, tau[1], options_of(video))), 1e-6);
}

}  // namespace
}  // namespace xattn::runtime

namespace xattn::calibrate {
namespace {

using io::ModelSignature;
using io::Profile;
using io::write_profile;
using model::load_engine;
using model::model_signature_of;
using runtime::engine_settings_of;

const std::string kBundledModel = std::string(XATTN_SOURCE_DIR) + "/examples/models/xattn-byte";

Profile profile_for(const ModelSignature& model, float tau) {
  Profile p;
  p.model = model;
  p.kernel = {64, 8, "1/(sqrt(d)*S)", true};
  const size_t n = size_t(model.num_layers * model.heads_q);
  p.thresholds.assign(n, tau);
  p.thresholds[0] = 0.5f;
  p.predicted_density.assign(n, 0.5f);
  p.predicted_error.assign(n, 0.01f);
  p.predicted_mean_density = 0.5;
  p.predicted_mean_error = 0.01;
  p.budget = {0.02, "output_error", std::nullopt, {0.5, 0.9, 1.0}};
  p.data = {"fnv1a64:0", 1, {1024}, "test"};
  p.tool_version = "xattn test";
  p.created_utc = "2026-11-28T11:00:00Z";
  return p;
}

class EngineProfile : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = io::make_temporary_folder("xattn-engine-"); }
  void TearDown() override { io::remove_tree(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

TEST_F(EngineProfile, LoadsTheProfileOfTheModel) {
  const ModelSignature model = model_signature_of(kBundledModel);
  const Profile profile = profile_for(model, 0.9f);
  write_profile(path("p.h5"), profile, false);
  runtime::Engine engine = load_engine(path("p.h5"), kBundledModel);
  EXPECT_EQ(engine.num_layers(), model.num_layers);
  EXPECT_EQ(engine.heads_q(), model.heads_q);
  EXPECT_FLOAT_EQ(engine.thresholds()[0][0].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(engine.thresholds()[1][2].item<float>(), 0.9f);
  EXPECT_EQ(engine.settings().block_size, 64);
  EXPECT_EQ(engine.settings().stride, 8);
  EXPECT_TRUE(engine.settings().causal);
}

TEST_F(EngineProfile, AProfileForAnotherModelIsRefused) {
  ModelSignature other = model_signature_of(kBundledModel);
  other.num_layers += 2;
  other.config_hash = "fnv1a64:0000000000000000";
  write_profile(path("other.h5"), profile_for(other, 0.9f), false);
  const std::string m = runtime::error_of([&] { load_engine(path("other.h5"), kBundledModel); },
                                          ErrorKind::kBadInput);
  runtime::expect_contains(m, "profile does not match the model");
  runtime::expect_contains(m, "layers");
  runtime::expect_contains(m, "xattn calibrate");
  runtime::expect_contains(m, path("other.h5"));
}

TEST_F(EngineProfile, UnknownScaleRuleIsRefused) {
  Profile p = profile_for(model_signature_of(kBundledModel), 0.9f);
  p.kernel.scale_rule = "1/d";
  const std::string m = runtime::error_of([&] { engine_settings_of(p); }, ErrorKind::kBadInput);
  runtime::expect_contains(m, "1/(sqrt(d)*S)");
}

}  // namespace
}  // namespace xattn::calibrate
