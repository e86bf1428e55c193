// Density-aware dispatch (xattn/cost_model.h): the decision against hand-computed costs on both
// sides of the boundary, the density model's power law, the telemetry text, the engine's use of
// the rule (dense when predicted slower, force_sparse, no rule without a density model), the
// fallback for profiles without a density fit, the profile's density_fit group and the cost table
// file.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <string>

#include "xattn/cost_model.h"
#include "xattn/engine.h"
#include "xattn/engine_profile.h"
#include "xattn/error.h"
#include "xattn/io/paths.h"
#include "xattn/io/profile.h"
#include "xattn/ops.h"

namespace xattn::runtime {
namespace {

std::string error_text(const std::function<void()>& fn, ErrorKind kind) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an xattn::Error";
  return "";
}

// Easy numbers: with len 1024, 1 head, d 1, block 128, causal there are 1024 * 1025 / 2 = 524800
// allowed pairs and 524800 / 16384 = 32.03125 allowed blocks (as the model counts them).
// dense = 524800 x 1 ns = 0.5248 ms; scoring = 524800 x 0.1 ns = 0.05248 ms; sparse attention
// = density x 32.03125 x 2e4 ns = density x 0.640625 ms. Boundary: density 0.47232 / 0.640625
// = 0.737280.
CostTable easy_table() {
  CostTable t;
  t.device = "test";
  t.dense_ns_per_unit = 1.0;
  t.scoring_ns_per_unit = {{8, 0.1}};
  t.sparse_ns_per_block_dim = 2e4;
  t.min_sparse_gain = 0;  // the plain comparison; CostModel.SparseMustSaveTheMargin has one
  return t;
}

CallGeometry easy_call() {
  CallGeometry c;
  c.len_q = c.len_k = 1024;
  c.heads_q = 1;
  c.head_dim = 1;
  return c;
}

DensityModel constant(double density, int64_t layers = 1, bool fitted = true) {
  DensityModel m;
  m.density.assign(size_t(layers), density);
  m.fitted = fitted;
  return m;
}

TEST(CostModel, DecisionOnBothSidesOfTheBoundary) {
  const DispatchDecision below = decide_dispatch(easy_table(), constant(0.73), 0, easy_call());
  EXPECT_TRUE(below.sparse);
  EXPECT_NEAR(below.dense_ms, 0.5248, 1e-9);
  EXPECT_NEAR(below.sparse_ms, 0.05248 + 0.73 * 0.640625, 1e-9);
  const DispatchDecision above = decide_dispatch(easy_table(), constant(0.74), 0, easy_call());
  EXPECT_FALSE(above.sparse);
  EXPECT_NEAR(above.sparse_ms, 0.05248 + 0.74 * 0.640625, 1e-9);
  // Fixed costs move the boundary: 0.1 ms more for sparse makes 0.73 dense.
  CostTable fixed = easy_table();
  fixed.sparse_fixed_ms = 0.1;
  EXPECT_FALSE(decide_dispatch(fixed, constant(0.73), 0, easy_call()).sparse);
}

// With min_sparse_gain 0.1 sparse must be predicted below 0.9 x dense = 0.47232 ms: density
// (0.47232 - 0.05248) / 0.640625 = 0.655375 is the new boundary.
TEST(CostModel, SparseMustSaveTheMargin) {
  CostTable t = easy_table();
  t.min_sparse_gain = 0.1;
  EXPECT_TRUE(decide_dispatch(t, constant(0.65), 0, easy_call()).sparse);
  const DispatchDecision marginal = decide_dispatch(t, constant(0.66), 0, easy_call());
  EXPECT_FALSE(marginal.sparse);
  EXPECT_LT(marginal.sparse_ms, marginal.dense_ms);  // cheaper, but not by enough
  EXPECT_EQ(marginal.reason,
            "predicted density 66% at 1024: sparse 0.475 ms >= 90% of dense 0.525 ms");
  EXPECT_EQ(CostTable().min_sparse_gain, 0.1);
  EXPECT_EQ(builtin_cost_table("NVIDIA H200").min_sparse_gain, 0.1);
}

TEST(CostModel, StrideAndBlockScaling) {
  CostTable t = easy_table();
  // Stride 16 missing: the nearest (8) scaled by 8 / 16.
  EXPECT_DOUBLE_EQ(t.scoring_ns_at(16), 0.05);
  t.scoring_ns_per_unit[16] = 0.07;
  EXPECT_DOUBLE_EQ(t.scoring_ns_at(16), 0.07);
  EXPECT_DOUBLE_EQ(t.scoring_ns_at(32), 0.035);
  // Chunked prefill: 512 queries at the end of 1024 keys see 512 * 512 + 512 * 513 / 2 pairs.
  EXPECT_DOUBLE_EQ(allowed_pairs(512, 1024, true), 512.0 * 512 + 512.0 * 513 / 2);
  EXPECT_DOUBLE_EQ(allowed_pairs(512, 1024, false), 512.0 * 1024);
}

TEST(CostModel, TelemetryText) {
  EXPECT_EQ(decide_dispatch(easy_table(), constant(0.74), 0, easy_call()).reason,
            "predicted density 74% at 1024: sparse 0.527 ms >= dense 0.525 ms");
  EXPECT_EQ(decide_dispatch(easy_table(), constant(0.5), 0, easy_call()).reason,
            "predicted density 50% at 1024: sparse 0.373 ms < dense 0.525 ms");
  EXPECT_EQ(decide_dispatch(easy_table(), constant(0.5, 1, false), 0, easy_call()).reason,
            "predicted density 50% at 1024: sparse 0.373 ms < dense 0.525 ms (profile has no "
            "density fit: calibrated density assumed)");
}

TEST(CostModel, DensityFallsWithLengthAsFitted) {
  DensityModel m;
  m.reference_len = 4096;
  m.density = {0.4, 0.9};
  m.exponent = {0.5, 0.0};
  m.fitted = true;
  EXPECT_NEAR(m.at(0, 16384), 0.2, 1e-12);
  EXPECT_NEAR(m.at(0, 1024), 0.8, 1e-12);
  EXPECT_DOUBLE_EQ(m.at(0, 256), 1.0);  // clamped
  EXPECT_DOUBLE_EQ(m.at(1, 131072), 0.9);
  error_text([&] { m.at(2, 1024); }, ErrorKind::kInvalidArgument);
}

TEST(CostModel, BuiltinTables) {
  const CostTable h200 = builtin_cost_table("NVIDIA H200");
  EXPECT_FALSE(h200.estimate);
  EXPECT_TRUE(builtin_cost_table("NVIDIA A100-SXM4-80GB").estimate);
  EXPECT_TRUE(builtin_cost_table("NVIDIA H100 80GB HBM3").estimate);
  // docs/benchmarks.md, 32/8 heads, d 128, 128K: cuDNN 255.5 ms, estimate S8 29.0 ms, sparse at
  // 50 % 154.5 ms: the table reproduces them within 10 %.
  CallGeometry c;
  c.len_q = c.len_k = 131072;
  c.heads_q = 32;
  c.head_dim = 128;
  const DispatchDecision d = decide_dispatch(h200, constant(0.5), 0, c);
  EXPECT_NEAR(d.dense_ms, 255.5, 25.0);
  EXPECT_NEAR(d.sparse_ms, 29.0 + 154.5, 18.0);
  EXPECT_TRUE(d.sparse);
  // The model (6 heads, d 64, 46 %) at 16K: dense predicted cheaper with this table.
  c.len_q = c.len_k = 16384;
  c.heads_q = 6;
  c.head_dim = 64;
  EXPECT_FALSE(decide_dispatch(h200, constant(0.46), 0, c).sparse);
}

// The engine on CPU tensors with an explicit cost table (CPU has none by default).
struct Inputs {
  at::Tensor q, k, v;
};

Inputs inputs(int64_t len) {
  Inputs x;
  x.q = at::randn({1, 2, len, 16});
  x.k = at::randn({1, 1, len, 16});
  x.v = at::randn({1, 1, len, 16});
  return x;
}

// An engine with the easy table, block 64, τ 0.9, 2 heads.
Engine easy_engine(int64_t layers) {
  DensePolicy policy;
  policy.cost_table = easy_table();
  EngineSettings settings;
  settings.block_size = 64;
  return Engine(at::full({layers, 2}, 0.9f), settings, policy);
}

TEST(CostModel, EngineRunsDenseWhenPredictedSlower) {
  Engine engine = easy_engine(2);
  DensityModel m = constant(0.1, 2);
  m.density[1] = 1.0;  // layer 1 mostly dense: predicted slower as a whole
  engine.set_density_model(m);
  const Inputs x = inputs(256);
  const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));

  const at::Tensor out1 = engine.run(plan, 1, x.q, x.k, x.v).clone();
  EXPECT_EQ(engine.last_run().path, AttentionPath::kDense);
  EXPECT_EQ(engine.last_run().reason, DenseReason::kPredictedSlower);
  EXPECT_EQ(std::string(to_string(engine.last_run().reason)), "predicted slower than dense");
  EXPECT_NE(engine.last_run().decision.find("predicted density 100% at 256"), std::string::npos)
      << engine.last_run().decision;
  EXPECT_EQ(engine.path_for(plan, 1), AttentionPath::kDense);
  const auto [dense, lse] = dense_attention(x.q, x.k, x.v, true, std::nullopt);
  EXPECT_LT((out1 - dense).abs().max().item<double>(), 1e-5);

  engine.run(plan, 0, x.q, x.k, x.v);
  EXPECT_EQ(engine.last_run().path, AttentionPath::kSparse);
  EXPECT_NE(engine.last_run().decision.find("predicted density 10% at 256: sparse"),
            std::string::npos)
      << engine.last_run().decision;
}

// The verdicts a plan caches follow the engine's density model: a new model applies to plans
// made before it, and repeated calls keep the verdict and its text.
TEST(CostModel, PlanVerdictsFollowTheDensityModel) {
  Engine engine = easy_engine(1);
  engine.set_density_model(constant(1.0, 1));
  const Inputs x = inputs(256);
  const Plan plan = engine.plan(ProblemShape::of(x.q, x.k));
  for (int repeat = 0; repeat < 2; ++repeat) {
    engine.run(plan, 0, x.q, x.k, x.v);
    EXPECT_EQ(engine.last_run().path, AttentionPath::kDense);
    EXPECT_NE(engine.last_run().decision.find("predicted density 100% at 256"), std::string::npos)
        << engine.last_run().decision;
    EXPECT_EQ(engine.last_run().head_density.sum().item<double>(), 2.0);
  }
  engine.set_density_model(constant(0.1, 1));
  engine.run(plan, 0, x.q, x.k, x.v);
  EXPECT_EQ(engine.last_run().path, AttentionPath::kSparse);
  EXPECT_NE(engine.last_run().decision.find("predicted density 10% at 256: sparse"),
            std::string::npos)
      << engine.last_run().decision;
  EXPECT_EQ(engine.path_for(plan, 0), AttentionPath::kSparse);
}

TEST(CostModel, ForceSparseAndNoDensityModelKeepSparse) {
  DensePolicy policy;
  policy.cost_table = easy_table();
  policy.force_sparse = true;
  Engine forced(at::full({1, 2}, 0.9f), EngineSettings{}, policy);
  forced.set_density_model(constant(1.0));
  const Inputs x = inputs(300);
  const Plan plan = forced.plan(ProblemShape::of(x.q, x.k));
  forced.run(plan, 0, x.q, x.k, x.v);
  EXPECT_EQ(forced.last_run().path, AttentionPath::kSparse);
  EXPECT_EQ(forced.last_run().decision, "");

  policy.force_sparse = false;
  Engine no_model(at::full({1, 2}, 0.9f), EngineSettings{}, policy);
  const Plan plan2 = no_model.plan(ProblemShape::of(x.q, x.k));
  no_model.run(plan2, 0, x.q, x.k, x.v);
  EXPECT_EQ(no_model.last_run().path, AttentionPath::kSparse);
  EXPECT_EQ(no_model.last_run().decision, "");

  error_text([&] { no_model.set_density_model(constant(0.5, 3)); }, ErrorKind::kInvalidArgument);
}

TEST(CostModel, VarlenDecidesPerSequence) {
  // Two sequences, 2 heads, d 16, block 128, the easy table. 128 keys at density 0.5: dense
  // 8256 pairs x 32 x 1 ns = 0.264 ms; sparse 0.0264 + 0.5 x 8256 / 16384 x 2 x 16 x 2e4 ns =
  // 0.188 ms: sparse. 1024 keys at density 0.74 (the model rises with length here): dense
  // 16.79 ms; sparse 1.679 + 0.74 x 64.06 x 16 x 2e4 ns = 16.85 ms: dense.
  DensePolicy policy;
  policy.cost_table = easy_table();
  Engine engine(at::full({1, 2}, 0.9f), EngineSettings{}, policy);
  DensityModel m;
  m.reference_len = 128;
  m.density = {0.5};
  m.exponent = {-std::log(0.74 / 0.5) / std::log(8.0)};  // 0.5 at 128, 0.74 at 1024
  m.fitted = true;
  engine.set_density_model(m);
  const at::Tensor q = at::randn({1, 2, 1152, 16}), k = at::randn({1, 1, 1152, 16}),
                   v = at::randn({1, 1, 1152, 16});
  const Plan plan = engine.plan(ProblemShape::varlen(q, k, {0, 128, 1152}, {0, 128, 1152}));
  engine.run(plan, 0, q, k, v);
  ASSERT_EQ(engine.last_run().sequence_paths.size(), 2u);
  EXPECT_EQ(engine.last_run().path, AttentionPath::kMixed);
  EXPECT_EQ(engine.last_run().sequence_paths[0], AttentionPath::kSparse);
  EXPECT_EQ(engine.last_run().sequence_paths[1], AttentionPath::kDense);
  EXPECT_EQ(engine.last_run().reason, DenseReason::kPredictedSlower);
}

io::Profile small_profile() {
  io::Profile p;
  p.model = {"llama", 2, 2, 1, 16, "", ""};
  p.thresholds = {0.9f, 0.9f, 0.9f, 0.9f};
  p.predicted_density = {0.2f, 0.4f, 0.9f, 1.0f};
  p.predicted_error = {0, 0, 0, 0};
  p.predicted_mean_density = 0.6;
  p.budget = {0.02, "output_error", std::nullopt, {0.9}};
  p.data = {"fnv1a64:0", 1, {1024}, "test"};
  p.tool_version = "xattn test";
  p.created_utc = "2026-12-01T19:00:00Z";
  return p;
}

TEST(CostModel, OldProfileAssumesTheCalibratedDensityEverywhere) {
  const io::Profile p = small_profile();
  const DensityModel m = density_model_of(p);
  EXPECT_FALSE(m.fitted);
  EXPECT_NEAR(m.at(0, 4096), 0.3, 1e-6);
  EXPECT_NEAR(m.at(0, 131072), 0.3, 1e-6);
  EXPECT_NEAR(m.at(1, 131072), 0.95, 1e-6);
  DensePolicy policy;
  policy.cost_table = easy_table();
  const Engine engine = make_engine(p, p.model, policy);
  ASSERT_TRUE(engine.density_model().has_value());
  EXPECT_FALSE(engine.density_model()->fitted);
}

class DensityFitFile : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = io::make_temporary_folder("xattn-cost-"); }
  void TearDown() override { io::remove_tree(dir_); }
  std::string dir_;
};

TEST_F(DensityFitFile, RoundTripsAndFeedsTheEngine) {
  io::Profile p = small_profile();
  p.density_fit = {4096, {0.3, 0.8}, {0.5, 0.1}, {2048, 4096}};
  io::write_profile(dir_ + "/p.h5", p, false);
  const io::Profile back = io::read_profile(dir_ + "/p.h5");
  EXPECT_GE(back.format_minor, 4);  // 1.4 added the density fit
  EXPECT_EQ(back.density_fit.reference_len, 4096);
  EXPECT_EQ(back.density_fit.density, p.density_fit.density);
  EXPECT_EQ(back.density_fit.exponent, p.density_fit.exponent);
  EXPECT_EQ(back.density_fit.lengths, p.density_fit.lengths);
  EXPECT_NE(io::profile_to_json(back).find("\"density_fit\""), std::string::npos);
  const DensityModel m = density_model_of(back);
  EXPECT_TRUE(m.fitted);
  EXPECT_NEAR(m.at(0, 16384), 0.15, 1e-12);

  p.density_fit.exponent = {0.5};
  const std::string e = error_text([&] { io::validate_profile(p); }, ErrorKind::kBadInput);
  EXPECT_NE(e.find("/density_fit/exponent"), std::string::npos) << e;
}

TEST_F(DensityFitFile, CostTableRoundTripAndBadFile) {
  CostTable t = builtin_cost_table("NVIDIA H200");
  t.min_sparse_gain = 0.25;
  write_cost_table(dir_ + "/c.json", t);
  const CostTable back = read_cost_table(dir_ + "/c.json");
  EXPECT_EQ(back.device, t.device);
  EXPECT_DOUBLE_EQ(back.dense_ns_per_unit, t.dense_ns_per_unit);
  EXPECT_EQ(back.scoring_ns_per_unit, t.scoring_ns_per_unit);
  EXPECT_DOUBLE_EQ(back.sparse_ns_per_block_dim, t.sparse_ns_per_block_dim);
  EXPECT_DOUBLE_EQ(back.min_sparse_gain, 0.25);
  // Tables written before the margin existed get the default.
  std::ofstream(dir_ + "/old.json")
      << "{\"dense_ns_per_unit\": 1, \"dense_fixed_ms\": 0, \"sparse_ns_per_block_dim\": 1, "
         "\"sparse_fixed_ms\": 0, \"scoring_ns_per_unit\": {\"8\": 1}}";
  EXPECT_DOUBLE_EQ(read_cost_table(dir_ + "/old.json").min_sparse_gain, 0.1);
  std::ofstream(dir_ + "/gain.json")
      << "{\"dense_ns_per_unit\": 1, \"dense_fixed_ms\": 0, \"sparse_ns_per_block_dim\": 1, "
         "\"sparse_fixed_ms\": 0, \"scoring_ns_per_unit\": {\"8\": 1}, \"min_sparse_gain\": 1}";
  const std::string gain =
      error_text([&] { read_cost_table(dir_ + "/gain.json"); }, ErrorKind::kBadInput);
  EXPECT_NE(gain.find("min_sparse_gain"), std::string::npos) << gain;
  std::ofstream(dir_ + "/bad.json") << "{\"dense_ns_per_unit\": 1}";
  const std::string e =
      error_text([&] { read_cost_table(dir_ + "/bad.json"); }, ErrorKind::kBadInput);
  EXPECT_NE(e.find("dense_fixed_ms"), std::string::npos) << e;
  error_text([&] { read_cost_table(dir_ + "/missing.json"); }, ErrorKind::kIo);
}

}  // namespace
}  // namespace xattn::runtime
