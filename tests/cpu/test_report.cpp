// Reports: measurements of a profile on its statistics (split recovery, held-out figures, curves,
// density by length) against a brute-force computation, the terminal text and HTML of one profile
// and of two, atomic HTML writes, and the `xattn report` CLI.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "scratch.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/calibrate/report.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/error.h"
#include "xattn/io/capture.h"
#include "xattn/io/profile.h"
#include "xattn/ops.h"
#include "xattn/synthetic.h"

namespace xattn::calibrate {
namespace {

using io::fnv1a64;
using io::KernelSettings;
using io::Profile;
using io::UniformComparison;
using io::write_profile;

constexpr double kNaNForTests = std::numeric_limits<double>::quiet_NaN();

constexpr int64_t kLayers = 2, kHeads = 3;
const std::vector<double> kTaus = {0.5, 0.8, 1.0};
const std::vector<int64_t> kLengths = {1024, 1024, 2048, 2048};

double density_at(int64_t sample, int64_t layer, int64_t head, int64_t tau) {
  return std::min(1.0, 0.1 + 0.3 * double(tau) + 0.05 * double(head) + 0.02 * double(layer) +
                           0.01 * double(sample));
}
double error_at(int64_t sample, int64_t layer, int64_t head, int64_t tau) {
  return double(int64_t(kTaus.size()) - 1 - tau) * 0.02 * double(1 + head + layer) +
         0.001 * double(sample);
}
int64_t choice_of(int64_t layer, int64_t head) { return (layer + head) % int64_t(kTaus.size()); }

Statistics make_statistics(const std::vector<int64_t>& lengths = kLengths) {
  Statistics s;
  s.settings.taus = kTaus;
  s.settings.block_size = 128;
  s.settings.stride = 8;
  s.model_name = "test";
  s.model_signature = "test-signature";
  s.heads_q = kHeads;
  s.heads_kv = 1;
  s.head_dim = 64;
  s.layers = {0, 1};
  const int64_t M = int64_t(kTaus.size());
  for (int64_t i = 0; i < int64_t(lengths.size()); ++i) {
    std::vector<LayerMeasurement> layers(kLayers);
    for (int64_t l = 0; l < kLayers; ++l)
      for (int64_t h = 0; h < kHeads; ++h)
        for (int64_t t = 0; t < M; ++t) {
          layers[l].density.push_back(float(density_at(i, l, h, t)));
          layers[l].output_error.push_back(float(error_at(i, l, h, t)));
          layers[l].recall_mean.push_back(float(1 - error_at(i, l, h, t)));
          layers[l].recall_min.push_back(float(1 - 2 * error_at(i, l, h, t)));
        }
    s.add_sample({lengths[i], lengths[i], "sample@" + std::to_string(i)}, layers);
  }
  return s;
}

// Brute force: cost-weighted mean over `samples` of the stored (float) value.
double weighted(const Statistics& s, const std::vector<int64_t>& samples, int64_t l, int64_t h,
                int64_t t, bool error) {
  double sum = 0, total = 0;
  for (int64_t i : samples) {
    const double w = allowed_blocks(s.samples[i].len_q, s.samples[i].len_k, 128, true);
    const int64_t at = s.entry(i, l, h, t);
    sum += w * double(error ? s.output_error[at] : s.density[at]);
    total += w;
  }
  return sum / total;
}

// A profile as calibrate writes it: fit on samples 0..2, sample 3 held out (every 4th).
Profile make_profile(const Statistics& s) {
  Profile p;
  p.model = {"llama", kLayers, kHeads, 1, 64, "", ""};
  p.kernel = {128, 8, "1/(sqrt(d)*S)", true};
  const std::vector<int64_t> fit = {0, 1, 2};
  for (int64_t l = 0; l < kLayers; ++l)
    for (int64_t h = 0; h < kHeads; ++h) {
      const int64_t t = choice_of(l, h);
      p.thresholds.push_back(float(kTaus[t]));
      p.predicted_density.push_back(float(weighted(s, fit, l, h, t, false)));
      p.predicted_error.push_back(float(weighted(s, fit, l, h, t, true)));
    }
  double dens = 0, err = 0;
  for (size_t i = 0; i < p.thresholds.size(); ++i)
    dens += p.predicted_density[i], err += p.predicted_error[i];
  p.predicted_mean_density = dens / double(p.thresholds.size());
  p.predicted_mean_error = err / double(p.thresholds.size());
  p.budget = {0.03, "output_error", std::nullopt, kTaus};
  p.uniform = UniformComparison{0.8, 0.5, 0.02};
  p.validation = {{"kl_mean", 0.00125}};
  std::string sources;
  for (const auto& sample : s.samples) sources += sample.source + "\n";
  p.data = {fnv1a64(sources), int64_t(s.samples.size()), {}, "3 fit + 1 held-out samples"};
  for (const auto& sample : s.samples) p.data.lengths.push_back(sample.len_q);
  p.tool_version = "xattn test";
  p.created_utc = "2026-11-28T10:05:54Z";
  return p;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string fixed(double v, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, v);
  return text;
}

TEST(Report, MeasurementsRecoverTheHeldOutSampleAndMatchBruteForce) {
  const Statistics s = make_statistics();
  const Profile p = make_profile(s);
  const ProfileMeasurements m = measure_profile(p, s);
  EXPECT_TRUE(m.same_data);
  EXPECT_TRUE(m.split_recovered);
  EXPECT_EQ(m.fit_samples, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(m.holdout_samples, (std::vector<int64_t>{3}));
  EXPECT_NE(m.note.find("every 4th"), std::string::npos) << m.note;
  const int64_t M = int64_t(kTaus.size());
  for (int64_t l = 0; l < kLayers; ++l)
    for (int64_t h = 0; h < kHeads; ++h) {
      const int64_t head = l * kHeads + h, t = choice_of(l, h);
      EXPECT_EQ(m.chosen[head], t);
      EXPECT_NEAR(m.holdout_error[head], error_at(3, l, h, t), 1e-6);
      EXPECT_NEAR(m.holdout_density[head], density_at(3, l, h, t), 1e-6);
      for (int64_t u = 0; u < M; ++u) {
        EXPECT_NEAR(m.curve_density[head * M + u], weighted(s, {0, 1, 2}, l, h, u, false), 1e-9);
        EXPECT_NEAR(m.curve_error[head * M + u], weighted(s, {0, 1, 2}, l, h, u, true), 1e-9);
      }
    }
  // Density by length: plain mean over the samples of a length and the layer's heads.
  ASSERT_EQ(m.lengths, (std::vector<int64_t>{1024, 2048}));
  EXPECT_EQ(m.samples_per_length, (std::vector<int64_t>{2, 2}));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t l = 0; l < kLayers; ++l) {
      double sum = 0;
      for (int64_t i : {2 * n, 2 * n + 1})
        for (int64_t h = 0; h < kHeads; ++h) sum += float(density_at(i, l, h, choice_of(l, h)));
      EXPECT_NEAR(m.density_by_length[n * kLayers + l], sum / (2 * kHeads), 1e-6);
    }
}

TEST(Report, MeasurementsUseTheHeldOutSamplesTheProfileRecords) {
  const Statistics s = make_statistics();
  Profile p = make_profile(s);
  p.data.holdout_samples = {3};
  const ProfileMeasurements m = measure_profile(p, s);
  EXPECT_TRUE(m.split_recovered);
  EXPECT_EQ(m.holdout_samples, (std::vector<int64_t>{3}));
  EXPECT_NE(m.note.find("as the profile records"), std::string::npos) << m.note;
}

TEST(Report, MeasurementsWithoutAReproducibleSplitUseEverySample) {
  const Statistics s = make_statistics();
  Profile p = make_profile(s);
  p.predicted_error[2] += 0.01f;  // no split of these statistics predicts this
  const ProfileMeasurements m = measure_profile(p, s);
  EXPECT_FALSE(m.split_recovered);
  EXPECT_EQ(m.fit_samples, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_TRUE(m.holdout_samples.empty());
  EXPECT_TRUE(std::isnan(m.holdout_error[0]));
  EXPECT_NE(m.note.find("do not reproduce"), std::string::npos) << m.note;

  // Fitted on every sample: recovered as "no held-out samples".
  Profile all = make_profile(s);
  for (int64_t l = 0; l < kLayers; ++l)
    for (int64_t h = 0; h < kHeads; ++h) {
      all.predicted_density[l * kHeads + h] =
          float(weighted(s, {0, 1, 2, 3}, l, h, choice_of(l, h), false));
      all.predicted_error[l * kHeads + h] =
          float(weighted(s, {0, 1, 2, 3}, l, h, choice_of(l, h), true));
    }
  const ProfileMeasurements n = measure_profile(all, s);
  EXPECT_TRUE(n.split_recovered);
  EXPECT_TRUE(n.holdout_samples.empty());
  EXPECT_NE(n.note.find("no held-out"), std::string::npos) << n.note;
}

TEST(Report, MeasurementsRejectStatisticsOfAnotherShapeOrKernel) {
  const Statistics s = make_statistics();
  Profile p = make_profile(s);
  p.model.heads_q = 4;
  try {
    measure_profile(p, s);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("3 query heads, the profile 4"), std::string::npos)
        << e.what();
  }
  Profile q = make_profile(s);
  q.kernel.block_size = 64;
  EXPECT_THROW(measure_profile(q, s), Error);
  Profile r = make_profile(s);
  r.kernel.dense_last_query_block = !s.settings.dense_last_query_block;
  try {
    measure_profile(r, s);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("last query block"), std::string::npos) << e.what();
  }
}

ProfileReport make_report(bool with_statistics, const std::vector<int64_t>& lengths = kLengths) {
  const Statistics s = make_statistics(lengths);
  ProfileReport r;
  r.profile_name = "profiles/test.h5";
  r.profile = make_profile(s);
  if (with_statistics) {
    r.statistics_name = "profiles/stats-test.h5";
    r.measured = measure_profile(r.profile, s);
  }
  return r;
}

TEST(Report, TextHasLayersHeadsHeldOutAndUniform) {
  const ProfileReport r = make_report(true);
  const std::string text = format_report_text(r);
  const Profile& p = r.profile;
  // Layer 1 row: mean τ, mean density, held-out error of its heads.
  double tau = 0, dens = 0, held = 0;
  for (int64_t h = 0; h < kHeads; ++h) {
    tau += p.thresholds[kHeads + h] / double(kHeads);
    dens += p.predicted_density[kHeads + h] / double(kHeads);
    held += r.measured->holdout_error[kHeads + h] / double(kHeads);
  }
  const std::string row = "    1" + std::string(9 - fixed(tau, 4).size(), ' ') + fixed(tau, 4);
  EXPECT_NE(text.find(row), std::string::npos) << text;
  EXPECT_NE(text.find(fixed(dens, 4)), std::string::npos) << text;
  EXPECT_NE(text.find(fixed(held, 6)), std::string::npos) << text;
  EXPECT_NE(text.find("held-out error"), std::string::npos);
  EXPECT_NE(text.find("over 1 of 4 samples"), std::string::npos) << text;
  // Sparsest head: layer 0 head 0 (τ 0.5); densest: a head at τ 1.
  const size_t sparsest = text.find("sparsest heads");
  ASSERT_NE(sparsest, std::string::npos);
  const std::string first_row = text.substr(text.find('\n', text.find('\n', sparsest) + 1) + 1, 30);
  EXPECT_EQ(first_row.substr(0, 11), "    0     0") << first_row;
  EXPECT_NE(text.find("densest heads"), std::string::npos);
  // Uniform comparison: density 0.5 against the predicted mean.
  EXPECT_NE(text.find("τ 0.8 for every head: density 0.5000"), std::string::npos) << text;
  EXPECT_NE(text.find(fixed(100 * p.predicted_mean_density / 0.5, 1) + "% of its blocks"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("KL divergence from dense attention  0.00125 nats / position"),
            std::string::npos);
}

TEST(Report, TextWithoutStatisticsSaysHowToGetThem) {
  const std::string text = format_report_text(make_report(false));
  EXPECT_EQ(text.find("held-out error"), std::string::npos);
  EXPECT_NE(text.find("--stats FILE"), std::string::npos);
  Profile p = make_report(false).profile;
  p.uniform.reset();
  ProfileReport r{"x.h5", p, "", std::nullopt};
  EXPECT_NE(format_report_text(r).find("no single τ meets the budget"), std::string::npos);
}

TEST(Report, HtmlHasEveryFigureSelfContained) {
  const ProfileReport r = make_report(true);
  const std::string html = format_report_html(r);
  for (const char* id : {"fig-tau-heatmap", "fig-density-heatmap", "fig-layer-density",
                         "fig-error-curves", "fig-error-curves-layer-0", "fig-error-curves-layer-1",
                         "fig-predicted-vs-validated", "fig-density-vs-length"})
    EXPECT_NE(html.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  // Every svg has a title, and the page knows how many to expect.
  const size_t svgs = count(html, "<svg ");
  EXPECT_EQ(svgs, 7u);
  EXPECT_EQ(count(html, "-title\">"), svgs);
  EXPECT_NE(html.find("data-figures-expected=\"7\""), std::string::npos);
  EXPECT_NE(html.find("document.body.dataset.figures"), std::string::npos);
  // Nothing external.
  EXPECT_EQ(html.find("http"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find(" src="), std::string::npos);
  // Numbers of the profile: a τ and density in the heatmap tooltips, the held-out error table.
  const Profile& p = r.profile;
  EXPECT_NE(html.find("layer 1 head 2: τ " + fixed(p.thresholds[5], 4) + ", density " +
                      fixed(p.predicted_density[5], 4)),
            std::string::npos);
  const double layer0_held =
      (r.measured->holdout_error[0] + r.measured->holdout_error[1] + r.measured->holdout_error[2]) /
      3;
  EXPECT_NE(html.find("<td>" + fixed(layer0_held, 6) + "</td>"), std::string::npos);
  EXPECT_NE(html.find("1024"), std::string::npos);
  EXPECT_NE(html.find("2048"), std::string::npos);
  // One curve per head: kLayers * kHeads polylines in the curve charts plus the length chart's.
  EXPECT_GE(count(html, "<polyline"), size_t(kLayers * kHeads));
}

TEST(Report, FrontierIsDrawnAndPrintedWhenTheProfileHasOne) {
  ProfileReport r = make_report(true);
  Profile& p = r.profile;
  p.frontier.holdout_tokens = 4095;
  p.frontier.uniform = {{0.9, 0.30, 0.31, 0.097, 0.08}, {0.99, 0.44, 0.45, 0.0017, -0.0004}};
  p.frontier.per_head = {{0.09, 0.19, 0.194, 0.106, 0.09}, {0.0045, 0.29, 0.298, 0.00316, 0.001}};
  p.validation["kl_mean"] = 0.00356;
  p.validation["e2e_density"] = 0.291;
  const std::string html = format_report_html(r);
  EXPECT_NE(html.find("id=\"fig-frontier\""), std::string::npos);
  EXPECT_NE(html.find("4095 held-out tokens"), std::string::npos);
  EXPECT_NE(html.find("this profile: density 29.1 %, KL 0.00356"), std::string::npos);
  EXPECT_EQ(count(html, "<svg "), 8u);  // the seven figures plus the frontier
  EXPECT_NE(html.find("data-figures-expected=\"8\""), std::string::npos);
  const std::string text = format_report_text(r);
  EXPECT_NE(text.find("quality frontier on held-out samples (4095 tokens"), std::string::npos);
  // Uniform at the per-head point's density 29.8 % (between 31 % and 45 %: outside, no ratio) and
  // at 19.4 % (outside the uniform curve too); the curve's points themselves are listed.
  EXPECT_NE(text.find("0.99"), std::string::npos);
  // Without a frontier there is no such figure.
  EXPECT_EQ(format_report_html(make_report(true)).find("fig-frontier"), std::string::npos);
}

TEST(Report, HtmlNotesWhatTheStatisticsCannotShow) {
  const std::string one_length = format_report_html(make_report(true, {4096, 4096, 4096, 4096}));
  EXPECT_EQ(one_length.find("id=\"fig-density-vs-length\""), std::string::npos);
  EXPECT_NE(one_length.find("cover one sequence length (4096 tokens)"), std::string::npos);
  EXPECT_NE(one_length.find("id=\"fig-predicted-vs-validated\""), std::string::npos);

  const std::string none = format_report_html(make_report(false));
  for (const char* id : {"fig-tau-heatmap", "fig-density-heatmap", "fig-layer-density"})
    EXPECT_NE(none.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  EXPECT_EQ(none.find("fig-error-curves"), std::string::npos);
  EXPECT_EQ(none.find("id=\"fig-predicted-vs-validated\""), std::string::npos);
  EXPECT_NE(none.find("note-no-curves"), std::string::npos);
  EXPECT_NE(none.find("data-figures-expected=\"3\""), std::string::npos);
}

TEST(Report, LargeModelHeatmapStaysReadable) {
  // 32 x 32 heads: 30 px cells, every cell still shows its value (shrunk to fit, never below
  // 6.5 px), axis labels thin out.
  ProfileReport r;
  r.profile_name = "big.h5";
  Profile& p = r.profile;
  p.model = {"llama", 32, 32, 8, 128, "", ""};
  for (int i = 0; i < 32 * 32; ++i) {
    p.thresholds.push_back(i % 2 ? 0.9f : 0.5f);
    p.predicted_density.push_back(float(i % 10) / 10);
    p.predicted_error.push_back(0.001f);
  }
  p.budget = {0.01, "output_error", std::nullopt, {}};
  const std::string html = format_report_html(r);
  EXPECT_EQ(count(html, "<rect"),
            2 * 32 * 32 + 2 /*legend bars*/ + 1 /*τ = 1 swatch*/ + 32 + 1 /*density bars+key*/);
  EXPECT_NE(html.find(">31</text>"), std::string::npos);  // last layer/head labelled
  EXPECT_EQ(count(html, "class=\"cell-value\""), size_t(2 * 32 * 32));
  const std::regex size_of_value(
      "font-size=\"([0-9.]+)\" text-anchor=\"middle\" class=\"cell-value\"");
  size_t sizes = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), size_of_value);
       it != std::sregex_iterator(); ++it, ++sizes)
    EXPECT_GE(std::stod((*it)[1]), 6.5);
  EXPECT_EQ(sizes, size_t(2 * 32 * 32));
}

ProfileComparison make_comparison() {
  const Statistics s = make_statistics();
  ProfileComparison c{"a.h5", "b.h5", make_profile(s), make_profile(s)};
  c.b.thresholds[0] = 1.0f;  // layer 0 head 0: 0.5 -> 1.0 (the largest change)
  c.b.thresholds[3] = 1.0f;  // layer 1 head 0: 0.8 -> 1.0
  c.b.predicted_density[0] = 1.0f;
  c.b.budget.epsilon = 0.01;
  return c;
}

TEST(Report, ComparisonTextShowsLayerDifferencesAndMostChangedHeads) {
  const ProfileComparison c = make_comparison();
  ASSERT_FLOAT_EQ(c.a.thresholds[0], 0.5f);
  ASSERT_FLOAT_EQ(c.a.thresholds[3], 0.8f);
  const std::string text = format_comparison_text(c);
  EXPECT_NE(text.find("τ changed on 2 of 6 heads"), std::string::npos) << text;
  // Layer 0's mean τ rises by 0.5 / 3, layer 1's by 0.2 / 3.
  EXPECT_NE(text.find("+" + fixed(0.5 / 3, 4)), std::string::npos) << text;
  EXPECT_NE(text.find("+" + fixed(0.2 / 3, 4)), std::string::npos) << text;
  const size_t most = text.find("heads whose τ changed most");
  ASSERT_NE(most, std::string::npos);
  const std::string first = text.substr(text.find('\n', text.find('\n', most) + 1) + 1, 40);
  EXPECT_EQ(first.substr(0, 11), "    0     0") << first;
  EXPECT_NE(first.find("+0.5000"), std::string::npos) << first;
}

TEST(Report, ComparisonHtmlAndShapeMismatch) {
  ProfileComparison c = make_comparison();
  const std::string html = format_comparison_html(c);
  for (const char* id : {"fig-tau-diff-heatmap", "fig-density-diff-heatmap",
                         "fig-layer-density-compare", "fig-tau-scatter"})
    EXPECT_NE(html.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  EXPECT_NE(html.find("id=\"fig-cost-vs-gain\""), std::string::npos);
  EXPECT_NE(html.find("data-figures-expected=\"5\""), std::string::npos);
  EXPECT_NE(html.find("B - A +0.5000"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);
  c.b.model.num_layers = 3;
  c.b.thresholds.resize(9, 1.0f);
  try {
    format_comparison_text(c);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("different model shapes"), std::string::npos);
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Report, HtmlIsWrittenAtomicallyAndNotOverwrittenWithoutForce) {
  const test_files::ScratchFolder folder("xattn-report-write-");
  const std::string& dir = folder.path();
  const std::string path = folder.file("r.html");
  write_report_html(path, "<p>one</p>", false);
  EXPECT_EQ(read_text(path), "<p>one</p>");
  EXPECT_THROW(write_report_html(path, "<p>two</p>", false), Error);
  EXPECT_EQ(read_text(path), "<p>one</p>");
  write_report_html(path, "<p>two</p>", true);
  EXPECT_EQ(read_text(path), "<p>two</p>");
  EXPECT_EQ(folder.entry_count(), 1);
  // A folder (or a device) is never replaced, even with force.
  EXPECT_THROW(write_report_html(dir, "<p>three</p>", true), Error);
  EXPECT_TRUE(io::is_directory(dir));
}

struct CliResult {
  int code;
  std::string output;
};

CliResult run_cli(const std::string& arguments) {
  const xattn::testing::CliResult r = xattn::testing::run_xattn(arguments);
  return {r.code, r.out};
}

TEST(Report, CliReportsOneProfileWithStatisticsBesideItAndComparesTwo) {
  const test_files::ScratchFolder dir("xattn-report-cli-");
  const Statistics s = make_statistics();
  const std::string profile = dir.file("p.h5");
  write_profile(profile, make_profile(s), false);
  write_statistics(dir.file("stats-p.h5"), s, false);
  const std::string html = dir.file("r.html");

  CliResult r = run_cli("report " + profile + " --html " + html);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("held-out error"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stats-p.h5"), std::string::npos) << r.output;
  EXPECT_NE(read_text(html).find("id=\"fig-predicted-vs-validated\""), std::string::npos);

  r = run_cli("report " + profile + " --html " + html);
  EXPECT_EQ(r.code, 4) << r.output;
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  EXPECT_EQ(run_cli("report " + profile + " --no-stats --html " + html + " --force").code, 0);
  EXPECT_EQ(read_text(html).find("id=\"fig-predicted-vs-validated\""), std::string::npos);

  ProfileComparison c = make_comparison();
  const std::string other = dir.file("q.h5");
  write_profile(other, c.b, false);
  r = run_cli("report " + profile + " " + other);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("heads whose τ changed most"), std::string::npos) << r.output;

  EXPECT_EQ(run_cli("report").code, 2);
  EXPECT_EQ(run_cli("report " + profile + " " + other + " --stats x.h5").code, 2);
  EXPECT_EQ(run_cli("report " + dir.file("missing.h5")).code, 4);
}

// The fill of the heatmap cell whose tooltip starts with `tooltip` (e.g. "layer 0 head 1:").
std::string cell_fill(const std::string& html, const std::string& figure_id,
                      const std::string& tooltip) {
  const size_t figure = html.find("<svg id=\"" + figure_id + "\"");
  const size_t end = html.find("</svg>", figure);
  const size_t tip = html.find("<title>" + tooltip, figure);
  if (figure == std::string::npos || tip == std::string::npos || tip > end) return "";
  const size_t fill = html.rfind("fill=\"", tip);
  return html.substr(fill + 6, 7);
}

// y of the legend text `label` in figure `figure_id`.
double legend_y(const std::string& html, const std::string& figure_id, const std::string& label) {
  const size_t figure = html.find("<svg id=\"" + figure_id + "\"");
  const size_t at = html.find("class=\"legend-tick\">" + label + "</text>", figure);
  if (figure == std::string::npos || at == std::string::npos) return kNaNForTests;
  const size_t y = html.rfind(" y=\"", at);
  return std::stod(html.substr(y + 4));
}

ProfileReport tau_report(const std::vector<float>& taus) {
  ProfileReport r;
  r.profile_name = "taus.h5";
  Profile& p = r.profile;
  p.model = {"llama", 1, int64_t(taus.size()), 1, 64, "", ""};
  p.thresholds = taus;
  p.predicted_density.assign(taus.size(), 0.5f);
  p.predicted_error.assign(taus.size(), 0.001f);
  p.budget = {0.01, "output_error", std::nullopt, {}};
  return r;
}

TEST(Report, TauColoursSeparateTheNinesOnAFixedScale) {
  // 0.9, 0.99, 0.999 and 1 keep very different shares of blocks: four different colours, 1 the
  // dense swatch's; the legend spaces 0.9 / 0.99 / 0.999 / 0.9999 equally.
  const std::string html = format_report_html(tau_report({0.9f, 0.99f, 0.999f, 1.0f}));
  std::set<std::string> fills;
  for (int h = 0; h < 4; ++h) {
    const std::string fill =
        cell_fill(html, "fig-tau-heatmap", "layer 0 head " + std::to_string(h) + ":");
    ASSERT_EQ(fill.size(), 7u) << h;
    fills.insert(fill);
  }
  EXPECT_EQ(fills.size(), 4u);
  const size_t dense = html.find("class=\"legend-dense\"");
  ASSERT_NE(dense, std::string::npos);
  const size_t swatch_fill = html.rfind("fill=\"", dense);
  EXPECT_EQ(html.substr(swatch_fill + 6, 7), cell_fill(html, "fig-tau-heatmap", "layer 0 head 3:"));
  const double y9 = legend_y(html, "fig-tau-heatmap", "0.9"),
               y99 = legend_y(html, "fig-tau-heatmap", "0.99"),
               y999 = legend_y(html, "fig-tau-heatmap", "0.999"),
               y9999 = legend_y(html, "fig-tau-heatmap", "0.9999");
  EXPECT_GT(y9 - y99, 20);
  EXPECT_NEAR(y9 - y99, y99 - y999, 0.2);
  EXPECT_NEAR(y99 - y999, y999 - y9999, 0.2);
  // Fixed: τ 0.95 has one colour whatever the other heads' τ (no per-report rescaling).
  const std::string low = format_report_html(tau_report({0.95f, 0.2f}));
  const std::string high = format_report_html(tau_report({0.95f, 0.999f}));
  EXPECT_EQ(cell_fill(low, "fig-tau-heatmap", "layer 0 head 0:"),
            cell_fill(high, "fig-tau-heatmap", "layer 0 head 0:"));
  EXPECT_NE(cell_fill(low, "fig-tau-heatmap", "layer 0 head 0:"), "");
  // Cells show τ as written values: "0.9", "0.99", "0.999", "1".
  for (const char* text : {">0.9<", ">0.99<", ">0.999<", ">1<"})
    EXPECT_NE(html.find(text), std::string::npos) << text;
}

TEST(Report, DensityFloorMatchesTheSelectionAtTauZeroAndIsMarked) {
  // The floor is what the runtime's selection keeps when τ asks for nothing: sink, diagonal and
  // (dense_last_query_block) the last query block row.
  for (bool dense_last : {true, false})
    for (bool causal : {true, false}) {
      KernelSettings kernel;
      kernel.causal = causal;
      kernel.dense_last_query_block = dense_last;
      kernel.block_size = 64;
      double kept = 0, allowed = 0;
      for (int64_t len : {200, 64, 1000}) {
        const at::Tensor q = at::randn({1, 2, len, 32}), k = at::randn({1, 1, len, 32});
        runtime::EstimateOptions options;
        options.block_size = 64;
        options.causal = causal;
        options.dense_last_query_block = dense_last;
        const at::Tensor scores = runtime::antidiagonal_scores(q, k, options);
        const auto [mask, count, index] =
            runtime::select_blocks(scores, at::zeros({2}, at::kFloat), len, len, options);
        kept += count[0][0].sum().item<double>();
        allowed += allowed_blocks(len, len, 64, causal);
      }
      EXPECT_NEAR(density_floor(kernel, {200, 64, 1000}), kept / allowed, 1e-12)
          << "causal " << causal << ", dense last block " << dense_last;
    }
  // Marked on the density legend and in the density bars.
  ProfileReport r = make_report(true);
  const double floor = density_floor(r.profile.kernel, r.profile.data.lengths);
  ASSERT_GT(floor, 0);
  const std::string html = format_report_html(r);
  EXPECT_NE(html.find("floor " + fixed(100 * floor, 1) + " %"), std::string::npos);
  EXPECT_NE(html.find("floor (sink + diagonal): " + fixed(floor, 4)), std::string::npos);
  EXPECT_NE(html.find("class=\"floor-region\""), std::string::npos);  // on the error curves
}

TEST(Report, ValidationIsATableInWordsWithUnits) {
  ProfileReport r = make_report(true);
  r.profile.validation = {{"kl_mean", 0.00125},
                          {"e2e_density", 0.291},
                          {"nll_dense", 1.0791},
                          {"holdout_mean_error", 0.0042},
                          {"passkey_accuracy", 1}};
  const std::string html = format_report_html(r);
  const size_t table = html.find("<table id=\"validation-table\"");
  ASSERT_NE(table, std::string::npos);
  const std::string rows = html.substr(table, html.find("</table>", table) - table);
  EXPECT_NE(rows.find("<td>KL divergence from dense attention</td><td>0.00125</td>"
                      "<td>nats / position</td>"),
            std::string::npos)
      << rows;
  EXPECT_NE(rows.find("<td>attention density in the model run</td><td>29.1</td>"
                      "<td>% of allowed blocks</td>"),
            std::string::npos)
      << rows;
  EXPECT_NE(rows.find("<td>next-token loss with dense attention</td><td>1.079</td>"),
            std::string::npos);
  EXPECT_NE(rows.find("<td>output error (relative L2)</td>"), std::string::npos);
  for (const char* key : {"kl_mean", "e2e_density", "nll_dense", "holdout_mean_error"})
    EXPECT_EQ(rows.find(key), std::string::npos) << key;
  EXPECT_NE(rows.find("<td>passkey_accuracy</td>"), std::string::npos);  // unknown: as stored

  // The terminal summary prints the same rows: words, value, unit; no stored keys but unknown
  // ones.
  const std::string text = format_report_text(r);
  const size_t from = text.find("\nvalidation\n");
  ASSERT_NE(from, std::string::npos) << text;
  const std::string block = text.substr(from, text.find("\nstatistics", from) - from);
  EXPECT_NE(block.find("KL divergence from dense attention"), std::string::npos) << block;
  EXPECT_NE(block.find("0.00125 nats / position"), std::string::npos) << block;
  EXPECT_NE(block.find("29.1 % of allowed blocks"), std::string::npos) << block;
  for (const char* key : {"kl_mean", "e2e_density", "nll_dense", "holdout_mean_error"})
    EXPECT_EQ(block.find(key), std::string::npos) << key;
  EXPECT_NE(block.find("passkey_accuracy"), std::string::npos) << block;
}

TEST(Report, ErrorCurveCaptionSaysWhichErrorIsDrawn) {
  ProfileReport r = make_report(true);
  std::string html = format_report_html(r);
  EXPECT_NE(html.find("Error: the same cost-weighted mean, in output error (relative L2)"),
            std::string::npos);
  EXPECT_NE(html.find("mean output error (relative L2)</text>"), std::string::npos);  // y title
  r.profile.budget.metric = "output_error_worst_sample";
  html = format_report_html(r);
  EXPECT_NE(html.find("Error: the worst of the 3 fit samples, as the profile budgets it"),
            std::string::npos);
  EXPECT_EQ(html.find("the same cost-weighted mean"), std::string::npos);
  EXPECT_NE(html.find("worst-sample output error (relative L2)</text>"), std::string::npos);
  // No raw identifier as an axis title, τ written at the points.
  EXPECT_EQ(html.find(">output_error</text>"), std::string::npos);
  EXPECT_GE(count(html, "class=\"tau-label\""), size_t(kLayers * kHeads));
}

TEST(Report, PredictedAgainstValidatedFitsItsAxesToThePoints) {
  const ProfileReport r = make_report(true);
  const std::string html = format_report_html(r);
  const size_t figure = html.find("<svg id=\"fig-predicted-vs-validated\"");
  ASSERT_NE(figure, std::string::npos);
  const std::string svg = html.substr(figure, html.find("</svg>", figure) - figure);
  double least = 1, most = 0;
  for (size_t i = 0; i < r.profile.predicted_error.size(); ++i) {
    least = std::min({least, double(r.profile.predicted_error[i]), r.measured->holdout_error[i]});
    most = std::max({most, double(r.profile.predicted_error[i]), r.measured->holdout_error[i]});
  }
  std::vector<double> ticks;
  const std::regex tick("text-anchor=\"end\">([0-9.e-]+)</text>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), tick); it != std::sregex_iterator();
       ++it)
    ticks.push_back(std::stod((*it)[1]));
  ASSERT_GE(ticks.size(), 3u);
  const double top = *std::max_element(ticks.begin(), ticks.end());
  const double bottom = *std::min_element(ticks.begin(), ticks.end());
  EXPECT_GE(top, most);
  EXPECT_LT(top, 10 * most);  // the next decade at most
  // Errors from 0.001 to 0.33: log axes that start near the least, not a linear one from 0 that
  // leaves the small errors in a corner.
  ASSERT_GT(least, 0);
  EXPECT_GT(bottom, 0);
  EXPECT_LE(bottom, least);
  EXPECT_GT(bottom, least / 100);
  // Layers as categories: two layers, two different colours.
  std::set<std::string> colours;
  const std::regex marker("<circle [^>]*fill=\"(#[0-9a-f]{6})\" stroke=\"#fff\"><title>layer");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), marker); it != std::sregex_iterator();
       ++it)
    colours.insert((*it)[1]);
  EXPECT_EQ(colours.size(), size_t(kLayers));
}

TEST(Report, ComparisonShowsTheAccuracyCostNextToTheDensityGain) {
  ProfileComparison c = make_comparison();
  c.b.predicted_mean_density = c.a.predicted_mean_density - 0.05;
  c.b.predicted_mean_error = c.a.predicted_mean_error + 0.004;
  c.a.validation = {{"kl_mean", 0.001}};
  c.b.validation = {{"kl_mean", 0.003}};
  const std::string html = format_comparison_html(c);
  const size_t table = html.find("<table id=\"cost-table\"");
  ASSERT_NE(table, std::string::npos);
  const std::string rows = html.substr(table, html.find("</table>", table) - table);
  EXPECT_NE(rows.find("<td>predicted mean density (fit samples)</td>"), std::string::npos);
  EXPECT_NE(rows.find("<td>-5.00</td>"), std::string::npos) << rows;
  EXPECT_NE(rows.find("<td>+0.004000</td>"), std::string::npos) << rows;
  EXPECT_NE(rows.find("<td>KL divergence from dense attention</td><td>0.001</td><td>0.003</td>"
                      "<td>+0.002000</td>"),
            std::string::npos)
      << rows;
  EXPECT_NE(html.find("id=\"cost-summary\""), std::string::npos);
  // Budgets in different metrics: their errors are not subtracted.
  c.b.budget.metric = "recall_loss";
  const std::string other = format_comparison_html(c);
  EXPECT_NE(other.find("note-other-metric"), std::string::npos);
  EXPECT_EQ(other.find("fig-cost-vs-gain"), std::string::npos);
  EXPECT_EQ(other.find("predicted mean error (fit samples)"), std::string::npos);
}

TEST(Report, CaptureOfSampleReadsCaptureSources) {
  Statistics s = make_statistics();
  s.samples[0].source = "dir/short.h5#1";
  s.samples[1].source = "data.txt@4095";
  s.samples[2].source = "odd#name.h5#x";
  const auto first = capture_of_sample(s, 0);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->first, "dir/short.h5");
  EXPECT_EQ(first->second, 1);
  EXPECT_FALSE(capture_of_sample(s, 1).has_value());
  EXPECT_FALSE(capture_of_sample(s, 2).has_value());
  EXPECT_FALSE(capture_of_sample(s, 9).has_value());
}

TEST(Report, BlockMapsAreTheRuntimeSelectionOfOneSample) {
  const test_files::ScratchFolder dir("xattn-report-maps-");
  runtime::SyntheticOptions options;
  options.num_layers = 2;
  options.heads_q = 6;
  options.heads_kv = 2;
  options.len = 700;  // 6 blocks of 128, the last one partial
  options.batch = 2;
  options.dtype = at::kFloat;
  const std::string capture = dir.file("c.h5");
  runtime::write_synthetic_capture(capture, options, {});
  Profile p;
  p.model = {"synthetic", 2, 6, 2, 64, "", ""};
  p.kernel = {128, 8, "1/(sqrt(d)*S)", true};
  const std::vector<float> taus = {0.5f, 0.9f,   0.99f, 1.0f, 0.3f,  0.95f,
                                   0.8f, 0.999f, 0.7f,  0.6f, 0.97f, 1.0f};
  p.thresholds = taus;
  for (size_t i = 0; i < taus.size(); ++i) {
    p.predicted_density.push_back(0.05f * float(i) + 0.1f);
    p.predicted_error.push_back(0.001f);
  }
  p.predicted_density[3] = 1.0f;   // τ 1: the densest, but dense heads are not drawn ...
  p.predicted_density[11] = 1.0f;  // ... when heads below τ 1 exist
  const BlockMaps maps = compute_block_maps(p, capture, 1, 2);
  ASSERT_EQ(maps.maps.size(), 4u);
  EXPECT_EQ(maps.sparsest, 2);
  EXPECT_EQ(maps.dense_heads, 2);
  EXPECT_EQ(maps.length, 700);
  EXPECT_NE(maps.sample.find("item 1 of " + capture + " (700 tokens)"), std::string::npos);
  // Sparsest by predicted density: heads 0 and 1; densest below τ 1: heads 10 and 9.
  const std::vector<std::pair<int64_t, int64_t>> expected = {{0, 0}, {0, 1}, {1, 4}, {1, 3}};
  const io::CaptureReader reader(capture);
  for (size_t k = 0; k < maps.maps.size(); ++k) {
    const BlockMap& map = maps.maps[k];
    EXPECT_EQ(std::make_pair(map.layer, map.head), expected[k]) << k;
    const io::CaptureLayer layer = reader.read_layer_item(map.layer, 1);
    runtime::EstimateOptions estimate;
    const at::Tensor tau = at::full({6}, taus[size_t(map.layer * 6 + map.head)]);
    const at::Tensor kept = std::get<1>(runtime::estimate(layer.q, layer.k, tau, estimate));
    ASSERT_EQ(map.query_blocks, 6);
    ASSERT_EQ(map.key_blocks, 6);
    int64_t kept_cells = 0, allowed = 0;
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t j = 0; j < 6; ++j) {
        const uint8_t cell = map.cells[size_t(i * 6 + j)];
        if (j > i) {
          EXPECT_EQ(cell, kCellNotAllowed) << i << "," << j;
          continue;
        }
        ++allowed;
        const bool want = kept[0][map.head][i][j].item<bool>();
        EXPECT_EQ(cell != kCellDropped, want)
            << "layer " << map.layer << " head " << map.head << " block " << i << "," << j;
        // Forced: the sink, the diagonal and the dense last row.
        EXPECT_EQ(cell == kCellForced, j == 0 || j == i || i == 5) << i << "," << j;
        kept_cells += want;
      }
    EXPECT_DOUBLE_EQ(map.density, double(kept_cells) / double(allowed));
  }
  // Drawn on the page: one figure per map, the sample named.
  ProfileReport r;
  r.profile_name = "p.h5";
  r.profile = p;
  r.profile.budget = {0.01, "output_error", std::nullopt, {}};
  r.block_maps = maps;
  const std::string html = format_report_html(r);
  for (const auto& [l, h] : expected)
    EXPECT_NE(
        html.find("<svg id=\"fig-block-map-" + std::to_string(l) + "-" + std::to_string(h) + "\""),
        std::string::npos);
  EXPECT_NE(html.find("item 1 of"), std::string::npos);
  EXPECT_NE(html.find("2 heads are dense"), std::string::npos);
  EXPECT_EQ(html.find("note-no-block-maps"), std::string::npos);
  // A capture of another model is refused, naming the difference.
  Profile other = p;
  other.model.heads_q = 8;
  try {
    compute_block_maps(other, capture, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("6 query heads"), std::string::npos) << e.what();
  }
  EXPECT_THROW(compute_block_maps(p, capture, 2), Error);  // no item 2
}

TEST(Report, CliDrawsBlockMapsFromTheCaptureTheStatisticsName) {
  const test_files::ScratchFolder dir("xattn-report-cli-maps-");
  const std::string capture = dir.file("c.h5");
  CliResult r = run_cli("synth --out " + capture +
                        " --len 512 --batch 2 --layers 2 --heads-q 4 "
                        "--heads-kv 2");
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_cli("calibrate --capture " + capture + " --out " + dir.file("p.h5") + " --stats-out " +
              dir.file("stats-p.h5") + " --holdout 0.5 --epsilon 0.05");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string html = dir.file("r.html");
  r = run_cli("report " + dir.file("p.h5") + " --html " + html);
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string page = read_text(html);
  EXPECT_NE(page.find("id=\"fig-block-maps\""), std::string::npos);
  EXPECT_NE(page.find("of " + capture), std::string::npos);
  // Gone: the page says why and how to get them.
  std::remove(capture.c_str());
  r = run_cli("report " + dir.file("p.h5") + " --html " + html + " --force");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(read_text(html).find("not there any more. Give --capture FILE"), std::string::npos);
  EXPECT_EQ(run_cli("report " + dir.file("p.h5") + " --capture-item 1").code, 2);
  EXPECT_EQ(run_cli("report " + dir.file("p.h5") + " --capture " + dir.file("none.h5")).code, 4);
}

}  // namespace
}  // namespace xattn::calibrate
