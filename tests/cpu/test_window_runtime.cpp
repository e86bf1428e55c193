// Sliding windows above the kernels: the ops and the engine take a window (per layer for the
// engine), the profile records each layer's window (format 1.5; older files read as none) and
// validates it, statistics measure windowed layers with the window, and `calibrate` runs on the
// windowed tiny checkpoints past their window.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "scratch.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/engine.h"
#include "xattn/engine_profile.h"
#include "xattn/error.h"
#include "xattn/io/profile.h"
#include "xattn/ops.h"

namespace xattn {
namespace {

const std::string kModels = std::string(XATTN_SOURCE_DIR) + "/tests/data/models/";

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Float64 dense windowed attention: query p sees keys p - window + 1 .. p.
at::Tensor windowed_dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          int64_t window) {
  const int64_t group = q.size(1) / k.size(1), lq = q.size(2), lk = k.size(2);
  const at::Tensor kr = k.to(at::kDouble).repeat_interleave(group, 1);
  const at::Tensor vr = v.to(at::kDouble).repeat_interleave(group, 1);
  at::Tensor s = at::matmul(q.to(at::kDouble), kr.transpose(-1, -2)) / std::sqrt(double(q.size(3)));
  const at::Tensor p = at::arange(lk - lq, lk, at::kLong).unsqueeze(1);
  const at::Tensor j = at::arange(lk, at::kLong).unsqueeze(0);
  at::Tensor hidden = j > p;
  if (window > 0) hidden = hidden.logical_or(j <= p - window);
  s.masked_fill_(hidden, -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(s, -1), vr);
}

TEST(WindowOps, PrefillDenseAndMassHonourTheWindow) {
  at::manual_seed(3);
  const at::Tensor q = at::randn({2, 4, 150, 16}), k = at::randn({2, 2, 300, 16}),
                   v = at::randn({2, 2, 300, 16});
  for (int64_t window : {1, 30, 64, 100, 500}) {
    SCOPED_TRACE(window);
    const at::Tensor expected = windowed_dense(q, k, v, window);
    runtime::EstimateOptions o;
    o.block_size = 64;
    o.window = window;
    EXPECT_LT(max_abs_diff(runtime::prefill(q, k, v, at::ones({4}), o), expected), 1e-5);
    EXPECT_LT(max_abs_diff(std::get<0>(runtime::dense_attention(q, k, v, true, std::nullopt,
                                                                window)),
                           expected),
              1e-5);
    // Exact block mass rows sum to 1 and hold nothing before the window.
    const at::Tensor mass = runtime::exact_block_mass(q, k, true, 64, std::nullopt, window);
    EXPECT_LT((mass.sum(-1) - 1).abs().max().item<float>(), 1e-4);
    // Density at tau = 1 is 1 against the windowed allowed count.
    o.dense_last_query_block = false;
    auto [scores, mask] = runtime::estimate(q, k, at::ones({4}), o);
    const at::Tensor count = mask.sum(-1).to(at::kInt);
    EXPECT_LT((runtime::head_density(count, 150, 300, 64, true, window) - 1).abs().max().item<double>(),
              1e-12);
  }
  runtime::EstimateOptions bad;
  bad.window = -2;
  EXPECT_THROW(runtime::prefill(q, k, v, at::ones({4}), bad), Error);
  bad.window = 8;
  bad.causal = false;
  EXPECT_THROW(runtime::prefill(q, k, v, at::ones({4}), bad), Error);
}

// The engine takes one window per layer, on the sparse path and on its dense fallbacks.
TEST(WindowEngine, PerLayerWindowsSparseAndDense) {
  at::manual_seed(5);
  const at::Tensor q = at::randn({1, 4, 400, 16}), k = at::randn({1, 2, 400, 16}),
                   v = at::randn({1, 2, 400, 16});
  runtime::EngineSettings settings;
  settings.block_size = 64;
  settings.layer_windows = {0, 100, 33};
  runtime::Engine sparse(at::ones({3, 4}), settings);
  const runtime::Plan plan = sparse.plan(runtime::ProblemShape::of(q, k));
  runtime::DensePolicy always_dense;
  always_dense.crossover_len = 1 << 20;
  runtime::Engine dense(at::full({3, 4}, 0.5), settings, always_dense);
  const runtime::Plan dense_plan = dense.plan(runtime::ProblemShape::of(q, k));
  for (int64_t layer = 0; layer < 3; ++layer) {
    SCOPED_TRACE(layer);
    const at::Tensor expected = windowed_dense(q, k, v, settings.layer_windows[size_t(layer)]);
    EXPECT_LT(max_abs_diff(sparse.run(plan, layer, q, k, v), expected), 1e-5);
    EXPECT_EQ(sparse.last_run().path, runtime::AttentionPath::kSparse);
    EXPECT_LT((sparse.last_head_density() - 1).abs().max().item<double>(), 1e-12);
    EXPECT_LT(max_abs_diff(dense.run(dense_plan, layer, q, k, v), expected), 1e-5);
    EXPECT_EQ(dense.last_run().path, runtime::AttentionPath::kDense);
  }
  runtime::EngineSettings wrong = settings;
  wrong.layer_windows = {0, 100};
  EXPECT_THROW(runtime::Engine(at::ones({3, 4}), wrong), Error);
  wrong.layer_windows = {0, -1, 0};
  EXPECT_THROW(runtime::Engine(at::ones({3, 4}), wrong), Error);
}

io::Profile small_profile() {
  io::Profile p;
  p.model = {"mistral", 2, 4, 2, 16, "", ""};
  p.thresholds.assign(8, 0.9f);
  p.predicted_density.assign(8, 0.5f);
  p.predicted_error.assign(8, 0.01f);
  p.budget.epsilon = 0.1;
  p.budget.metric = "kl";
  p.data.sample_count = 1;
  p.data.lengths = {64};
  p.tool_version = "test";
  p.created_utc = io::utc_now_iso8601();
  return p;
}

TEST(WindowProfile, RecordedReadBackAndValidated) {
  test_files::ScratchFolder dir;
  io::Profile p = small_profile();
  p.kernel.layer_windows = {16, 0};
  io::write_profile(dir.path() + "/w.h5", p, false);
  const io::Profile back = io::read_profile(dir.path() + "/w.h5");
  EXPECT_EQ(back.kernel.layer_windows, (std::vector<int64_t>{16, 0}));
  EXPECT_EQ(back.format_minor, 5);
  EXPECT_NE(io::profile_to_json(back).find("\"layer_windows\""), std::string::npos);
  EXPECT_NE(io::format_profile_summary(back).find("sliding window 16 on 1 of 2 layers"),
            std::string::npos);
  EXPECT_EQ(runtime::engine_settings_of(back).layer_windows, (std::vector<int64_t>{16, 0}));
  // No window: nothing written, read back as none (as files before 1.5).
  p.kernel.layer_windows.clear();
  io::write_profile(dir.path() + "/none.h5", p, false);
  EXPECT_TRUE(io::read_profile(dir.path() + "/none.h5").kernel.layer_windows.empty());
  auto refused = [&](std::vector<int64_t> windows, bool causal, const char* word) {
    io::Profile bad = small_profile();
    bad.kernel.layer_windows = std::move(windows);
    bad.kernel.causal = causal;
    try {
      io::validate_profile(bad);
      ADD_FAILURE() << "accepted " << word;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("/kernel/layer_windows"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  refused({16}, true, "expected none or num_layers");
  refused({16, -1}, true, ">= 0");
  refused({16, 0}, false, "causal");
}

// Windowed layers measured with the window: at tau = 1 density 1 and recall 1, and a calibrate
// run past the window on two windowed checkpoints records the windows in the statistics and the
// profile.
TEST(WindowCalibration, StatisticsAndCalibrateOnWindowedCheckpoints) {
  at::manual_seed(9);
  const at::Tensor q = at::randn({1, 4, 128, 16}), k = at::randn({1, 2, 128, 16}),
                   v = at::randn({1, 2, 128, 16});
  calibrate::StatisticsSettings s;
  s.block_size = 16;
  s.stride = 4;
  s.taus = {0.5, 1.0};
  const calibrate::LayerMeasurement m = calibrate::measure_layer(q, k, v, s, {}, 20);
  for (int64_t h = 0; h < 4; ++h) {
    EXPECT_FLOAT_EQ(m.density[h * 2 + 1], 1.f);
    EXPECT_NEAR(m.recall_mean[h * 2 + 1], 1.f, 1e-5);
    EXPECT_NEAR(m.output_error[h * 2 + 1], 0.f, 1e-5);
    EXPECT_LE(m.density[h * 2], 1.f);
  }
  for (const char* name : {"mistral-window", "qwen2-window"}) {
    SCOPED_TRACE(name);
    test_files::ScratchFolder dir;
    std::mt19937 rng(4);
    {
      std::ofstream ids(dir.path() + "/ids.txt");
      for (int i = 0; i < 4 * 64; ++i) ids << int(rng() % 256) << " ";
    }
    calibrate::CalibrationConfig config;
    config.model_dir = kModels + name;
    config.data_files = {dir.path() + "/ids.txt"};
    config.data_format = "ids";
    config.sample_len = 64;  // the window is 16
    config.max_samples = 4;
    config.settings.block_size = 16;
    config.settings.stride = 4;
    config.settings.taus = {0.5, 0.9, 1.0};
    config.sensitivity_samples = 1;
    config.frontier_points = 2;
    const calibrate::CalibrationResult r = calibrate::run_calibration(config, nullptr);
    const std::vector<int64_t> windows =
        std::string(name) == "mistral-window" ? std::vector<int64_t>{16, 16}
                                              : std::vector<int64_t>{0, 16};
    EXPECT_EQ(r.statistics.settings.layer_windows, windows);
    EXPECT_EQ(r.profile.kernel.layer_windows, windows);
    io::validate_profile(r.profile);
    for (float d : r.statistics.density) EXPECT_TRUE(d > 0.f && d <= 1.f) << d;
    // Statistics written and read back keep the windows.
    calibrate::write_statistics(dir.path() + "/stats.h5", r.statistics, false);
    EXPECT_EQ(calibrate::read_statistics(dir.path() + "/stats.h5").settings.layer_windows, windows);
  }
}

}  // namespace
}  // namespace xattn
