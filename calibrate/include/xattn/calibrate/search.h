// Per-head threshold search (XATTENTION.md §4): every head picks one τ from a candidate ladder so
// that the predicted attention cost is smallest while the accuracy budget holds.
//
//   minimise    Σ_h w[h] · density[h][m_h]
//   subject to  Σ_h v[h] · error[h][m_h] / Σ_h v[h]  <=  epsilon        (weighted mean error)
//               error[h][m_h] <= per_head_cap                            (optional)
//
// w = cost weights (1 by default), v = error weights (1 by default: the plain mean). The error is
// whatever metric the caller measured (recall loss or output error); the search does not care.
//
// It is a multiple-choice knapsack, solved exactly by dynamic programming over a discretised error
// budget (see SearchOptions::budget_units for the rounding rule and its guarantee), and bracketed
// by the Lagrangian lower bound. The best single uniform τ and the greedy solution are reported
// beside it, so a user sees what per-head calibration buys. Torch-free: plain vectors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace xattn::calibrate {

// The default candidate ladder, ascending: the paper's steps 0.9 · 0.9^m for m = 0..20
// (0.9 down to 0.9^21 ≈ 0.109; the next step, 0.9^22 ≈ 0.098, falls under the floor 0.1),
// plus the dense end 0.95, 0.99, 0.995, 0.998, 0.999, 0.9995 and 1.0, where near-lossless
// operating points sit. 28 values.
std::vector<double> default_tau_ladder();

// The search input. Matrices are row-major [num_heads, num_candidates]; a "head" is one
// (layer, query head) pair, head index = layer * heads_per_layer + query head.
struct SearchProblem {
  std::vector<double> taus;      // [M] the candidate ladder, strictly ascending, each in (0, 1]
  int64_t num_heads = 0;         // H
  std::vector<double> density;   // [H, M] predicted density (kept / allowed blocks), in [0, 1]
                                 // (up to 1 + 1e-6 accepted as rounding noise of averaging)
  std::vector<double> error;     // [H, M] predicted error (>= 0) of head h at candidate m
  std::vector<double> cost_weight;   // [H] w, >= 0; empty: all 1
  std::vector<double> error_weight;  // [H] v, >= 0 with positive sum; empty: all 1 (plain mean)
  double epsilon = 0.0;              // budget on the weighted mean error, >= 0
  std::optional<double> per_head_cap;  // optional cap on any single head's error
  int64_t heads_per_layer = 0;  // only for messages ("layer 3 head 5"); 0: plain head indices
};

struct SearchOptions {
  // The budget epsilon is split into `budget_units` equal units u = epsilon / budget_units. Error
  // is counted in whole units, rounded UP, relative to a feasible reference assignment (the greedy
  // solution): head h at candidate m uses ceil((e'[h][m] - e'[h][ref]) / u) units, e' = v e / Σv its
  // share of the weighted mean, and the total may not exceed floor((epsilon - Σ e'[h][ref]) / u).
  // Consequences:
  //  - every DP solution meets the budget for the true errors;
  //  - the greedy solution always fits, so the DP is never worse than greedy;
  //  - an assignment that differs from the reference on k heads fits whenever its true error is
  //    at most epsilon - k·u; so the DP cost is at most the true optimum for the tightened budget
  //    epsilon · (1 - H / budget_units), and it is exact when every e' is a multiple of u.
  // After the DP a polishing pass spends any slack left on the true errors (best saving per error
  // first), which can only lower the cost and keeps feasibility. Time O(H · M · units), memory at
  // most H · (2 · units + H + 1) bytes (2 bytes per entry beyond 254 candidates).
  // 0 (the default) picks max(10000, 16 · H).
  int64_t budget_units = 0;
  bool polish = true;
  // Relative tolerance for comparing an achieved error against epsilon or the cap (floating-point
  // noise of summation only).
  double feasibility_tolerance = 1e-12;
};

// One choice per head and its figures.
struct Assignment {
  std::vector<int32_t> choice;  // [H] candidate index per head
  std::vector<double> tau;      // [H] taus[choice[h]]
  double cost = 0.0;            // Σ w[h] · density
  double mean_density = 0.0;    // cost / Σ w  (0 when Σ w = 0)
  double error = 0.0;           // weighted mean error Σ v e / Σ v
  double max_head_error = 0.0;  // max over heads of error[h][choice[h]]
};

struct UniformResult {
  int32_t index = -1;  // candidate index shared by every head
  double tau = 0.0;
  Assignment assignment;
};

struct SearchResult {
  Assignment optimal;  // the DP solution, after polishing when enabled
  double dp_cost_before_polish = 0.0;
  // Lagrangian dual bound: max over lambda >= 0 of Σ_h min_m (w d + lambda v e / Σv) - lambda eps,
  // found by bisection on lambda. No assignment meeting the budget costs less.
  double lower_bound = 0.0;
  double lagrange_multiplier = 0.0;  // the lambda reaching lower_bound
  double relative_gap = 0.0;         // (optimal.cost - lower_bound) / optimal.cost (0 if cost 0)
  Assignment greedy;                 // start dense, best saving per error added while feasible
  std::optional<UniformResult> uniform;  // best single τ meeting the budget (and cap), if any
  int64_t budget_units = 0;          // the discretisation actually used
  double budget_unit = 0.0;          // error (weighted mean) per unit: epsilon / budget_units
  double seconds = 0.0;              // wall time of the whole search
};

// Checks the problem (sizes, NaN, ranges) and throws xattn::Error naming the bad entry.
void validate(const SearchProblem& problem);

// The smallest weighted mean error any assignment reaches (each head at its least-error candidate
// allowed by the cap). The problem is feasible iff this is <= epsilon.
double min_achievable_error(const SearchProblem& problem);

// Solves the problem. Throws xattn::Error (kInvalidArgument) on bad input, and (kBadInput) when no
// assignment meets the budget or some head has no candidate under the cap; the message gives the
// smallest achievable error and what to change.
SearchResult search_thresholds(const SearchProblem& problem, const SearchOptions& options = {});

// Figures of a given assignment (choice per head), for comparisons and tests.
Assignment evaluate_assignment(const SearchProblem& problem, const std::vector<int32_t>& choice);

// Whether an assignment meets the budget and cap (with options.feasibility_tolerance).
bool is_feasible(const SearchProblem& problem, const Assignment& assignment,
                 double feasibility_tolerance = 1e-12);

}  // namespace xattn::calibrate
