// The two selection rules (docs/selection-rules.md): the smallest set reaching tau (ours) and the
// published code's rule, against brute force, a hand-built row where they disagree, and a C++
// transcription of the published find_blocks_chunked as the oracle.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "scratch.h"
#include "xattn/error.h"
#include "xattn/io/estimate_file.h"
#include "xattn/kernels/cpu.h"
#include "xattn/ops.h"

namespace xattn {
namespace {

using kernels::SelectionParams;
using kernels::SelectionRule;

// A causal square problem of n blocks of 64 tokens, one head: scores [n, n] row-major.
struct Square {
  int64_t n = 1;
  std::vector<float> scores;
};

// Kept blocks per row (0/1) of the CPU reference.
std::vector<std::vector<uint8_t>> select(const Square& sq, float tau, SelectionRule rule,
                                         bool causal = true, bool keep = true) {
  const int64_t n = sq.n;
  std::vector<uint8_t> mask(n * n);
  std::vector<int32_t> count(n), index(n * n);
  SelectionParams p;
  p.problem.max_len_q = p.problem.max_len_k = n * 64;
  p.problem.causal = causal;
  p.block_size = 64;
  p.block_scores = sq.scores.data();
  p.thresholds = &tau;
  p.keep_sink = p.keep_diagonal = keep;
  p.rule = rule;
  p.mask = mask.data();
  p.kv_block_count = count.data();
  p.kv_block_index = index.data();
  kernels::cpu::select_blocks(p);
  std::vector<std::vector<uint8_t>> rows(n);
  for (int64_t i = 0; i < n; ++i) {
    rows[i].assign(mask.begin() + i * n, mask.begin() + (i + 1) * n);
    EXPECT_EQ(count[i], std::accumulate(rows[i].begin(), rows[i].end(), 0)) << "row " << i;
  }
  return rows;
}

// Direct transcription of the published find_blocks_chunked (mit-han-lab/x-attention,
// xattn/src/utils.py, causal prefill, threshold mode) for one row of one chunk, followed by the
// causal clean-up of xattn_estimate. `row` holds every key block of the padded sequence (future
// blocks are 0); the chunk's query rows start at key block `current_index`, `chunk_rows` of them,
// and this is row `r` of the chunk. The published torch.sort is not stable; ties go to the lower
// index here, as in our rules.
std::vector<uint8_t> published_oracle(const std::vector<float>& row_scores, int64_t current_index,
                                      int64_t chunk_rows, int64_t r, float tau) {
  const int64_t n = int64_t(row_scores.size());
  const std::vector<double> a(row_scores.begin(), row_scores.end());  // input_tensor.to(float)
  double total = 0;
  for (double x : a) total += x;
  const double required = total * double(tau);
  // Forced mask: column 0, then the chunk's identity written over columns
  // [current_index, current_index + chunk_rows), which clears column 0 when current_index == 0.
  std::vector<uint8_t> mask(n, 0);
  mask[0] = 1;
  for (int64_t c = current_index; c < current_index + chunk_rows; ++c)
    mask[c] = c - current_index == r;
  // Descending values of the unforced blocks (forced ones read as 0).
  std::vector<double> other(n);
  double forced_sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    other[j] = mask[j] ? 0.0 : a[j];
    if (mask[j]) forced_sum += a[j];
  }
  std::vector<double> sorted = other;
  std::stable_sort(sorted.begin(), sorted.end(), std::greater<>());
  // [0, forced mass, sorted values without the last two]
  std::vector<double> values = {0.0, forced_sum};
  for (int64_t j = 0; j + 2 < n; ++j) values.push_back(sorted[j]);
  values.resize(n);
  // Order: forced blocks first (key 100000 * (1 + x)), then descending score.
  std::vector<int64_t> index(n);
  std::iota(index.begin(), index.end(), 0);
  auto key = [&](int64_t j) { return mask[j] ? 100000.0 * (1.0 + a[j]) : a[j]; };
  std::stable_sort(index.begin(), index.end(),
                   [&](int64_t x, int64_t y) { return key(x) > key(y); });
  // Cumulative sum "without self": [0, values[0 .. n-2]].cumsum()
  std::vector<double> before(n);
  double running = 0;
  for (int64_t k = 0; k < n; ++k) {
    before[k] = running;
    running += values[k];
  }
  std::vector<uint8_t> keep = mask;
  for (int64_t k = 0; k < n; ++k) keep[before[k] < required ? index[k] : 0] = 1;
  // Causal clean-up: nothing after the row's diagonal block.
  for (int64_t j = current_index + r + 1; j < n; ++j) keep[j] = 0;
  return keep;
}

// Smallest number of blocks containing `forced` whose mass reaches tau * total, by brute force.
int brute_force_min_blocks(const std::vector<float>& scores, const std::vector<int>& forced,
                           float tau) {
  const int n = int(scores.size());
  double total = 0;
  for (float s : scores) total += s;
  int best = n;
  for (uint32_t subset = 0; subset < (1u << n); ++subset) {
    bool has_forced = true;
    for (int f : forced) has_forced &= bool(subset & (1u << f));
    if (!has_forced) continue;
    double mass = 0;
    for (int j = 0; j < n; ++j)
      if (subset & (1u << j)) mass += scores[j];
    if (mass >= double(tau) * total) best = std::min(best, __builtin_popcount(subset));
  }
  return best;
}

// XATTENTION.md §2's row: sink 0.1, diagonal 5, others 4, 3, 2, 1, 0.9 (total 16), tau = 0.9.
TEST(SelectionRules, HandBuiltRowWhereTheRulesDisagree) {
  Square sq;
  sq.n = 7;
  sq.scores.assign(sq.n * sq.n, 0.f);
  for (int64_t i = 0; i < sq.n; ++i) sq.scores[i * sq.n + i] = 1.f;  // rows above: any content
  // Last row: key blocks 0..6, the diagonal is block 6; the others in a scrambled order.
  const std::vector<float> last = {0.1f, 2.f, 0.9f, 4.f, 1.f, 3.f, 5.f};
  std::copy(last.begin(), last.end(), sq.scores.begin() + 6 * sq.n);
  const float tau = 0.9f;  // required 14.4

  const std::vector<uint8_t> smallest = select(sq, tau, SelectionRule::kSmallestSet)[6];
  const std::vector<uint8_t> published = select(sq, tau, SelectionRule::kPublished)[6];
  // Smallest set: sink + diagonal (5.1), then 4, 3, 2 (14.1) and 1 crosses (15.1).
  EXPECT_EQ(smallest, (std::vector<uint8_t>{1, 1, 0, 1, 1, 1, 1}));
  EXPECT_EQ(std::accumulate(smallest.begin(), smallest.end(), 0),
            brute_force_min_blocks(last, {0, 6}, tau));
  // Published: the diagonal (5), then 4 (kept unconditionally), 3 (5 < 14.4), 2 (9), 1 (12) and
  // 0.9 (14 < 14.4); the sink (15 >= 14.4) is kept only because dropped entries point at block 0.
  EXPECT_EQ(published, (std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(published, published_oracle(last, 0, 7, 6, tau));
  // That is the smallest set reaching 0.9 with only the diagonal forced ({6, 3, 5, 1, 4}: 15),
  // plus the next block in score order (0.9), plus the sink.
  EXPECT_EQ(brute_force_min_blocks(last, {6}, tau) + 2,
            std::accumulate(published.begin(), published.end(), 0));
}

TEST(SelectionRules, SmallestSetMatchesBruteForce) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  for (int trial = 0; trial < 200; ++trial) {
    Square sq;
    sq.n = 1 + trial % 12;
    sq.scores.resize(sq.n * sq.n);
    for (auto& s : sq.scores) s = std::pow(uniform(rng), 3.f);
    const float tau = uniform(rng);
    const auto kept = select(sq, tau, SelectionRule::kSmallestSet);
    for (int64_t i = 0; i < sq.n; ++i) {
      const std::vector<float> row(sq.scores.begin() + i * sq.n,
                                   sq.scores.begin() + i * sq.n + i + 1);
      std::vector<int> forced = {0};
      if (i > 0) forced.push_back(int(i));
      EXPECT_EQ(std::accumulate(kept[i].begin(), kept[i].end(), 0),
                brute_force_min_blocks(row, forced, tau))
          << "trial " << trial << " row " << i;
    }
  }
}

// Random causal matrices (continuous scores, and scores on a coarse grid full of ties and zeros)
// against the transcription, one chunk holding every row.
TEST(SelectionRules, PublishedMatchesTheTranscribedPublishedCode) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  std::uniform_int_distribution<int> level(0, 6);
  const std::vector<float> taus = {0.f, 0.05f, 0.3f, 0.5f, 0.8f, 0.9f, 0.95f, 0.99f};
  int64_t rows_checked = 0, rows_differing_from_smallest = 0;
  for (int trial = 0; trial < 120; ++trial) {
    const bool grid = trial % 3 == 2;
    Square sq;
    sq.n = 1 + trial % 24;
    sq.scores.assign(sq.n * sq.n, 0.f);
    for (int64_t i = 0; i < sq.n; ++i)
      for (int64_t j = 0; j <= i; ++j)
        sq.scores[i * sq.n + j] =
            grid ? float(std::max(0, level(rng) - 2)) / 8.f : std::pow(uniform(rng), 4.f);
    for (float tau : taus) {
      const auto published = select(sq, tau, SelectionRule::kPublished);
      const auto smallest = select(sq, tau, SelectionRule::kSmallestSet);
      for (int64_t i = 0; i < sq.n; ++i) {
        const std::vector<float> row(sq.scores.begin() + i * sq.n,
                                     sq.scores.begin() + (i + 1) * sq.n);
        EXPECT_EQ(published[i], published_oracle(row, 0, sq.n, i, tau))
            << "trial " << trial << " tau " << tau << " row " << i;
        ++rows_checked;
        rows_differing_from_smallest += published[i] != smallest[i];
      }
    }
  }
  // The rules do differ on most rows (else this test would prove little).
  EXPECT_GT(rows_differing_from_smallest, rows_checked / 2);
}

// The published code is right on every chunk but the first: there column 0 survives the
// diagonal write, two blocks are forced, and its cumulative sums are the smallest set's.
TEST(SelectionRules, PublishedLaterChunksAreTheSmallestSet) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  const int64_t chunk = 4;
  for (int trial = 0; trial < 60; ++trial) {
    Square sq;
    sq.n = chunk * (2 + trial % 3);
    sq.scores.assign(sq.n * sq.n, 0.f);
    for (int64_t i = 0; i < sq.n; ++i)
      for (int64_t j = 0; j <= i; ++j) sq.scores[i * sq.n + j] = std::pow(uniform(rng), 4.f);
    for (float tau : {0.3f, 0.7f, 0.9f, 0.97f}) {
      const auto smallest = select(sq, tau, SelectionRule::kSmallestSet);
      for (int64_t i = chunk; i < sq.n; ++i) {
        const std::vector<float> row(sq.scores.begin() + i * sq.n,
                                     sq.scores.begin() + (i + 1) * sq.n);
        const int64_t start = i / chunk * chunk;
        EXPECT_EQ(smallest[i], published_oracle(row, start, chunk, i - start, tau))
            << "trial " << trial << " tau " << tau << " row " << i;
      }
    }
  }
}

TEST(SelectionRules, PublishedIsNestedInTauAndKeepsSinkAndDiagonal) {
  std::mt19937 rng(14);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  Square sq;
  sq.n = 20;
  sq.scores.assign(sq.n * sq.n, 0.f);
  for (int64_t i = 0; i < sq.n; ++i)
    for (int64_t j = 0; j <= i; ++j) sq.scores[i * sq.n + j] = std::pow(uniform(rng), 4.f);
  std::vector<std::vector<uint8_t>> previous;
  for (float tau = 0.f; tau <= 1.f; tau += 0.02f) {
    const auto now = select(sq, tau, SelectionRule::kPublished);
    for (int64_t i = 0; i < sq.n; ++i) {
      EXPECT_TRUE(now[i][0] && now[i][i]) << "tau " << tau << " row " << i;
      if (!previous.empty())
        for (int64_t j = 0; j < sq.n; ++j) EXPECT_LE(previous[i][j], now[i][j]) << "tau " << tau;
    }
    previous = now;
  }
  // tau = 0: only the sink and the diagonal; tau = 1: every allowed block.
  const auto none = select(sq, 0.f, SelectionRule::kPublished);
  const auto all = select(sq, 1.f, SelectionRule::kPublished);
  for (int64_t i = 0; i < sq.n; ++i) {
    EXPECT_EQ(std::accumulate(none[i].begin(), none[i].end(), 0), i > 0 ? 2 : 1);
    EXPECT_EQ(std::accumulate(all[i].begin(), all[i].end(), 0), i + 1);
  }
}

TEST(SelectionRules, NonCausalRulesAgreeAndCausalPublishedNeedsTheForcedBlocks) {
  std::mt19937 rng(15);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  Square sq;
  sq.n = 9;
  sq.scores.resize(sq.n * sq.n);
  for (auto& s : sq.scores) s = uniform(rng);
  for (bool keep : {false, true})
    for (float tau : {0.2f, 0.6f, 0.9f})
      EXPECT_EQ(select(sq, tau, SelectionRule::kPublished, false, keep),
                select(sq, tau, SelectionRule::kSmallestSet, false, keep));
  try {
    select(sq, 0.9f, SelectionRule::kPublished, true, false);
    FAIL() << "the published rule without the forced blocks was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("keep_sink"), std::string::npos) << e.what();
  }
}

TEST(SelectionRules, ThroughTheRuntimeOptions) {
  // The published set always contains the smallest set (it walks the same order, counts less
  // mass first and keeps one block more); rows the smallest set leaves incomplete get more.
  at::manual_seed(3);
  const at::Tensor q = at::randn({1, 2, 1000, 32}), k = at::randn({1, 2, 1000, 32});
  runtime::EstimateOptions options;
  options.block_size = 64;
  options.dense_last_query_block = false;
  const at::Tensor scores = runtime::antidiagonal_scores(q, k, options);
  for (float t : {0.5f, 0.9f}) {
    const at::Tensor tau = at::full({2}, t);
    options.selection_rule = SelectionRule::kSmallestSet;
    const at::Tensor smallest =
        std::get<0>(runtime::select_blocks(scores, tau, 1000, 1000, options));
    options.selection_rule = SelectionRule::kPublished;
    const at::Tensor published =
        std::get<0>(runtime::select_blocks(scores, tau, 1000, 1000, options));
    EXPECT_FALSE((smallest & ~published).any().item<bool>()) << "tau " << t;
    EXPECT_GT((published != smallest).any(-1).sum().item<int64_t>(), 0) << "tau " << t;
  }
}

TEST(SelectionRules, EstimateCommandTakesAndRecordsTheRule) {
  const std::string sample = std::string(XATTN_SOURCE_DIR) + "/examples/data/sample_capture.h5";
  const test_files::ScratchFolder folder("xattn-selection-rule-");
  const std::string out = folder.file("published.h5");
  const testing::CliResult run = testing::run_xattn("estimate --capture " + sample +
                                                    " --selection-rule published --out " + out);
  ASSERT_EQ(run.code, 0) << run.out;
  EXPECT_NE(run.out.find("selection published"), std::string::npos) << run.out;
  EXPECT_EQ(io::EstimateReader(out).info().selection_rule, "published");
  const testing::CliResult bad =
      testing::run_xattn("estimate --capture " + sample + " --selection-rule largest");
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_NE(bad.out.find("--selection-rule"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace xattn
