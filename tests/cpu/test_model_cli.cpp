// xattn generate / capture / eval niah end to end on the bundled model (short inputs: CI is 2 CPU
// cores), and the capture written by the CLI against the runner's own q/k/v.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "test_model_util.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/io/capture.h"
#include "xattn/io/paths.h"
#include "xattn/io/profile.h"
#include "xattn/model/load_engine.h"
#include "xattn/model/model.h"
#include "xattn/model/tokens.h"

namespace xattn::model {
namespace {

const std::string kModel = std::string(XATTN_SOURCE_DIR) + "/examples/models/xattn-byte";

using xattn::testing::CliResult;

CliResult xattn_cli(const std::string& arguments) { return xattn::testing::run_xattn(arguments); }

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class ModelCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!io::path_exists(kModel + "/config.json")) GTEST_SKIP() << "no bundled model";
  }
};

TEST_F(ModelCli, GenerateContinuesTextAndPrintsNll) {
  const CliResult r = xattn_cli("generate --model " + kModel +
                          " --prompt 'It is a truth universally acknowledged, that a single man in "
                          "possession of a good fortune, must be in' --tokens 8 --nll");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "time to first token")) << r.out;
  EXPECT_TRUE(has(r.out, "generated text: \"")) << r.out;
  EXPECT_TRUE(has(r.out, "mean nll")) << r.out;
  const CliResult bad = xattn_cli("generate --model " + kModel + " --prompt hi --threshold 0.9 --profile x");
  EXPECT_EQ(bad.code, 2) << bad.out;
  const CliResult none = xattn_cli("generate --model /nonexistent/model --prompt hi");
  EXPECT_EQ(none.code, 4) << none.out;
}

TEST_F(ModelCli, CaptureHoldsTheRunnersPostRopeQkv) {
  testing::TempDir tmp;
  const std::string prompt = tmp.file("prompt.txt");
  testing::write_text(prompt, "The pass key is 12345. Remember it. Some more text follows here.");
  const std::string out = tmp.file("cap.h5");
  const CliResult r = xattn_cli("capture --model " + kModel + " --text " + prompt + " --out " + out +
                          " --layers 1,4 --store-dtype float32");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(xattn_cli("capture --model " + kModel + " --text " + prompt + " --out " + out).code, 4);

  const io::CaptureReader reader(out);
  EXPECT_EQ(reader.layer_indices(), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(reader.info().heads_q, 6);
  EXPECT_EQ(reader.info().heads_kv, 2);
  EXPECT_TRUE(reader.info().has_v);
  const std::vector<int64_t> ids = byte_encode(read_text_file(prompt));
  ASSERT_EQ(reader.info().len_q, (std::vector<int64_t>{static_cast<int64_t>(ids.size())}));

  const Model model(kModel);
  DenseBackend dense;
  std::vector<at::Tensor> q(6), k(6), v(6);
  CaptureBackend hook(dense, [&](int layer, const at::Tensor& ql, const at::Tensor& kl,
                                 const at::Tensor& vl) {
    q[layer] = ql.clone();
    k[layer] = kl.clone();
    v[layer] = vl.clone();
  });
  model.forward(ids, hook);
  for (int64_t layer : {1, 4}) {
    const io::CaptureLayer stored = reader.read_layer(layer);
    EXPECT_TRUE(at::allclose(stored.q, q[layer], 1e-5, 1e-5)) << layer;
    EXPECT_TRUE(at::allclose(stored.k, k[layer], 1e-5, 1e-5)) << layer;
    EXPECT_TRUE(at::allclose(stored.v, v[layer], 1e-5, 1e-5)) << layer;
  }
}

TEST_F(ModelCli, NiahSmallGridWithJson) {
  testing::TempDir tmp;
  const std::string json_path = tmp.file("niah.json");
  const std::string common = "eval niah --model " + kModel + " --haystack " +
                             std::string(XATTN_SOURCE_DIR) + "/examples/data/haystack.txt";
  const CliResult r = xattn_cli(common + " --lengths 512 --depths 0.5 --samples 1 --threshold 1.0 --json " +
                          json_path);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "passkey accuracy")) << r.out;
  std::ifstream in(json_path);
  const nlohmann::json j = nlohmann::json::parse(in);
  ASSERT_EQ(j["cells"].size(), 1u);
  EXPECT_EQ(j["cells"][0]["length"], 512);
  // tau = 1 keeps every block: XAttention answers exactly as dense does, at density 1.
  EXPECT_EQ(j["cells"][0]["dense_correct"], j["cells"][0]["xattn_correct"]);
  EXPECT_DOUBLE_EQ(j["mean_density"].get<double>(), 1.0);
  EXPECT_EQ(xattn_cli(common + " --lengths 512 --depths 0.5 --samples 1 --json " + json_path).code,
            4);
  const CliResult missing = xattn_cli("eval niah --model " + kModel + " --haystack /nonexistent.txt");
  EXPECT_EQ(missing.code, 4) << missing.out;
  EXPECT_TRUE(has(missing.out, "--haystack")) << missing.out;
}

TEST_F(ModelCli, GenerateWithAProfileChecksItsModel) {
  testing::TempDir tmp;
  io::Profile profile;
  profile.model = model::model_signature_of(kModel);
  const int64_t n = profile.model.num_layers * profile.model.heads_q;
  profile.thresholds.assign(static_cast<size_t>(n), 1.0f);
  profile.predicted_density.assign(static_cast<size_t>(n), 1.0f);
  profile.predicted_error.assign(static_cast<size_t>(n), 0.0f);
  profile.budget.metric = "recall_loss";
  profile.created_utc = io::utc_now_iso8601();
  profile.tool_version = "xattn test";
  profile.data.description = "runner test";
  const std::string path = tmp.file("profile.h5");
  io::write_profile(path, profile, false);
  const CliResult r = xattn_cli("generate --model " + kModel + " --prompt 'It is a truth' --tokens 2 "
                                "--profile " + path);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "mean attention density 1.0000")) << r.out;

  profile.model.num_layers += 1;
  profile.thresholds.resize(profile.thresholds.size() + 6, 1.0f);
  profile.predicted_density.resize(profile.thresholds.size(), 1.0f);
  profile.predicted_error.resize(profile.thresholds.size(), 0.0f);
  io::write_profile(path, profile, true);
  const CliResult bad = xattn_cli("generate --model " + kModel + " --prompt hi --profile " + path);
  EXPECT_EQ(bad.code, 3) << bad.out;
  EXPECT_TRUE(has(bad.out, "layers")) << bad.out;
}

}  // namespace
}  // namespace xattn::model
