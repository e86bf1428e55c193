// Per-head threshold search: the DP against exhaustive search (exact when errors are multiples of
// the budget unit, within the documented rounding bound otherwise), against greedy and the
// Lagrangian bound on large instances, the uniform-τ baseline, determinism and input checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

#include "xattn/calibrate/search.h"
#include "xattn/error.h"

namespace xattn::calibrate {
namespace {

// Exhaustive optimum over all M^H assignments: min cost subject to weighted mean error <= eps
// (and the cap). Returns +inf when nothing is feasible.
double exhaustive_optimum(const SearchProblem& p, double eps) {
  const int64_t H = p.num_heads;
  const int64_t M = static_cast<int64_t>(p.taus.size());
  std::vector<int32_t> choice(H, 0);
  double best = std::numeric_limits<double>::infinity();
  for (;;) {
    const Assignment a = evaluate_assignment(p, choice);
    const bool capped = p.per_head_cap && a.max_head_error > *p.per_head_cap;
    if (!capped && a.error <= eps) best = std::min(best, a.cost);
    int64_t h = 0;
    while (h < H && ++choice[h] == M) choice[h++] = 0;
    if (h == H) break;
  }
  return best;
}

// Random instance; the last candidate is dense (density 1, error 0). With `quantum` > 0 every
// error is a multiple of it.
SearchProblem random_problem(std::mt19937& rng, int64_t heads, int64_t cands, double quantum,
                             int max_quanta) {
  SearchProblem p;
  p.num_heads = heads;
  for (int64_t m = 0; m < cands; ++m) p.taus.push_back(double(m + 1) / double(cands));
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> quanta(0, max_quanta);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t m = 0; m < cands; ++m) {
      const bool dense = m == cands - 1;
      p.density.push_back(dense ? 1.0 : unit(rng));
      p.error.push_back(dense ? 0.0 : quantum > 0 ? quantum * quanta(rng) : 0.2 * unit(rng));
    }
  }
  return p;
}

// Realistic shape: density rises and error falls with τ, heads differ in how concentrated they are.
SearchProblem structured_problem(std::mt19937& rng, int64_t heads, const std::vector<double>& taus) {
  SearchProblem p;
  p.num_heads = heads;
  p.taus = taus;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int64_t h = 0; h < heads; ++h) {
    const double sharpness = 0.5 + 6.0 * unit(rng);  // high: few blocks hold the mass
    const double noise = 0.05 * unit(rng);
    for (double tau : taus) {
      const bool dense = tau >= 1.0;
      const double d = dense ? 1.0 : std::min(1.0, std::pow(tau, sharpness) + noise * unit(rng));
      const double e = dense ? 0.0 : (1.0 - tau) * (0.5 + unit(rng)) / sharpness;
      p.density.push_back(d);
      p.error.push_back(e);
    }
  }
  return p;
}

TEST(SearchLadder, DefaultContents) {
  const std::vector<double> taus = default_tau_ladder();
  ASSERT_EQ(taus.size(), 28u);
  EXPECT_TRUE(std::is_sorted(taus.begin(), taus.end()));
  EXPECT_TRUE(std::adjacent_find(taus.begin(), taus.end()) == taus.end());
  // The paper's steps 0.9 * 0.9^m down to the floor 0.1, then the dense end.
  for (int m = 0; m <= 20; ++m) {
    const double step = 0.9 * std::pow(0.9, m);
    EXPECT_TRUE(std::any_of(taus.begin(), taus.end(),
                            [&](double t) { return std::abs(t - step) < 1e-12; }))
        << "missing 0.9*0.9^" << m;
  }
  EXPECT_GE(taus.front(), 0.1);
  EXPECT_LT(taus.front() * 0.9, 0.1);
  EXPECT_NEAR(taus[taus.size() - 8], 0.9, 1e-15);
  const std::vector<double> dense_end = {0.95, 0.99, 0.995, 0.998, 0.999, 0.9995, 1.0};
  EXPECT_EQ(std::vector<double>(taus.end() - 7, taus.end()), dense_end);
}

// Errors are multiples of 1/16, four equal error weights and eps = t/64 with t budget units: every
// head's share e/4 is an exact multiple of the unit 1/64, so the rounding is exact and the DP must
// reach the exhaustive optimum exactly (up to summation order of the cost).
TEST(SearchDp, MatchesExhaustiveWhenErrorsAreMultiplesOfTheUnit) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> budget(0, 64);
  std::uniform_real_distribution<double> weight(0.1, 2.0);
  std::bernoulli_distribution coin(0.3);
  for (int trial = 0; trial < 400; ++trial) {
    SearchProblem p = random_problem(rng, 4, 4, 1.0 / 16, 16);
    const int t = budget(rng);
    p.epsilon = t / 64.0;
    if (coin(rng)) {
      p.cost_weight.clear();
      for (int h = 0; h < 4; ++h) p.cost_weight.push_back(weight(rng));
    }
    if (coin(rng)) p.per_head_cap = (4 + trial % 12) / 16.0;
    SearchOptions opt;
    opt.budget_units = std::max(t, 1);
    if (t == 0) opt.budget_units = 7;  // eps = 0: only zero-error candidates count
    for (bool polish : {false, true}) {
      opt.polish = polish;
      const SearchResult r = search_thresholds(p, opt);
      const double exact = exhaustive_optimum(p, p.epsilon);
      ASSERT_TRUE(std::isfinite(exact));
      EXPECT_NEAR(r.optimal.cost, exact, 1e-12) << "trial " << trial << " polish " << polish;
      EXPECT_NEAR(r.dp_cost_before_polish, exact, 1e-12) << "trial " << trial;
      EXPECT_TRUE(is_feasible(p, r.optimal)) << "trial " << trial;
      EXPECT_LE(r.optimal.error, p.epsilon) << "trial " << trial;
      EXPECT_LE(r.lower_bound, r.optimal.cost + 1e-12) << "trial " << trial;
    }
  }
}

// Real-valued errors and a coarse budget (H / units = 20%): the rounding bound of SearchOptions
// must hold: OPT(eps) <= DP <= OPT(eps * (1 - H / units)), and the DP is always feasible.
TEST(SearchDp, WithinRoundingBoundOfExhaustive) {
  std::mt19937 rng(777);
  std::uniform_real_distribution<double> eps_dist(0.0, 0.12);
  int strictly_between = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t H = 3 + trial % 3, M = 3 + trial % 2;
    SearchProblem p = random_problem(rng, H, M, 0.0, 0);
    p.epsilon = eps_dist(rng);
    if (trial % 4 == 0) {
      p.error_weight.clear();
      for (int64_t h = 0; h < H; ++h) p.error_weight.push_back(0.5 + h);
    }
    SearchOptions opt;
    opt.budget_units = 5 * H;
    opt.polish = trial % 2 == 0;
    const SearchResult r = search_thresholds(p, opt);
    const double exact = exhaustive_optimum(p, p.epsilon);
    const double tightened = exhaustive_optimum(p, p.epsilon * (1.0 - double(H) / opt.budget_units));
    EXPECT_TRUE(is_feasible(p, r.optimal)) << "trial " << trial;
    EXPECT_GE(r.optimal.cost, exact - 1e-12) << "trial " << trial;
    EXPECT_LE(r.dp_cost_before_polish, tightened + 1e-12) << "trial " << trial;
    EXPECT_LE(r.optimal.cost, r.dp_cost_before_polish + 1e-12) << "trial " << trial;
    EXPECT_LE(r.lower_bound, exact + 1e-12) << "trial " << trial;
    strictly_between += r.optimal.cost > exact + 1e-12;
  }
  // The bound is not vacuous: the coarse rounding does cost something on some instances.
  EXPECT_GT(strictly_between, 0);
}

TEST(SearchDp, NeverWorseThanGreedyNeverBelowLagrangianBound) {
  std::mt19937 rng(2024);
  const std::vector<double> ladder = default_tau_ladder();
  std::vector<double> taus = ladder;
  taus.push_back(0.9999);  // 29 candidates
  std::sort(taus.begin(), taus.end());
  double max_gap = 0.0, mean_gain_over_greedy = 0.0;
  for (int trial = 0; trial < 24; ++trial) {
    SearchProblem p = trial % 3 == 2 ? random_problem(rng, 64, 25, 0.0, 0)
                                     : structured_problem(rng, 64, taus);
    p.epsilon = 0.002 + 0.02 * (trial % 6);
    if (trial % 4 == 1) p.per_head_cap = 3.0 * p.epsilon;
    const SearchResult r = search_thresholds(p);
    EXPECT_TRUE(is_feasible(p, r.optimal)) << "trial " << trial;
    EXPECT_TRUE(is_feasible(p, r.greedy)) << "trial " << trial;
    EXPECT_LE(r.optimal.cost, r.greedy.cost + 1e-9) << "trial " << trial;
    EXPECT_GE(r.optimal.cost, r.lower_bound - 1e-9) << "trial " << trial;
    EXPECT_GE(r.greedy.cost, r.lower_bound - 1e-9) << "trial " << trial;
    EXPECT_GE(r.relative_gap, -1e-12);
    max_gap = std::max(max_gap, r.relative_gap);
    mean_gain_over_greedy += (r.greedy.cost - r.optimal.cost) / 24;
  }
  std::cout << "[ search ] 64x25: max relative gap to Lagrangian bound " << max_gap
            << ", mean cost saved over greedy " << mean_gain_over_greedy << "\n";
}

// The greedy solution is the DP's reference and always fits its unit budget, so even the raw DP
// (no polishing) never loses to greedy, on quantised and on real-valued errors alike.
TEST(SearchDp, RawDpNeverWorseThanGreedy) {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 40; ++trial) {
    const bool quantised = trial % 2 == 0;
    // 64 heads, equal weights: share = e / 64; quantised errors k/256 and eps = t/256 make every
    // share a multiple of the unit 1/(64*256).
    SearchProblem p = random_problem(rng, 64, 25, quantised ? 1.0 / 256 : 0.0, 40);
    const int t = 2 + 3 * (trial / 2);
    p.epsilon = t / 256.0;
    SearchOptions opt;
    opt.budget_units = quantised ? 64 * t : 1000;
    opt.polish = false;
    const SearchResult r = search_thresholds(p, opt);
    EXPECT_LE(r.dp_cost_before_polish, r.greedy.cost + 1e-12) << "trial " << trial;
    EXPECT_EQ(r.optimal.cost, r.dp_cost_before_polish) << "trial " << trial;
    EXPECT_GE(r.dp_cost_before_polish, r.lower_bound - 1e-9) << "trial " << trial;
    EXPECT_TRUE(is_feasible(p, r.optimal)) << "trial " << trial;
  }
}

TEST(SearchUniform, FeasibleBestUniformAndNeverBetterThanDp) {
  std::mt19937 rng(31);
  const std::vector<double> taus = default_tau_ladder();
  for (int trial = 0; trial < 20; ++trial) {
    SearchProblem p = structured_problem(rng, 48, taus);
    p.epsilon = 0.005 * (1 + trial);
    if (trial % 2) p.per_head_cap = 4.0 * p.epsilon;
    const SearchResult r = search_thresholds(p);
    ASSERT_TRUE(r.uniform.has_value()) << "dense is always a feasible uniform τ";
    EXPECT_TRUE(is_feasible(p, r.uniform->assignment));
    EXPECT_EQ(r.uniform->tau, taus[r.uniform->index]);
    EXPECT_LE(r.optimal.cost, r.uniform->assignment.cost + 1e-9);
    // Brute force over the single τ values.
    double best = std::numeric_limits<double>::infinity();
    for (size_t m = 0; m < taus.size(); ++m) {
      const Assignment a = evaluate_assignment(p, std::vector<int32_t>(48, int32_t(m)));
      if (is_feasible(p, a)) best = std::min(best, a.cost);
    }
    EXPECT_DOUBLE_EQ(r.uniform->assignment.cost, best);
  }
}

TEST(SearchDp, Deterministic) {
  std::mt19937 rng(5);
  SearchProblem p = structured_problem(rng, 256, default_tau_ladder());
  // Many exact ties: copy heads so equal-cost alternatives exist.
  for (int64_t h = 128; h < 256; ++h) {
    const int64_t M = int64_t(p.taus.size());
    for (int64_t m = 0; m < M; ++m) {
      p.density[h * M + m] = p.density[(h - 128) * M + m];
      p.error[h * M + m] = p.error[(h - 128) * M + m];
    }
  }
  p.epsilon = 0.01;
  const SearchResult a = search_thresholds(p);
  const SearchResult b = search_thresholds(p);
  EXPECT_EQ(a.optimal.choice, b.optimal.choice);
  EXPECT_EQ(a.greedy.choice, b.greedy.choice);
  EXPECT_EQ(a.optimal.cost, b.optimal.cost);
  EXPECT_EQ(a.lower_bound, b.lower_bound);
  EXPECT_EQ(a.uniform->index, b.uniform->index);
}

TEST(SearchDp, EdgeBudgets) {
  std::mt19937 rng(8);
  SearchProblem p = structured_problem(rng, 16, default_tau_ladder());
  // A budget above every error: each head takes its cheapest candidate, and the bound is tight.
  p.epsilon = 10.0;
  SearchResult r = search_thresholds(p);
  EXPECT_NEAR(r.relative_gap, 0.0, 1e-12);
  const int64_t M = int64_t(p.taus.size());
  for (int64_t h = 0; h < 16; ++h) {
    const double cheapest = *std::min_element(p.density.begin() + h * M, p.density.begin() + (h + 1) * M);
    EXPECT_EQ(p.density[h * M + r.optimal.choice[h]], cheapest);
  }
  // Zero budget: only zero-error candidates; here that is dense everywhere.
  p.epsilon = 0.0;
  r = search_thresholds(p);
  EXPECT_EQ(r.optimal.error, 0.0);
  for (int32_t m : r.optimal.choice) EXPECT_EQ(m, int32_t(M - 1));
  EXPECT_NEAR(r.optimal.mean_density, 1.0, 1e-15);
  EXPECT_EQ(r.uniform->tau, 1.0);
}

TEST(SearchDp, ErrorWeightsAndCostWeightsMatter) {
  // Two heads, two candidates; head 0 counts 3x in the error mean: the budget only lets head 1 go
  // sparse.
  SearchProblem p;
  p.num_heads = 2;
  p.taus = {0.5, 1.0};
  p.density = {0.2, 1.0, 0.3, 1.0};
  p.error = {0.1, 0.0, 0.1, 0.0};
  p.error_weight = {3.0, 1.0};
  p.epsilon = 0.03;  // head 0 sparse: 0.075, head 1 sparse: 0.025
  SearchResult r = search_thresholds(p);
  EXPECT_EQ(r.optimal.choice, (std::vector<int32_t>{1, 0}));
  EXPECT_NEAR(r.optimal.error, 0.025, 1e-15);
  // Equal error weights, head 0 costs 10x: with room for one sparse head it is head 0.
  p.error_weight.clear();
  p.cost_weight = {10.0, 1.0};
  p.epsilon = 0.05;
  r = search_thresholds(p);
  EXPECT_EQ(r.optimal.choice, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(r.optimal.cost, 10 * 0.2 + 1.0, 1e-12);
  EXPECT_NEAR(r.optimal.mean_density, (10 * 0.2 + 1.0) / 11.0, 1e-12);
}

TEST(SearchDp, InfeasibleBudgetIsReportedClearly) {
  SearchProblem p;
  p.num_heads = 2;
  p.taus = {0.5, 0.9};
  p.density = {0.2, 0.5, 0.3, 0.6};
  p.error = {0.1, 0.05, 0.2, 0.04};  // no dense candidate: least mean error 0.045
  p.epsilon = 0.01;
  try {
    search_thresholds(p);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("smallest achievable weighted mean error is 0.045"),
              std::string::npos)
        << e.what();
  }
  EXPECT_NEAR(min_achievable_error(p), 0.045, 1e-15);
  p.epsilon = 0.045;  // exactly the least error: feasible, and only the safest assignment meets it
  const SearchResult r = search_thresholds(p);
  EXPECT_EQ(r.optimal.choice, (std::vector<int32_t>{1, 1}));
  // A cap that excludes every candidate of one head names it.
  p.epsilon = 1.0;
  p.per_head_cap = 0.045;
  p.heads_per_layer = 1;
  try {
    search_thresholds(p);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    EXPECT_NE(std::string(e.what()).find("layer 0 head 0"), std::string::npos) << e.what();
  }
}

TEST(SearchDp, BadInputThrows) {
  auto base = [] {
    SearchProblem p;
    p.num_heads = 2;
    p.taus = {0.5, 1.0};
    p.density = {0.2, 1.0, 0.3, 1.0};
    p.error = {0.1, 0.0, 0.1, 0.0};
    p.epsilon = 0.05;
    return p;
  };
  auto expect_arg_error = [](const SearchProblem& p, const char* needle) {
    try {
      search_thresholds(p);
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  SearchProblem p = base();
  p.density.pop_back();
  expect_arg_error(p, "density has 3 entries");
  p = base();
  p.error.push_back(0.0);
  expect_arg_error(p, "error has 5 entries");
  p = base();
  p.density[1] = std::nan("");
  expect_arg_error(p, "density of head 0");
  p = base();
  p.error[2] = -0.1;
  expect_arg_error(p, "error of head 1");
  p = base();
  p.density[0] = 1.5;
  expect_arg_error(p, "in [0, 1]");
  p = base();
  p.density[1] = 1.0 + 1e-12;  // averaging noise is accepted
  EXPECT_NO_THROW(search_thresholds(p));
  p = base();
  p.taus = {1.0, 0.5};
  expect_arg_error(p, "strictly ascending");
  p = base();
  p.taus = {0.0, 1.0};
  expect_arg_error(p, "not in (0, 1]");
  p = base();
  p.epsilon = -1;
  expect_arg_error(p, "epsilon");
  p = base();
  p.epsilon = std::numeric_limits<double>::infinity();
  expect_arg_error(p, "epsilon");
  p = base();
  p.cost_weight = {1.0};
  expect_arg_error(p, "cost_weight has 1 entries");
  p = base();
  p.error_weight = {0.0, 0.0};
  expect_arg_error(p, "every error_weight is 0");
  p = base();
  p.cost_weight = {1.0, std::nan("")};
  expect_arg_error(p, "cost_weight of head 1");
  p = base();
  p.per_head_cap = -0.5;
  expect_arg_error(p, "cap");
  p = base();
  p.num_heads = 0;
  expect_arg_error(p, "num_heads");
  SearchOptions opt;
  opt.budget_units = -1;
  EXPECT_THROW(search_thresholds(base(), opt), Error);
}

// Llama-3.1-8B shape: 32 layers x 32 query heads, the default ladder plus one, 10^4 budget units.
TEST(SearchDp, FullModelSizeIsFast) {
  std::mt19937 rng(1);
  std::vector<double> taus = default_tau_ladder();
  taus.push_back(0.9999);
  std::sort(taus.begin(), taus.end());
  SearchProblem p = structured_problem(rng, 1024, taus);
  p.heads_per_layer = 32;
  p.epsilon = 0.01;
  const auto t0 = std::chrono::steady_clock::now();
  const SearchResult r = search_thresholds(p);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ search ] 1024 heads x " << taus.size() << " candidates, " << r.budget_units
            << " units: " << s << " s; density " << r.optimal.mean_density << " (uniform τ "
            << r.uniform->tau << ": " << r.uniform->assignment.mean_density << ", greedy "
            << r.greedy.mean_density << "), gap to bound " << r.relative_gap << "\n";
  EXPECT_TRUE(is_feasible(p, r.optimal));
  EXPECT_LE(r.optimal.cost, r.greedy.cost + 1e-9);
  EXPECT_GE(r.optimal.cost, r.lower_bound - 1e-9);
  EXPECT_LT(r.relative_gap, 0.01);
  EXPECT_LT(s, 10.0);  // generous: the CI machine is slow and shared
}

}  // namespace
}  // namespace xattn::calibrate

