// Sliding-window attention in the CPU reference (problem.window) against brute force: the block
// geometry against every (query, key) pair, scoring against the unwindowed scores, selection
// never keeping a block outside the window, attention and exact block mass against a dense
// windowed oracle in float64. Windows smaller than, equal to and larger than the block size, not
// multiples of it; chunked prefill (len_q < len_k), GQA and varlen batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "xattn/error.h"
#include "xattn/kernels/cpu.h"

namespace xattn::kernels {
namespace {

struct WindowCase {
  std::vector<int32_t> len_q, len_k;  // one entry per sequence; more than one: varlen
  int64_t heads_q, heads_kv, head_dim, block, stride, window;
};

std::string name_of(const WindowCase& c) {
  std::string s = "q";
  for (int32_t l : c.len_q) s += std::to_string(l) + "_";
  s += "k";
  for (int32_t l : c.len_k) s += std::to_string(l) + "_";
  return s + "h" + std::to_string(c.heads_q) + "x" + std::to_string(c.heads_kv) + "_b" +
         std::to_string(c.block) + "_w" + std::to_string(c.window);
}

// Packed float32 q [total_q, heads_q, d] and k/v [total_k, heads_kv, d] for a varlen batch (also
// used for a single sequence).
struct Inputs {
  WindowCase c;
  std::vector<int32_t> cu_q, cu_k;
  std::vector<float> q, k, v;
  Problem problem;

  explicit Inputs(const WindowCase& wc, uint64_t seed) : c(wc) {
    cu_q = {0};
    cu_k = {0};
    for (size_t b = 0; b < c.len_q.size(); ++b) {
      cu_q.push_back(cu_q.back() + c.len_q[b]);
      cu_k.push_back(cu_k.back() + c.len_k[b]);
    }
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    q.resize(size_t(cu_q.back() * c.heads_q * c.head_dim));
    k.resize(size_t(cu_k.back() * c.heads_kv * c.head_dim));
    v.resize(k.size());
    for (float& x : q) x = normal(rng);
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    problem.batch = int64_t(c.len_q.size());
    problem.heads_q = c.heads_q;
    problem.heads_kv = c.heads_kv;
    problem.head_dim = c.head_dim;
    problem.max_len_q = *std::max_element(c.len_q.begin(), c.len_q.end());
    problem.max_len_k = *std::max_element(c.len_k.begin(), c.len_k.end());
    problem.cu_seqlens_q = cu_q.data();
    problem.cu_seqlens_k = cu_k.data();
    problem.causal = true;
    problem.window = c.window;
  }
  TensorView view_q() const {
    return {q.data(), DType::kFloat32, 0, c.head_dim, c.heads_q * c.head_dim};
  }
  TensorView view_k(const std::vector<float>& x) const {
    return {x.data(), DType::kFloat32, 0, c.head_dim, c.heads_kv * c.head_dim};
  }
  const float* q_row(int64_t b, int64_t h, int64_t i) const {
    return q.data() + ((cu_q[b] + i) * c.heads_q + h) * c.head_dim;
  }
  const float* kv_row(const std::vector<float>& x, int64_t b, int64_t h, int64_t j) const {
    return x.data() + ((cu_k[b] + j) * c.heads_kv + h) * c.head_dim;
  }
  int64_t nqb() const { return (problem.max_len_q + c.block - 1) / c.block; }
  int64_t nkb() const { return (problem.max_len_k + c.block - 1) / c.block; }
};

bool visible(int64_t position, int64_t key, int64_t window) {
  return key <= position && (window == 0 || position - key < window);
}

// Dense windowed attention in float64, keys limited to `kept` blocks when given
// ([batch, heads_q, nqb, nkb] 0/1). Output packed like q.
std::vector<double> oracle_attention(const Inputs& in, double scale,
                                     const std::vector<uint8_t>* kept = nullptr) {
  const auto& c = in.c;
  std::vector<double> out(in.q.size(), 0.0);
  const int64_t group = c.heads_q / c.heads_kv;
  for (int64_t b = 0; b < in.problem.batch; ++b) {
    const int64_t lq = c.len_q[b], lk = c.len_k[b], offset = lk - lq;
    for (int64_t h = 0; h < c.heads_q; ++h)
      for (int64_t i = 0; i < lq; ++i) {
        const int64_t position = offset + i;
        std::vector<double> logit(size_t(lk), -std::numeric_limits<double>::infinity());
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < lk; ++j) {
          if (!visible(position, j, c.window)) continue;
          if (kept && !(*kept)[size_t(((b * c.heads_q + h) * in.nqb() + i / c.block) * in.nkb() +
                                      j / c.block)])
            continue;
          double dot = 0;
          const float* qr = in.q_row(b, h, i);
          const float* kr = in.kv_row(in.k, b, h / group, j);
          for (int64_t e = 0; e < c.head_dim; ++e) dot += double(qr[e]) * double(kr[e]);
          logit[size_t(j)] = dot * scale;
          m = std::max(m, logit[size_t(j)]);
        }
        double total = 0;
        double* o = out.data() + ((in.cu_q[b] + i) * c.heads_q + h) * c.head_dim;
        for (int64_t j = 0; j < lk; ++j) {
          if (logit[size_t(j)] == -std::numeric_limits<double>::infinity()) continue;
          const double p = std::exp(logit[size_t(j)] - m);
          total += p;
          const float* vr = in.kv_row(in.v, b, h / group, j);
          for (int64_t e = 0; e < c.head_dim; ++e) o[e] += p * double(vr[e]);
        }
        for (int64_t e = 0; e < c.head_dim; ++e) o[e] = total > 0 ? o[e] / total : 0.0;
      }
  }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) return std::numeric_limits<double>::infinity();
    m = std::max(m, std::abs(double(a[i]) - b[i]));
  }
  return m;
}

std::vector<float> run_attention(const Inputs& in, const std::vector<int32_t>* count,
                                 const std::vector<int32_t>* index, float scale) {
  std::vector<float> out(in.q.size(), std::numeric_limits<float>::quiet_NaN());
  AttentionParams p;
  p.problem = in.problem;
  p.q = in.view_q();
  p.k = in.view_k(in.k);
  p.v = in.view_k(in.v);
  p.scale = scale;
  p.block_size = int32_t(in.c.block);
  p.kv_block_count = count ? count->data() : nullptr;
  p.kv_block_index = index ? index->data() : nullptr;
  p.out = {out.data(), DType::kFloat32, 0, in.c.head_dim, in.c.heads_q * in.c.head_dim};
  cpu::block_sparse_attention(p);
  return out;
}

struct Selection {
  std::vector<float> scores;
  std::vector<uint8_t> mask;
  std::vector<int32_t> count, index;
};

Selection score_and_select(const Inputs& in, float tau, bool dense_last = false,
                           int64_t window_override = -1) {
  Selection s;
  const size_t rows = size_t(in.problem.batch * in.c.heads_q * in.nqb());
  s.scores.assign(rows * size_t(in.nkb()), -1.f);
  ScoringParams sp;
  sp.problem = in.problem;
  if (window_override >= 0) sp.problem.window = window_override;
  sp.q = in.view_q();
  sp.k = in.view_k(in.k);
  sp.stride = int32_t(in.c.stride);
  sp.block_size = int32_t(in.c.block);
  sp.scale = float(1.0 / (std::sqrt(double(in.c.head_dim)) * double(in.c.stride)));
  sp.block_scores = s.scores.data();
  cpu::antidiagonal_scores(sp);
  std::vector<float> thresholds(size_t(in.c.heads_q), tau);
  s.mask.assign(s.scores.size(), 7);
  s.count.assign(rows, -7);
  s.index.assign(s.scores.size(), -7);
  SelectionParams sel;
  sel.problem = sp.problem;
  sel.block_size = int32_t(in.c.block);
  sel.block_scores = s.scores.data();
  sel.thresholds = thresholds.data();
  sel.dense_last_query_block = dense_last;
  sel.mask = s.mask.data();
  sel.kv_block_count = s.count.data();
  sel.kv_block_index = s.index.data();
  cpu::select_blocks(sel);
  return s;
}

class WindowedReference : public ::testing::TestWithParam<WindowCase> {};

// Block j is allowed for query block i exactly when some query of the block sees some key of j.
TEST_P(WindowedReference, GeometryMatchesEveryQueryKeyPair) {
  const Inputs in(GetParam(), 1);
  for (int64_t b = 0; b < in.problem.batch; ++b) {
    const BlockGeometry g = block_geometry(in.problem, b, in.c.block);
    const int64_t lq = in.c.len_q[b], lk = in.c.len_k[b], offset = lk - lq;
    for (int64_t i = 0; i < g.num_q_blocks(); ++i) {
      int64_t count = 0;
      for (int64_t j = 0; j < g.num_k_blocks(); ++j) {
        bool any = false;
        for (int64_t qi = i * in.c.block; qi < std::min(lq, (i + 1) * in.c.block) && !any; ++qi)
          for (int64_t kj = j * in.c.block; kj < std::min(lk, (j + 1) * in.c.block); ++kj)
            if (visible(offset + qi, kj, in.c.window)) {
              any = true;
              break;
            }
        EXPECT_EQ(any, j >= g.first_block(i) && j < g.end_block(i))
            << "sequence " << b << " row " << i << " block " << j;
        count += any;
      }
      EXPECT_EQ(count, g.allowed_blocks(i));
    }
  }
}

// Windowed scores are the unwindowed ones with the blocks before the window set to zero.
TEST_P(WindowedReference, ScoresAreCausalScoresWithOutOfWindowBlocksZeroed) {
  const Inputs in(GetParam(), 2);
  const Selection windowed = score_and_select(in, 0.9f);
  const Selection causal = score_and_select(in, 0.9f, false, 0);
  for (int64_t b = 0; b < in.problem.batch; ++b) {
    const BlockGeometry g = block_geometry(in.problem, b, in.c.block);
    for (int64_t h = 0; h < in.c.heads_q; ++h)
      for (int64_t i = 0; i < in.nqb(); ++i)
        for (int64_t j = 0; j < in.nkb(); ++j) {
          const size_t at = size_t(((b * in.c.heads_q + h) * in.nqb() + i) * in.nkb() + j);
          const bool allowed = i < g.num_q_blocks() && j >= g.first_block(i) && j < g.end_block(i);
          EXPECT_EQ(windowed.scores[at], allowed ? causal.scores[at] : 0.f)
              << "sequence " << b << " head " << h << " row " << i << " block " << j;
        }
  }
}

// Selection keeps only allowed blocks; tau = 1 keeps all of them, tau = 0 only the forced ones
// (the diagonal, the block of the row block's first query, and the sink while it is inside the
// window); density is monotone in tau.
TEST_P(WindowedReference, SelectionNeverKeepsBlocksOutsideTheWindow) {
  const Inputs in(GetParam(), 3);
  std::vector<int64_t> previous;
  for (float tau : {0.f, 0.3f, 0.7f, 0.9f, 0.99f, 1.f}) {
    const Selection s = score_and_select(in, tau);
    std::vector<int64_t> kept_per_row;
    for (int64_t b = 0; b < in.problem.batch; ++b) {
      const BlockGeometry g = block_geometry(in.problem, b, in.c.block);
      for (int64_t h = 0; h < in.c.heads_q; ++h)
        for (int64_t i = 0; i < in.nqb(); ++i) {
          const size_t row = size_t((b * in.c.heads_q + h) * in.nqb() + i);
          const bool real = i < g.num_q_blocks();
          int64_t kept = 0;
          for (int64_t j = 0; j < in.nkb(); ++j) {
            const bool m = s.mask[row * size_t(in.nkb()) + size_t(j)] != 0;
            kept += m;
            if (!real || j < g.first_block(i) || j >= g.end_block(i))
              EXPECT_FALSE(m) << "tau " << tau << " sequence " << b << " row " << i << " block " << j;
          }
          EXPECT_EQ(kept, s.count[row]);
          for (int32_t n = 0; n < s.count[row]; ++n)
            EXPECT_TRUE(s.mask[row * size_t(in.nkb()) + size_t(s.index[row * size_t(in.nkb()) + n])]);
          kept_per_row.push_back(kept);
          if (!real) continue;
          EXPECT_TRUE(s.mask[row * size_t(in.nkb()) + size_t(g.diagonal_block(i))]);
          if (tau >= 1.f) EXPECT_EQ(kept, g.allowed_blocks(i));
          // Every row keeps its own position: the block of the first query is forced too.
          EXPECT_TRUE(s.mask[row * size_t(in.nkb()) + size_t(g.first_diagonal_block(i))]);
          if (tau <= 0.f) {
            const bool sink_inside = g.first_block(i) == 0;
            std::vector<int64_t> forced = {g.diagonal_block(i), g.first_diagonal_block(i)};
            if (sink_inside) forced.push_back(0);
            std::sort(forced.begin(), forced.end());
            forced.erase(std::unique(forced.begin(), forced.end()), forced.end());
            EXPECT_EQ(kept, int64_t(forced.size()));
            EXPECT_EQ(s.mask[row * size_t(in.nkb())] != 0, sink_inside);
          }
        }
    }
    if (!previous.empty())
      for (size_t r = 0; r < previous.size(); ++r) EXPECT_GE(kept_per_row[r], previous[r]);
    previous = kept_per_row;
  }
}

// Dense mode (no block list), and sparse at tau = 1, equal the windowed oracle; sparse at lower
// tau equals the oracle restricted to the kept blocks (the window edge masked per token).
TEST_P(WindowedReference, AttentionMatchesDenseWindowedOracle) {
  const Inputs in(GetParam(), 4);
  const float scale = float(1.0 / std::sqrt(double(in.c.head_dim)));
  const std::vector<double> expected = oracle_attention(in, scale);
  EXPECT_LT(max_abs_diff(run_attention(in, nullptr, nullptr, scale), expected), 2e-5);
  const Selection all = score_and_select(in, 1.f);
  EXPECT_LT(max_abs_diff(run_attention(in, &all.count, &all.index, scale), expected), 2e-5);
  for (float tau : {0.f, 0.5f, 0.9f}) {
    const Selection s = score_and_select(in, tau);
    const std::vector<double> restricted = oracle_attention(in, scale, &s.mask);
    EXPECT_LT(max_abs_diff(run_attention(in, &s.count, &s.index, scale), restricted), 2e-5)
        << "tau " << tau;
  }
}

// Every block list the caller passes is clipped to the window: a list holding every key block
// gives the windowed answer.
TEST_P(WindowedReference, BlocksBeforeTheWindowInTheListAreIgnored) {
  const Inputs in(GetParam(), 5);
  const float scale = float(1.0 / std::sqrt(double(in.c.head_dim)));
  const size_t rows = size_t(in.problem.batch * in.c.heads_q * in.nqb());
  std::vector<int32_t> count(rows, int32_t(in.nkb())), index(rows * size_t(in.nkb()));
  for (size_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < in.nkb(); ++j) index[r * size_t(in.nkb()) + size_t(j)] = int32_t(j);
  EXPECT_LT(max_abs_diff(run_attention(in, &count, &index, scale), oracle_attention(in, scale)),
            2e-5);
}

// Exact block mass (calibration's ground truth) is the oracle's softmax summed per block.
TEST_P(WindowedReference, ExactBlockMassSumsTheWindowedSoftmax) {
  const Inputs in(GetParam(), 6);
  const auto& c = in.c;
  const double scale = 1.0 / std::sqrt(double(c.head_dim));
  std::vector<float> mass(size_t(in.problem.batch * c.heads_q * in.nqb() * in.nkb()), -1.f);
  BlockMassParams p;
  p.problem = in.problem;
  p.q = in.view_q();
  p.k = in.view_k(in.k);
  p.scale = float(scale);
  p.block_size = int32_t(c.block);
  p.block_mass = mass.data();
  cpu::exact_block_mass(p);
  const int64_t group = c.heads_q / c.heads_kv;
  for (int64_t b = 0; b < in.problem.batch; ++b) {
    const int64_t lq = c.len_q[b], lk = c.len_k[b], offset = lk - lq;
    for (int64_t h = 0; h < c.heads_q; ++h)
      for (int64_t i = 0; i < (lq + c.block - 1) / c.block; ++i) {
        std::vector<double> expected(size_t(in.nkb()), 0.0);
        const int64_t q1 = std::min(lq, (i + 1) * c.block);
        for (int64_t qi = i * c.block; qi < q1; ++qi) {
          std::vector<double> logit(size_t(lk), 0.0);
          double m = -std::numeric_limits<double>::infinity(), total = 0;
          for (int64_t j = 0; j < lk; ++j) {
            if (!visible(offset + qi, j, c.window)) continue;
            double dot = 0;
            for (int64_t e = 0; e < c.head_dim; ++e)
              dot += double(in.q_row(b, h, qi)[e]) * double(in.kv_row(in.k, b, h / group, j)[e]);
            logit[size_t(j)] = float(dot * scale);
            m = std::max(m, logit[size_t(j)]);
          }
          for (int64_t j = 0; j < lk; ++j)
            if (visible(offset + qi, j, c.window)) total += std::exp(logit[size_t(j)] - m);
          for (int64_t j = 0; j < lk; ++j)
            if (visible(offset + qi, j, c.window))
              expected[size_t(j / c.block)] += std::exp(logit[size_t(j)] - m) / total;
        }
        for (int64_t j = 0; j < in.nkb(); ++j)
          EXPECT_NEAR(mass[size_t(((b * c.heads_q + h) * in.nqb() + i) * in.nkb() + j)],
                      expected[size_t(j)] / double(q1 - i * c.block), 2e-5)
              << "sequence " << b << " row " << i << " block " << j;
      }
  }
}

std::vector<WindowCase> window_cases() {
  std::vector<WindowCase> cases;
  // Windows smaller than, equal to and larger than the block size (64), not multiples of it.
  for (int64_t w : {1, 5, 37, 64, 100, 128, 200, 1000})
    cases.push_back({{300}, {300}, 2, 2, 16, 64, 8, w});
  cases.push_back({{300}, {300}, 2, 2, 16, 64, 8, 0});  // no window
  // Chunked prefill: the queries are the last len_q positions.
  cases.push_back({{70}, {333}, 2, 1, 16, 64, 8, 50});
  cases.push_back({{129}, {400}, 2, 1, 16, 64, 4, 150});
  cases.push_back({{1}, {257}, 2, 2, 16, 64, 8, 100});
  // GQA, block 128, varlen with chunked sequences.
  cases.push_back({{260}, {260}, 4, 1, 32, 128, 16, 90});
  cases.push_back({{200, 17, 129}, {200, 300, 129}, 4, 2, 16, 64, 8, 70});
  cases.push_back({{97, 256}, {300, 256}, 2, 1, 16, 32, 8, 33});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Windows, WindowedReference, ::testing::ValuesIn(window_cases()),
                         [](const auto& info) { return name_of(info.param); });

// The published rule: the sink is kept only while inside the window.
TEST(WindowedSelection, PublishedRuleKeepsTheSinkOnlyInsideTheWindow) {
  const Inputs in({{512}, {512}, 1, 1, 16, 64, 8, 100}, 7);
  Selection s = score_and_select(in, 0.9f);
  std::vector<float> thresholds{0.5f};
  SelectionParams sel;
  sel.problem = in.problem;
  sel.block_size = 64;
  sel.block_scores = s.scores.data();
  sel.thresholds = thresholds.data();
  sel.rule = SelectionRule::kPublished;
  sel.mask = s.mask.data();
  sel.kv_block_count = s.count.data();
  sel.kv_block_index = s.index.data();
  cpu::select_blocks(sel);
  const BlockGeometry g = block_geometry(in.problem, 0, 64);
  for (int64_t i = 0; i < in.nqb(); ++i) {
    EXPECT_EQ(s.mask[size_t(i * in.nkb())] != 0, g.first_block(i) == 0) << "row " << i;
    for (int64_t j = 0; j < g.first_block(i); ++j) EXPECT_FALSE(s.mask[size_t(i * in.nkb() + j)]);
  }
}

// The last query block kept dense keeps every block of the window, not the sink.
TEST(WindowedSelection, DenseLastQueryBlockKeepsTheWindowOnly) {
  const Inputs in({{640}, {640}, 1, 1, 16, 64, 8, 150}, 8);
  const Selection s = score_and_select(in, 0.f, true);
  const BlockGeometry g = block_geometry(in.problem, 0, 64);
  const int64_t last = g.num_q_blocks() - 1;
  EXPECT_EQ(s.count[size_t(last)], g.allowed_blocks(last));
  EXPECT_EQ(g.first_block(last), (640 - 64 - 150 + 1) / 64);
  EXPECT_FALSE(s.mask[size_t(last * in.nkb())]);
}

TEST(WindowedReference, BadWindowsAreRefusedWithClearMessages) {
  Problem p;
  p.max_len_q = p.max_len_k = 16;
  p.window = -1;
  EXPECT_NE(cpu::validate(p).find("window -1 must be >= 0"), std::string::npos) << cpu::validate(p);
  p.window = 8;
  p.causal = false;
  EXPECT_NE(cpu::validate(p).find("needs causal attention"), std::string::npos) << cpu::validate(p);
  p.causal = true;
  EXPECT_EQ(cpu::validate(p), "");
}

}  // namespace
}  // namespace xattn::kernels
