// Batched forward passes (Model::forward_batch) and batched calibration statistics (--batch):
// every sequence of a batch must get the logits and NLL of its own batch-1 pass, on every family
// checkpoint of tests/data/models and the bundled model, with dense, windowed, captured and
// XAttention attention; and run_calibration's statistics with batch 4 must equal batch 1's.
#include <ATen/ATen.h>
#include <boost/program_options.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "calibrate_checks.h"
#include "test_model_util.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"
#include "xattn/model/attention.h"
#include "xattn/model/model.h"

namespace xattn::model {
namespace {

const std::string kModels = std::string(XATTN_SOURCE_DIR) + "/tests/data/models/";
const std::string kBundled = std::string(XATTN_SOURCE_DIR) + "/examples/models/xattn-byte";

// float32 on both sides; only the row count of the products differs.
constexpr double kTolerance = 1e-4;

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

std::vector<std::vector<int64_t>> random_sequences(int64_t count, int64_t len, int64_t vocab,
                                                   uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(count),
                                        std::vector<int64_t>(static_cast<size_t>(len)));
  for (auto& sequence : out)
    for (auto& token : sequence) token = int64_t(rng() % uint32_t(vocab));
  return out;
}

// Every sequence of the batch against its own forward(): all logits and the NLL.
void expect_batch_equals_single(const Model& model, const std::vector<std::vector<int64_t>>& batch,
                                AttentionBackend& batched_backend, AttentionBackend& single_backend,
                                double tolerance = kTolerance) {
  ForwardOptions options;
  options.all_logits = true;
  options.nll = true;
  const std::vector<ForwardResult> together = model.forward_batch(batch, batched_backend, options);
  ASSERT_EQ(together.size(), batch.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    const ForwardResult alone = model.forward(batch[b], single_backend, options);
    EXPECT_EQ(together[b].positions, alone.positions);
    EXPECT_LT(max_abs_diff(together[b].logits, alone.logits), tolerance) << "sequence " << b;
    EXPECT_LT(max_abs_diff(together[b].nll, alone.nll), tolerance) << "sequence " << b;
  }
}

class FamilyBatch : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyBatch, BatchedLogitsEqualPerSequenceLogits) {
  const Model model(kModels + GetParam());
  // 40 tokens: past the 16- and 32-token windows of the windowed checkpoints.
  const auto batch = random_sequences(3, 40, model.config().vocab_size, 5);
  DenseBackend dense;
  expect_batch_equals_single(model, batch, dense, dense);
}

INSTANTIATE_TEST_SUITE_P(
    Families, FamilyBatch,
    ::testing::Values("llama", "llama-bias-tied", "llama3", "llama-linear", "llama-dynamic",
                      "llama-yarn", "llama-yarn-mscale", "mistral-window", "qwen2", "qwen2-window",
                      "qwen3", "qwen3-window", "phi3", "phi3-partial-window", "phi3-longrope"),
    [](const ::testing::TestParamInfo<std::string>& info) {
      std::string name = info.param;
      for (char& c : name)
        if (c == '-') c = '_';
      return name;
    });

TEST(ModelBatch, BundledModelDenseAndCaptureSeeTheWholeBatch) {
  const Model model(kBundled);
  const auto batch = random_sequences(4, 300, 256, 7);
  DenseBackend dense;
  std::vector<int64_t> seen_batch;
  CaptureBackend capture(dense, [&](int, const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& v) {
    seen_batch.push_back(q.size(0));
    EXPECT_EQ(k.size(0), q.size(0));
    EXPECT_EQ(v.size(0), q.size(0));
    EXPECT_EQ(q.size(2), 300);
  });
  expect_batch_equals_single(model, batch, capture, dense);
  EXPECT_EQ(seen_batch, std::vector<int64_t>(size_t(model.config().num_layers), 4));
}

TEST(ModelBatch, BundledModelXAttentionBatchEqualsPerSequence) {
  const Model model(kBundled);
  const auto batch = random_sequences(3, 320, 256, 9);
  runtime::EstimateOptions estimate;
  estimate.block_size = 64;
  auto batched = XAttentionBackend::uniform(model.config().num_layers, model.config().num_heads,
                                            0.9, estimate);
  auto single = XAttentionBackend::uniform(model.config().num_layers, model.config().num_heads,
                                           0.9, estimate);
  ForwardOptions options;
  options.all_logits = true;
  const std::vector<ForwardResult> together = model.forward_batch(batch, batched, options);
  const double batch_density = batched.mean_density();
  double density_sum = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    single.clear_density();
    const ForwardResult alone = model.forward(batch[b], single, options);
    density_sum += single.mean_density();
    EXPECT_LT(max_abs_diff(together[b].logits, alone.logits), kTolerance) << "sequence " << b;
  }
  // Equal lengths: kept / allowed blocks over the batch is the mean of the sequences' densities.
  EXPECT_NEAR(batch_density, density_sum / double(batch.size()), 1e-9);
  EXPECT_LT(batch_density, 1.0);
}

TEST(ModelBatch, LayerInputsAndResumeAreBatched) {
  const Model model(kModels + "qwen2");
  const auto batch = random_sequences(2, 24, model.config().vocab_size, 3);
  DenseBackend dense;
  std::vector<at::Tensor> inputs;
  ForwardOptions record;
  record.all_logits = true;
  record.layer_inputs = &inputs;
  const std::vector<ForwardResult> full = model.forward_batch(batch, dense, record);
  ASSERT_EQ(inputs.size(), size_t(model.config().num_layers));
  EXPECT_EQ(inputs[1].sizes(), (std::vector<int64_t>{2, 24, model.config().hidden_size}));
  ForwardOptions resume;
  resume.all_logits = true;
  resume.start_layer = 1;
  resume.start_hidden = inputs[1];
  const std::vector<ForwardResult> resumed = model.forward_batch(batch, dense, resume);
  for (size_t b = 0; b < batch.size(); ++b)
    EXPECT_EQ(max_abs_diff(full[b].logits, resumed[b].logits), 0.0);
  // The batch-1 API keeps its [len, hidden] shapes.
  std::vector<at::Tensor> single_inputs;
  ForwardOptions single;
  single.layer_inputs = &single_inputs;
  model.forward(batch[0], dense, single);
  EXPECT_EQ(single_inputs[1].sizes(), (std::vector<int64_t>{24, model.config().hidden_size}));
  EXPECT_LT(max_abs_diff(single_inputs[1], inputs[1][0]), kTolerance);
}

TEST(ModelBatch, RefusesSequencesOfDifferentLengthsAndEmptyBatches) {
  const Model model(kModels + "llama");
  DenseBackend dense;
  try {
    model.forward_batch({{1, 2, 3}, {1, 2}}, dense);
    FAIL() << "different lengths were accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("sequence 1 has 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("group_by_length"), std::string::npos) << e.what();
  }
  EXPECT_THROW(model.forward_batch({}, dense), Error);
  try {
    model.forward_batch({{1, 2}, {1, 4000}}, dense);
    FAIL() << "a token outside the vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("sequence 1, token 1 is 4000"), std::string::npos)
        << e.what();
  }
}

TEST(ModelBatch, GroupByLengthKeepsOrderAndBound) {
  using Groups = std::vector<std::vector<size_t>>;
  EXPECT_EQ(group_by_length({5, 5, 5, 5, 5}, 2), (Groups{{0, 1}, {2, 3}, {4}}));
  EXPECT_EQ(group_by_length({5, 7, 5, 7, 5}, 8), (Groups{{0, 2, 4}, {1, 3}}));
  EXPECT_EQ(group_by_length({5, 7, 5, 5}, 1), (Groups{{0}, {1}, {2}, {3}}));
  EXPECT_EQ(group_by_length({}, 4), Groups{});
  EXPECT_THROW(group_by_length({1}, 0), Error);
}

}  // namespace
}  // namespace xattn::model

namespace xattn::calibrate {
namespace {

using model::testing::TempDir;
using model::testing::TinySpec;

// A tiny random Llama and token ids with local repeats (attention that is not uniform).
std::string write_model_and_ids(const std::string& dir) {
  TinySpec spec;
  spec.vocab = 64;
  model::testing::write_tiny_checkpoint(dir, spec, 21);
  std::mt19937 rng(4);
  std::ofstream ids(dir + "/ids.txt");
  for (int i = 0; i < 5 * 256; ++i) ids << (i % 53 < 20 ? int(rng() % 8) : int(rng() % 64)) << " ";
  return dir + "/ids.txt";
}

void expect_near_all(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) {
      EXPECT_EQ(std::isnan(a[i]), std::isnan(b[i])) << what << " entry " << i;
      continue;
    }
    EXPECT_NEAR(a[i], b[i], 1e-4 * (1.0 + std::abs(a[i]))) << what << " entry " << i;
  }
}

TEST(CalibrationBatch, StatisticsWithBatchFourEqualBatchOne) {
  TempDir dir;
  CalibrationConfig config;
  config.model_dir = dir.path() + "/m";
  config.data_files = {write_model_and_ids(config.model_dir)};
  config.data_format = "ids";
  config.sample_len = 256;
  config.max_samples = 5;  // batch 4: one group of 4 and one sample alone
  config.settings.block_size = 64;
  config.settings.taus = {0.5, 0.8, 0.9, 0.95, 1.0};
  config.sensitivity_samples = 1;
  config.frontier_points = 0;
  const CalibrationResult one = run_calibration(config, nullptr);
  config.batch = 4;
  std::vector<std::string> steps;
  const CalibrationResult four =
      run_calibration(config, [&](int64_t, int64_t, const std::string& what) {
        steps.push_back(what);
      });
  const Statistics &a = one.statistics, &b = four.statistics;
  ASSERT_EQ(a.samples.size(), 5u);
  ASSERT_EQ(b.samples.size(), 5u);
  for (size_t i = 0; i < a.samples.size(); ++i) EXPECT_EQ(a.samples[i].source, b.samples[i].source);
  expect_near_all(a.density, b.density, "density");
  expect_near_all(a.recall_mean, b.recall_mean, "recall_mean");
  expect_near_all(a.recall_min, b.recall_min, "recall_min");
  expect_near_all(a.output_error, b.output_error, "output_error");
  expect_near_all(a.projected_error, b.projected_error, "projected_error");
  EXPECT_EQ(one.fit_samples, four.fit_samples);
  EXPECT_NE(std::find(steps.begin(), steps.end(), "samples 1-4 layer 0"), steps.end());
  EXPECT_NE(std::find(steps.begin(), steps.end(), "sample 5 layer 1"), steps.end());
  config.batch = 0;
  EXPECT_THROW(run_calibration(config, nullptr), Error);
}

TEST(CalibrationBatch, CliRefusesBatchBelowOne) {
  namespace po = boost::program_options;
  po::options_description options;
  options.add_options()("batch", po::value<int64_t>()->default_value(1));
  for (const char* value : {"1", "8", "0", "-2"}) {
    po::variables_map vm;
    const std::vector<std::string> args = {"--batch", value};
    po::store(po::command_line_parser(args).options(options).run(), vm);
    po::notify(vm);
    if (std::stoll(value) >= 1) {
      EXPECT_NO_THROW(cli::check_calibrate_arguments(vm));
      continue;
    }
    try {
      cli::check_calibrate_arguments(vm);
      ADD_FAILURE() << "--batch " << value << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("--batch " + std::string(value)), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace xattn::calibrate
