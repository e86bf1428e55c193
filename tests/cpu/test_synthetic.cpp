// The synthetic generator really plants what it claims: exact attention probabilities (float64,
// causal softmax of q.k / sqrt(d) on the stored tensors) show each head's structure. Also:
// determinism, labels, padding, the written file, and the `xattn synth` command.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <string>

#include "cli_runner.h"
#include "scratch.h"
#include "xattn/error.h"
#include "xattn/io/capture.h"
#include "xattn/synthetic.h"

namespace xattn::runtime {
namespace {

using io::CaptureInfo;
using io::CaptureLayer;
using io::CaptureReader;
using io::OutputOptions;
using io::capture_dtype_name;

SyntheticOptions small_options(at::ScalarType dtype) {
  SyntheticOptions o;
  o.num_layers = 2;
  o.heads_q = 6;  // one head per structure in layer 0
  o.heads_kv = 2;
  o.head_dim = 64;
  o.len = 512;
  o.batch = 2;
  o.item_lengths = {512, 320};
  o.seed = 7;
  o.dtype = dtype;
  return o;
}

// Causal attention probabilities [n, n] of query head h, item b, over the first n tokens.
at::Tensor attention(const CaptureLayer& layer, int64_t b, int64_t h, int64_t heads_kv, int64_t n) {
  const int64_t group = layer.q.size(1) / heads_kv;
  const at::Tensor q = layer.q[b][h].slice(0, 0, n).to(at::kDouble);
  const at::Tensor k = layer.k[b][h / group].slice(0, 0, n).to(at::kDouble);
  at::Tensor logits = at::matmul(q, k.t()) / std::sqrt(double(q.size(1)));
  const at::Tensor future = at::ones({n, n}, at::kBool).triu(1);
  logits.masked_fill_(future, -std::numeric_limits<double>::infinity());
  return at::softmax(logits, 1);
}

// Mean over queries [from, to) of the mass on the keys that `keys(i)` selects.
template <typename KeySet>
double mean_mass(const at::Tensor& p, int64_t from, int64_t to, KeySet keys) {
  double total = 0;
  auto acc = p.accessor<double, 2>();
  for (int64_t i = from; i < to; ++i) {
    double mass = 0;
    for (int64_t j = 0; j <= i; ++j) {
      if (keys(i, j)) mass += acc[i][j];
    }
    total += mass;
  }
  return total / double(to - from);
}

class SyntheticStructures : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(SyntheticStructures, ExactAttentionShowsEachPlantedStructure) {
  const SyntheticOptions o = small_options(GetParam());
  const SyntheticLayout layout = synthetic_layout(o);
  const CaptureLayer layer = make_synthetic_layer(o, layout, 0);
  using S = PlantedStructure;
  ASSERT_EQ(layout.structure[0], (std::vector<S>{S::kSink, S::kLocal, S::kStripes, S::kSlash,
                                                 S::kRetrieval, S::kDiffuse}));
  for (int64_t b = 0; b < o.batch; ++b) {
    SCOPED_TRACE("item " + std::to_string(b));
    const int64_t n = layout.item_lengths[b];

    const at::Tensor sink = attention(layer, b, 0, o.heads_kv, n);
    EXPECT_GT(mean_mass(sink, 16, n, [](int64_t, int64_t j) { return j == 0; }), 0.6);
    EXPECT_GT(mean_mass(sink, 16, n, [&](int64_t, int64_t j) { return j < layout.sink_span; }),
              0.9);

    const at::Tensor local = attention(layer, b, 1, o.heads_kv, n);
    EXPECT_GT(mean_mass(local, 128, n, [](int64_t i, int64_t j) { return j > i - 64; }), 0.75);
    EXPECT_LT(mean_mass(local, 128, n, [](int64_t, int64_t j) { return j == 0; }), 0.25);

    // Heads 0..2 share KV head 0: the same keys serve sink, local and stripes.
    const std::vector<int64_t>& stripes = layout.stripe_positions[0][0];
    const at::Tensor stripe = attention(layer, b, 2, o.heads_kv, n);
    auto is_stripe = [&](int64_t, int64_t j) {
      return std::binary_search(stripes.begin(), stripes.end(), j);
    };
    if (stripes.front() + 1 < n) {
      EXPECT_GT(mean_mass(stripe, stripes.front() + 1, n, is_stripe), 0.7);
    }
    EXPECT_LT(mean_mass(sink, 16, n, is_stripe), 0.05) << "stripes leak into the sink head";

    const int64_t offset = layout.slash_offset[0][3];
    ASSERT_GT(offset, 0);
    const at::Tensor slash = attention(layer, b, 3, o.heads_kv, n);
    auto on_slash = [&](int64_t i, int64_t j) {
      return j <= i - offset && j > i - offset - layout.slash_width;
    };
    EXPECT_GT(mean_mass(slash, offset + layout.slash_width, n, on_slash), 0.6);
    EXPECT_LT(mean_mass(local, offset + layout.slash_width, n, on_slash), 0.05);

    const int64_t needle_begin = layout.needle_begin[b];
    const int64_t needle_end = needle_begin + layout.needle_length;
    auto in_needle = [&](int64_t, int64_t j) { return j >= needle_begin && j < needle_end; };
    const at::Tensor retrieval = attention(layer, b, 4, o.heads_kv, n);
    EXPECT_GT(mean_mass(retrieval, layout.retrieval_query_begin[b], n, in_needle), 0.8);
    EXPECT_LT(mean_mass(retrieval, needle_end + 64, layout.retrieval_query_begin[b], in_needle),
              0.02);
    EXPECT_LT(mean_mass(local, needle_end + 64, n, in_needle), 0.02);

    // Diffuse: no key takes much; the mass is spread far beyond the local window.
    const at::Tensor diffuse = attention(layer, b, 5, o.heads_kv, n);
    const double top = diffuse.slice(0, 256, n).amax(1).mean().item<double>();
    EXPECT_LT(top, 0.1);
    EXPECT_LT(mean_mass(diffuse, 256, n, [](int64_t i, int64_t j) { return j > i - 64; }), 0.4);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SyntheticStructures,
                         ::testing::Values(at::kHalf, at::kBFloat16, at::kFloat),
                         [](const auto& p) { return std::string(capture_dtype_name(p.param)); });

TEST(Synthetic, LayersMixStructuresDifferently) {
  const SyntheticOptions o = small_options(at::kHalf);
  const SyntheticLayout layout = synthetic_layout(o);
  EXPECT_NE(layout.structure[0], layout.structure[1]);
  EXPECT_NE(layout.stripe_positions[0], layout.stripe_positions[1]);
  // Layer 1 starts with the slash head; it must work there too.
  ASSERT_EQ(layout.structure[1][0], PlantedStructure::kSlash);
  const CaptureLayer layer = make_synthetic_layer(o, layout, 1);
  const int64_t offset = layout.slash_offset[1][0];
  const at::Tensor p = attention(layer, 0, 0, o.heads_kv, o.len);
  EXPECT_GT(mean_mass(p, offset + layout.slash_width, o.len,
                      [&](int64_t i, int64_t j) {
                        return j <= i - offset && j > i - offset - layout.slash_width;
                      }),
            0.6);
}

TEST(Synthetic, DeterministicInTheSeed) {
  SyntheticOptions o = small_options(at::kHalf);
  const SyntheticLayout layout = synthetic_layout(o);
  const CaptureLayer a = make_synthetic_layer(o, layout, 1);
  const CaptureLayer b = make_synthetic_layer(o, synthetic_layout(o), 1);
  EXPECT_TRUE(at::equal(a.q, b.q));
  EXPECT_TRUE(at::equal(a.k, b.k));
  EXPECT_TRUE(at::equal(a.v, b.v));
  o.seed = 8;
  const CaptureLayer c = make_synthetic_layer(o, synthetic_layout(o), 1);
  EXPECT_FALSE(at::equal(a.q, c.q));
  EXPECT_FALSE(at::equal(a.k, c.k));
}

TEST(Synthetic, PaddingIsZeroAndShapesFollowOptions) {
  const SyntheticOptions o = small_options(at::kBFloat16);
  const SyntheticLayout layout = synthetic_layout(o);
  const CaptureLayer layer = make_synthetic_layer(o, layout, 0);
  EXPECT_EQ(layer.q.sizes(), (at::IntArrayRef{2, 6, 512, 64}));
  EXPECT_EQ(layer.k.sizes(), (at::IntArrayRef{2, 2, 512, 64}));
  EXPECT_EQ(layer.v.sizes(), (at::IntArrayRef{2, 2, 512, 64}));
  EXPECT_EQ(layer.q.scalar_type(), at::kBFloat16);
  EXPECT_EQ(layer.q[1].slice(1, 320).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(layer.k[1].slice(1, 320).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(layer.v[1].slice(1, 320).abs().max().item<float>(), 0.0f);
  EXPECT_GT(layer.k[1].slice(1, 319, 320).abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(at::isfinite(layer.q).all().item<bool>());
}

TEST(Synthetic, LabelledSyntheticAndWrittenFileMatches) {
  const SyntheticOptions o = small_options(at::kHalf);
  const SyntheticLayout layout = synthetic_layout(o);
  const CaptureInfo info = synthetic_capture_info(o, layout);
  EXPECT_EQ(info.source, "synthetic");
  EXPECT_EQ(info.model_name, "synthetic-structured");
  EXPECT_NE(info.description.find("SYNTHETIC"), std::string::npos);
  EXPECT_NE(info.description.find("h3 slash (offsets " + std::to_string(layout.slash_offset[0][3]) +
                                  ".."),
            std::string::npos)
      << info.description;
  EXPECT_NE(info.description.find("h4 retrieval"), std::string::npos);

  const std::string path = test_files::scratch_file("xattn-synth.h5");
  std::remove(path.c_str());
  OutputOptions output;
  output.deflate_level = 1;
  write_synthetic_capture(path, o, output);
  const CaptureReader reader(path);
  EXPECT_EQ(reader.info().source, "synthetic");
  EXPECT_EQ(reader.info().description, info.description);
  EXPECT_EQ(reader.info().len_k, (std::vector<int64_t>{512, 320}));
  EXPECT_EQ(reader.layer_indices(), (std::vector<int64_t>{0, 1}));
  const CaptureLayer stored = reader.read_layer(1);
  const CaptureLayer fresh = make_synthetic_layer(o, layout, 1);
  EXPECT_TRUE(at::equal(stored.q, fresh.q));
  EXPECT_TRUE(at::equal(stored.k, fresh.k));
  EXPECT_TRUE(at::equal(stored.v, fresh.v));
  EXPECT_THROW(write_synthetic_capture(path, o, {}), Error);  // no overwrite
  std::remove(path.c_str());
}

TEST(Synthetic, RejectsBadOptions) {
  SyntheticOptions o;
  o.heads_q = 6;
  o.heads_kv = 4;
  EXPECT_THROW(synthetic_layout(o), Error);
  o = SyntheticOptions();
  o.head_dim = 16;
  EXPECT_THROW(synthetic_layout(o), Error);
  o = SyntheticOptions();
  o.len = 10;
  EXPECT_THROW(synthetic_layout(o), Error);
  o = SyntheticOptions();
  o.item_lengths = {100, 200};  // batch is 1
  EXPECT_THROW(synthetic_layout(o), Error);
}

#ifdef XATTN_CLI_PATH
std::pair<int, std::string> run_cli(const std::string& arguments) {
  const xattn::testing::CliResult r = xattn::testing::run_xattn(arguments);
  return {r.code, r.out};
}

TEST(Synthetic, SynthCommand) {
  const std::string path = test_files::scratch_file("xattn-synth-cli.h5");
  std::remove(path.c_str());
  const std::string args = "synth --out " + path +
                           " --layers 1 --heads-q 4 --heads-kv 1 --len 256 --dtype bfloat16";
  const auto [code, out] = run_cli(args);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("SYNTHETIC"), std::string::npos) << out;
  const CaptureReader reader(path);
  EXPECT_EQ(reader.info().dtype, at::kBFloat16);
  EXPECT_EQ(reader.info().heads_q, 4);
  EXPECT_EQ(reader.info().padded_len_k, 256);
  const auto again = run_cli(args);
  EXPECT_EQ(again.first, 4) << again.second;
  EXPECT_NE(again.second.find("--force"), std::string::npos);
  EXPECT_EQ(run_cli(args + " --force").first, 0);
  const auto bad = run_cli("synth --out " + path + " --force --heads-q 3 --heads-kv 2");
  EXPECT_EQ(bad.first, 2) << bad.second;
  EXPECT_EQ(run_cli("synth --help").first, 0);
  std::remove(path.c_str());
}
#endif

}  // namespace
}  // namespace xattn::runtime
