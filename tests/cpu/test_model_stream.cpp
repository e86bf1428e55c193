// Layer streaming (LoadOptions::stream_layers, Model::sweep_layers, --stream-layers): the
// streamed model must give bit for bit the q, k, v, logits and calibration statistics of the
// in-memory model, on family checkpoints (GQA + biases, Qwen3 norms, Phi-3 fused projections)
// and the bundled model, with only one layer's weights resident at any time; bad groups and bad
// checkpoints are refused with a message naming the problem.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "test_model_util.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"
#include "xattn/model/attention.h"
#include "xattn/model/model.h"

namespace xattn::model {
namespace {

const std::string kModels = std::string(XATTN_SOURCE_DIR) + "/tests/data/models/";
const std::string kBundled = std::string(XATTN_SOURCE_DIR) + "/examples/models/xattn-byte";

std::vector<std::vector<int64_t>> random_sequences(const std::vector<int64_t>& lengths,
                                                   int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int64_t>> out;
  for (int64_t len : lengths) {
    out.emplace_back(static_cast<size_t>(len));
    for (auto& token : out.back()) token = int64_t(rng() % uint32_t(vocab));
  }
  return out;
}

// Every (layer, group) call's q, k, v.
using Captured = std::map<std::pair<int, size_t>, std::vector<at::Tensor>>;

// The in-memory reference: each group through forward / forward_batch, as calibration runs it.
Captured capture_in_memory(const Model& model, const std::vector<std::vector<int64_t>>& sequences,
                           const std::vector<std::vector<size_t>>& groups) {
  Captured out;
  DenseBackend dense;
  for (size_t g = 0; g < groups.size(); ++g) {
    CaptureBackend capture(dense, [&](int layer, const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v) {
      out[{layer, g}] = {q.clone(), k.clone(), v.clone()};
    });
    std::vector<std::vector<int64_t>> batch;
    for (size_t i : groups[g]) batch.push_back(sequences[i]);
    if (batch.size() == 1)
      model.forward(batch[0], capture);
    else
      model.forward_batch(batch, capture);
  }
  return out;
}

void expect_streamed_equals_in_memory(const std::string& dir, const std::vector<int64_t>& lengths,
                                      int64_t max_batch) {
  const Model in_memory(dir);
  LoadOptions load;
  load.stream_layers = true;
  const Model streamed(dir, load);
  const int64_t layers = in_memory.config().num_layers;
  EXPECT_FALSE(in_memory.streams_layers());
  EXPECT_TRUE(streamed.streams_layers());
  EXPECT_EQ(in_memory.resident_layers(), layers);
  EXPECT_EQ(streamed.resident_layers(), 0);
  EXPECT_EQ(streamed.parameter_count(), in_memory.parameter_count());
  EXPECT_EQ(streamed.layer_weight_bytes(), in_memory.layer_weight_bytes());

  const auto sequences = random_sequences(lengths, in_memory.config().vocab_size, 11);
  const auto groups = group_by_length(lengths, max_batch);
  const Captured expected = capture_in_memory(in_memory, sequences, groups);

  Captured got;
  size_t current = 0;
  int64_t most_resident = 0;
  std::vector<std::pair<int, size_t>> order;
  DenseBackend dense;
  CaptureBackend capture(dense, [&](int layer, const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& v) {
    most_resident = std::max(most_resident, streamed.resident_layers());
    got[{layer, current}] = {q.clone(), k.clone(), v.clone()};
  });
  const SweepReport report =
      streamed.sweep_layers(sequences, groups, capture, {}, [&](int layer, size_t g) {
        current = g;
        order.emplace_back(layer, g);
      });
  // Layer-major: every group through layer 0, then every group through layer 1, ...
  ASSERT_EQ(order.size(), size_t(layers) * groups.size());
  for (size_t n = 0; n < order.size(); ++n)
    EXPECT_EQ(order[n], std::make_pair(int(n / groups.size()), n % groups.size()));
  EXPECT_EQ(most_resident, 1);
  EXPECT_EQ(report.peak_resident_layers, 1);
  EXPECT_EQ(streamed.resident_layers(), 0);
  EXPECT_FALSE(report.hidden_on_host);
  int64_t tokens = 0;
  for (int64_t len : lengths) tokens += len;
  EXPECT_EQ(report.hidden_bytes, tokens * in_memory.config().hidden_size * 4);
  EXPECT_EQ(report.layer_weight_bytes, in_memory.layer_weight_bytes());

  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [key, tensors] : expected) {
    ASSERT_TRUE(got.count(key)) << "layer " << key.first << " group " << key.second;
    for (size_t t = 0; t < 3; ++t)
      EXPECT_TRUE(at::equal(got.at(key)[t], tensors[t]))
          << "qkv"[t] << " of layer " << key.first << " group " << key.second;
  }

  // forward() of the streamed model: same logits and NLL bit for bit, one layer at a time.
  streamed.reset_peak_resident_layers();
  ForwardOptions options;
  options.all_logits = true;
  options.nll = true;
  const ForwardResult a = in_memory.forward(sequences[0], dense, options);
  const ForwardResult b = streamed.forward(sequences[0], dense, options);
  EXPECT_TRUE(at::equal(a.logits, b.logits));
  EXPECT_TRUE(at::equal(a.nll, b.nll));
  EXPECT_EQ(streamed.peak_resident_layers(), 1);
  for (int layer = 0; layer < layers; ++layer)
    EXPECT_TRUE(at::equal(streamed.output_projection(layer), in_memory.output_projection(layer)))
        << "o_proj of layer " << layer;
}

class StreamFamilies : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamFamilies, SweepAndForwardEqualInMemoryBitForBit) {
  // Three sequences of 40 tokens (one group of 2, one alone at max batch 2) and one of 24.
  expect_streamed_equals_in_memory(kModels + GetParam(), {40, 40, 24, 40}, 2);
}

// llama-bias-tied: GQA (4 query / 2 KV heads) with q/k/v/o and MLP biases and tied embeddings.
INSTANTIATE_TEST_SUITE_P(Families, StreamFamilies,
                         ::testing::Values("llama-bias-tied", "qwen2", "qwen3", "phi3"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(ModelStream, BundledModelSweepEqualsInMemoryBitForBit) {
  expect_streamed_equals_in_memory(kBundled, {128, 128, 128}, 2);
}

TEST(ModelStream, RefusesBadGroups) {
  LoadOptions load;
  load.stream_layers = true;
  const Model model(kModels + "llama", load);
  DenseBackend dense;
  const std::vector<std::vector<int64_t>> sequences = {{1, 2, 3}, {4, 5, 6}, {1, 2}};
  auto expect_refusal = [&](const std::vector<std::vector<size_t>>& groups,
                            const std::string& words) {
    try {
      model.sweep_layers(sequences, groups, dense);
      ADD_FAILURE() << "groups accepted; expected: " << words;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_refusal({{0, 2}, {1}}, "group 0 mixes lengths: sequence 0 has 3 tokens and sequence 2 has 2");
  expect_refusal({{0, 1}}, "sequence 2 is in no group");
  expect_refusal({{0, 1}, {1}, {2}}, "sequence 1 is in more than one group");
  expect_refusal({{0, 1}, {5}, {2}}, "group 1 names sequence 5 but there are 3 sequences");
  expect_refusal({{0, 1}, {}, {2}}, "group 1 of sweep_layers is empty");
  EXPECT_THROW(model.sweep_layers({}, {}, dense), Error);
  EXPECT_EQ(model.resident_layers(), 0);  // nothing left loaded by a refusal
}

TEST(ModelStream, SweepStopsAtEndLayer) {
  // One shard of a sharded statistics pass needs the first layers only: the same q, k, v as the
  // whole sweep for those, nothing after them.
  const std::string dir = kBundled;
  const Model in_memory(dir);
  LoadOptions load;
  load.stream_layers = true;
  const Model streamed(dir, load);
  const auto sequences = random_sequences({64, 64, 48}, in_memory.config().vocab_size, 5);
  const auto groups = group_by_length({64, 64, 48}, 2);
  const Captured expected = capture_in_memory(in_memory, sequences, groups);
  for (const Model* model : {&in_memory, &streamed}) {
    Captured got;
    size_t current = 0;
    DenseBackend dense;
    CaptureBackend capture(dense, [&](int layer, const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v) {
      got[{layer, current}] = {q.clone(), k.clone(), v.clone()};
    });
    SweepOptions options;
    options.end_layer = 2;
    model->sweep_layers(sequences, groups, capture, options,
                        [&](int, size_t g) { current = g; });
    ASSERT_EQ(got.size(), 2 * groups.size());
    for (const auto& [key, tensors] : got) {
      EXPECT_LT(key.first, 2);
      for (size_t t = 0; t < 3; ++t)
        EXPECT_TRUE(at::equal(tensors[t], expected.at(key)[t]))
            << "qkv"[t] << " of layer " << key.first << " group " << key.second;
    }
  }
  DenseBackend dense;
  SweepOptions past_the_end;
  past_the_end.end_layer = in_memory.config().num_layers + 1;
  EXPECT_THROW(in_memory.sweep_layers(sequences, groups, dense, past_the_end), Error);
}

TEST(ModelStream, BadCheckpointFailsAtLoadNotMidway) {
  testing::TempDir dir;
  testing::TinySpec spec;
  testing::write_tiny_checkpoint(dir.path(), spec, 3);
  // config.json claims a third layer the weights do not hold.
  nlohmann::json config = testing::tiny_config(spec);
  config["num_hidden_layers"] = 3;
  testing::write_text(dir.path() + "/config.json", config.dump(2));
  LoadOptions load;
  load.stream_layers = true;
  try {
    const Model model(dir.path(), load);
    FAIL() << "a missing layer was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("no tensor 'model.layers.2.input_layernorm.weight'"),
              std::string::npos)
        << e.what();
  }
  // A shape that does not match config.json: named with both shapes, before any compute.
  config["num_hidden_layers"] = 2;
  config["intermediate_size"] = 50;
  testing::write_text(dir.path() + "/config.json", config.dump(2));
  try {
    const Model model(dir.path(), load);
    FAIL() << "a wrong MLP shape was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("'model.layers.0.mlp.gate_proj.weight' has shape [48, 32] "
                                         "but config.json implies [50, 32]"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace xattn::model

namespace xattn::calibrate {
namespace {

using model::testing::TempDir;
using model::testing::TinySpec;

// Bitwise equality (NaN entries included: a NaN must stay the same NaN).
void expect_bitwise_equal(const std::vector<float>& a, const std::vector<float>& b,
                          const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
}

void expect_same_statistics(const CalibrationResult& a, const CalibrationResult& b) {
  const Statistics &s = a.statistics, &t = b.statistics;
  ASSERT_EQ(s.samples.size(), t.samples.size());
  for (size_t i = 0; i < s.samples.size(); ++i) EXPECT_EQ(s.samples[i].source, t.samples[i].source);
  expect_bitwise_equal(s.density, t.density, "density");
  expect_bitwise_equal(s.recall_mean, t.recall_mean, "recall_mean");
  expect_bitwise_equal(s.recall_min, t.recall_min, "recall_min");
  expect_bitwise_equal(s.output_error, t.output_error, "output_error");
  expect_bitwise_equal(s.projected_error, t.projected_error, "projected_error");
  EXPECT_EQ(s.layer_kl_sensitivity, t.layer_kl_sensitivity);
  EXPECT_EQ(a.profile.thresholds, b.profile.thresholds);
}

TEST(CalibrationStream, TinyGqaBiasModelStatisticsBitIdentical) {
  TempDir dir;
  TinySpec spec;
  spec.vocab = 64;
  spec.qkv_bias = true;  // GQA 4 / 2 with q, k, v biases
  spec.layers = 3;
  CalibrationConfig config;
  config.model_dir = dir.path() + "/m";
  model::testing::write_tiny_checkpoint(config.model_dir, spec, 21);
  std::mt19937 rng(4);
  {
    std::ofstream ids(dir.path() + "/ids.txt");
    for (int i = 0; i < 5 * 256; ++i) ids << (i % 53 < 20 ? int(rng() % 8) : int(rng() % 64)) << " ";
  }
  config.data_files = {dir.path() + "/ids.txt"};
  config.data_format = "ids";
  config.sample_len = 256;
  config.max_samples = 5;
  config.settings.block_size = 64;
  config.settings.taus = {0.5, 0.8, 0.9, 0.95, 1.0};
  config.sensitivity_samples = 1;
  config.frontier_points = 2;
  for (int64_t batch : {1, 4}) {
    config.batch = batch;
    config.stream_layers = false;
    const CalibrationResult in_memory = run_calibration(config, nullptr);
    config.stream_layers = true;
    std::vector<std::string> steps;
    const CalibrationResult streamed =
        run_calibration(config, [&](int64_t, int64_t, const std::string& what) {
          steps.push_back(what);
        });
    SCOPED_TRACE("batch " + std::to_string(batch));
    expect_same_statistics(in_memory, streamed);
    EXPECT_EQ(in_memory.peak_resident_layers, 3);
    EXPECT_EQ(streamed.peak_resident_layers, 1);
    EXPECT_LT(streamed.peak_weight_bytes, in_memory.peak_weight_bytes);
    EXPECT_EQ(streamed.peak_device_bytes, -1);  // the CPU reports no allocator peak
    // Every sample's hidden states at once when streaming; one batch's in memory.
    EXPECT_EQ(streamed.statistics_hidden_bytes, 5 * 256 * 32 * 4);
    EXPECT_EQ(in_memory.statistics_hidden_bytes, batch * 256 * 32 * 4);
    if (batch == 4) {
      // Layer-major: layer 0 of both groups before layer 1 of the first.
      const auto at = [&](const std::string& what) {
        return std::find(steps.begin(), steps.end(), what) - steps.begin();
      };
      EXPECT_LT(at("sample 5 layer 0"), at("samples 1-4 layer 1"));
      EXPECT_LT(at("samples 1-4 layer 1"), int64_t(steps.size()));
    }
  }
}

TEST(CalibrationStream, BundledModelStatisticsBitIdentical) {
  CalibrationConfig config;
  config.model_dir = std::string(XATTN_SOURCE_DIR) + "/examples/models/xattn-byte";
  config.data_files = {std::string(XATTN_SOURCE_DIR) + "/examples/data/calibration.txt"};
  config.sample_len = 256;
  config.max_samples = 3;  // no held-out sample: statistics only (the tiny test covers the rest)
  config.batch = 2;
  config.metric = ErrorMetric::kOutputError;
  config.metric_is_default = false;
  config.frontier_points = 0;
  const CalibrationResult in_memory = run_calibration(config, nullptr);
  config.stream_layers = true;
  const CalibrationResult streamed = run_calibration(config, nullptr);
  expect_same_statistics(in_memory, streamed);
  EXPECT_EQ(streamed.peak_resident_layers, 1);
  EXPECT_EQ(in_memory.peak_resident_layers, 6);
}

// The sharded statistics pass in one process (what `mpirun xattn calibrate` runs per rank, the
// gather done here): every shard count from 1 to 7 on 2 samples of 3 layers (more shards than
// samples: layers split too; 7 shards: one idle), in memory and streamed, equals one process.
TEST(CalibrationShards, EveryShardCountEqualsOneProcessBitForBit) {
  TempDir dir;
  TinySpec spec;
  spec.vocab = 64;
  spec.qkv_bias = true;
  spec.layers = 3;
  CalibrationConfig config;
  config.model_dir = dir.path() + "/m";
  model::testing::write_tiny_checkpoint(config.model_dir, spec, 22);
  std::mt19937 rng(5);
  {
    std::ofstream ids(dir.path() + "/ids.txt");
    for (int i = 0; i < 2 * 256; ++i) ids << (i % 41 < 15 ? int(rng() % 8) : int(rng() % 64)) << " ";
  }
  config.data_files = {dir.path() + "/ids.txt"};
  config.data_format = "ids";
  config.sample_len = 256;
  config.max_samples = 2;
  config.holdout_fraction = 0.5;
  config.settings.block_size = 64;
  config.settings.taus = {0.5, 0.8, 0.9, 0.95, 1.0};
  config.sensitivity_samples = 1;
  config.frontier_points = 2;
  const CalibrationResult one = run_calibration(config, nullptr);
  ASSERT_EQ(one.statistics.samples.size(), 2u);
  for (bool stream : {false, true}) {
    for (int64_t count = 1; count <= 7; ++count) {
      SCOPED_TRACE(::testing::Message() << count << " shards" << (stream ? ", streamed" : ""));
      config.stream_layers = stream;
      config.shard_count = count;
      // Shards 1.. first: each stops after its statistics, which are kept for shard 0.
      std::vector<Statistics> shards(static_cast<size_t>(count));
      for (int64_t r = count - 1; r >= 0; --r) {
        config.shard_index = r;
        std::vector<std::string> steps;
        config.gather_shards = [&](Statistics mine) -> std::optional<std::vector<Statistics>> {
          shards[size_t(r)] = std::move(mine);
          if (r != 0) return std::nullopt;
          return shards;
        };
        const CalibrationResult result =
            run_calibration(config, [&](int64_t, int64_t, const std::string& what) {
              steps.push_back(what);
            });
        const ShardWork work = shard_work(2, 3, r, count);
        if (count > 1)  // one shard gathers nothing
          EXPECT_EQ(int64_t(shards[size_t(r)].samples.size()), work.empty() ? 0 : work.samples());
        if (!work.empty()) {
          // Only the shard's own layers are measured ("sample 2 layer 1").
          for (const std::string& step : steps)
            for (int64_t layer = 0; layer < 3; ++layer)
              if (step.rfind("sample", 0) == 0 &&
                  step.find(" layer " + std::to_string(layer)) != std::string::npos)
                EXPECT_TRUE(layer >= work.first_layer && layer < work.past_layer) << step;
        }
        if (r != 0) {
          EXPECT_TRUE(result.stopped_after_statistics);
          continue;
        }
        ASSERT_FALSE(result.stopped_after_statistics);
        expect_same_statistics(one, result);
        EXPECT_EQ(result.statistics.layers, one.statistics.layers);
        expect_bitwise_equal(result.statistics.prefix_density, one.statistics.prefix_density,
                             "prefix_density");
        EXPECT_EQ(result.search.optimal.choice, one.search.optimal.choice);
      }
    }
  }
}

TEST(CalibrationStream, RefusedWithoutAModel) {
  CalibrationConfig config;
  config.statistics_files = {"unused.h5"};
  config.stream_layers = true;
  try {
    run_calibration(config, nullptr);
    FAIL() << "--stream-layers without a model was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("--stream-layers streams a model's weights"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace xattn::calibrate
