// Per-head threshold search: exact multiple-choice knapsack DP over a discretised error budget,
// Lagrangian lower bound, greedy and uniform-τ baselines. See search.h for the problem statement.
#include "xattn/calibrate/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "xattn/error.h"

namespace xattn::calibrate {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kNoUnits = std::numeric_limits<int64_t>::max();
constexpr uint16_t kNoChoice = std::numeric_limits<uint16_t>::max();
constexpr uint8_t kNoSmallChoice = std::numeric_limits<uint8_t>::max();
// Averaging densities of 1 can land a hair above 1; that much is rounding noise, not bad input.
constexpr double kDensityNoise = 1e-6;
// Largest DP table (choices, 2 bytes each) we agree to allocate.
constexpr double kMaxTableBytes = 4.0 * 1024 * 1024 * 1024;

std::string head_name(const SearchProblem& p, int64_t h) {
  if (p.heads_per_layer > 0) {
    return detail::concat("layer ", h / p.heads_per_layer, " head ", h % p.heads_per_layer);
  }
  return detail::concat("head ", h);
}

// Everything the solvers need, with defaults filled in and weights normalised.
struct Prepared {
  const SearchProblem& p;
  int64_t heads = 0;
  int64_t cands = 0;
  std::vector<double> cost;      // [H, M] w[h] * density
  std::vector<double> share;     // [H, M] v[h] * error / Σv: the head's part of the weighted mean
  std::vector<uint8_t> allowed;  // [H, M] under the cap
  double weight_sum = 0.0;       // Σ w
  double tol = 1e-12;

  explicit Prepared(const SearchProblem& problem, double tolerance) : p(problem), tol(tolerance) {
    heads = p.num_heads;
    cands = static_cast<int64_t>(p.taus.size());
    double v_sum = 0.0;
    for (int64_t h = 0; h < heads; ++h) v_sum += p.error_weight.empty() ? 1.0 : p.error_weight[h];
    cost.resize(heads * cands);
    share.resize(heads * cands);
    allowed.resize(heads * cands);
    for (int64_t h = 0; h < heads; ++h) {
      const double w = p.cost_weight.empty() ? 1.0 : p.cost_weight[h];
      const double v = (p.error_weight.empty() ? 1.0 : p.error_weight[h]) / v_sum;
      weight_sum += w;
      for (int64_t m = 0; m < cands; ++m) {
        const int64_t i = h * cands + m;
        cost[i] = w * p.density[i];
        share[i] = v * p.error[i];
        allowed[i] = !p.per_head_cap || p.error[i] <= *p.per_head_cap * (1.0 + tol);
      }
    }
  }
  double c(int64_t h, int64_t m) const { return cost[h * cands + m]; }
  double s(int64_t h, int64_t m) const { return share[h * cands + m]; }
  bool ok(int64_t h, int64_t m) const { return allowed[h * cands + m] != 0; }
  // Weighted mean error of an assignment, summed in head order (deterministic).
  double total_share(const std::vector<int32_t>& choice) const {
    double e = 0.0;
    for (int64_t h = 0; h < heads; ++h) e += s(h, choice[h]);
    return e;
  }
};

// Per head, the allowed candidate of least error (ties: lower cost, then larger index).
std::vector<int32_t> least_error_choice(const Prepared& q) {
  std::vector<int32_t> choice(q.heads, -1);
  for (int64_t h = 0; h < q.heads; ++h) {
    int64_t best = -1;
    for (int64_t m = q.cands - 1; m >= 0; --m) {
      if (!q.ok(h, m)) continue;
      if (best < 0 || q.s(h, m) < q.s(h, best) ||
          (q.s(h, m) == q.s(h, best) && q.c(h, m) < q.c(h, best))) {
        best = m;
      }
    }
    XATTN_CHECK_INPUT(best >= 0, "no candidate τ keeps ", head_name(q.p, h),
                      " under the per-head error cap ", *q.p.per_head_cap,
                      " (its smallest error is ",
                      *std::min_element(q.p.error.begin() + h * q.cands,
                                        q.p.error.begin() + (h + 1) * q.cands),
                      "); raise the cap or add the dense candidate 1.0 to the ladder");
    choice[h] = static_cast<int32_t>(best);
  }
  return choice;
}

// Greedy improvement on the true errors: repeatedly apply the single-head move with the best cost
// saving per unit of error added that keeps the budget; free moves (no error added) first. Ties:
// larger saving, then lower head index, then larger candidate index. Each head's cost strictly
// falls with every move of that head, so there are at most H * (M - 1) moves.
void improve_greedily(const Prepared& q, std::vector<int32_t>& choice) {
  struct Move {
    int64_t m = -1;
    double ratio = 0.0;
    double saving = 0.0;
    double added = 0.0;
  };
  auto better = [](const Move& a, const Move& b) {  // is a better than b?
    if (b.m < 0) return a.m >= 0;
    if (a.m < 0) return false;
    if (a.ratio != b.ratio) return a.ratio > b.ratio;
    if (a.saving != b.saving) return a.saving > b.saving;
    return a.m > b.m;
  };
  double used = q.total_share(choice);
  auto slack = [&] { return q.p.epsilon - used; };
  auto best_move = [&](int64_t h) {
    Move best;
    const int64_t cur = choice[h];
    for (int64_t m = 0; m < q.cands; ++m) {
      if (m == cur || !q.ok(h, m)) continue;
      const double saving = q.c(h, cur) - q.c(h, m);
      if (!(saving > 0.0)) continue;
      const double added = q.s(h, m) - q.s(h, cur);
      if (added > slack()) continue;
      Move mv{m, added <= 0.0 ? kInf : saving / added, saving, added};
      if (better(mv, best)) best = mv;
    }
    return best;
  };
  std::vector<Move> cached(q.heads);
  for (int64_t h = 0; h < q.heads; ++h) cached[h] = best_move(h);
  for (;;) {
    int64_t best_h = -1;
    for (int64_t h = 0; h < q.heads; ++h) {
      // A cached move stays the head's best while it remains within the (shrinking) slack.
      if (cached[h].m >= 0 && cached[h].added > slack()) cached[h] = best_move(h);
      if (cached[h].m >= 0 && (best_h < 0 || better(cached[h], cached[best_h]))) best_h = h;
    }
    if (best_h < 0) break;
    const bool slack_grew = cached[best_h].added < 0.0;
    choice[best_h] = static_cast<int32_t>(cached[best_h].m);
    used = q.total_share(choice);
    if (slack_grew) {
      for (int64_t h = 0; h < q.heads; ++h) cached[h] = best_move(h);
    } else {
      cached[best_h] = best_move(best_h);
    }
  }
}

struct Item {
  int64_t units;
  double cost;
  int32_t m;
};

// dp[b] = least cost of heads 0..h using at most b units (every entry of the start row is 0, so
// "exactly" and "at most" coincide); pick[h][b] remembers head h's candidate for backtracking.
template <typename Pick>
std::vector<int32_t> run_dp(const Prepared& q, const std::vector<std::vector<Item>>& items,
                            const std::vector<int64_t>& units, int64_t B) {
  const int64_t H = q.heads;
  const Pick none = std::numeric_limits<Pick>::max();
  std::vector<double> prev(B + 1, 0.0), cur(B + 1);
  std::vector<Pick> pick(static_cast<size_t>(H) * (B + 1), none);
  for (int64_t h = 0; h < H; ++h) {
    std::fill(cur.begin(), cur.end(), kInf);
    Pick* row = pick.data() + h * (B + 1);
    for (const Item& it : items[h]) {  // ascending units: on equal cost the fewer units win
      const double c = it.cost;
      const Pick m = static_cast<Pick>(it.m);
      const double* src = prev.data() - it.units;
      for (int64_t b = it.units; b <= B; ++b) {
        const double v = src[b] + c;
        if (v < cur[b]) {
          cur[b] = v;
          row[b] = m;
        }
      }
    }
    prev.swap(cur);
  }
  if (!(prev[B] < kInf)) return {};
  std::vector<int32_t> choice(H);
  int64_t b = B;
  for (int64_t h = H - 1; h >= 0; --h) {
    const Pick m = pick[h * (B + 1) + b];
    XATTN_CHECK(m != none, ErrorKind::kInternal, "threshold DP backtrack lost its way at ",
                head_name(q.p, h));
    choice[h] = m;
    b -= units[h * q.cands + m];
  }
  return choice;
}

// Exact DP over the discretised budget. Units are counted relative to a feasible reference
// assignment R (the greedy solution): candidate m of head h uses ceil((s[h][m] - s[h][R_h]) / u)
// units (negative: a credit; ceil rounds credits down and costs up, so the DP is conservative), and
// the total may not exceed floor((eps - Σ_h s[h][R_h]) / u). Any assignment within the unit budget
// meets the true budget. Heads left at R lose nothing to rounding, so R itself always fits (the DP
// never loses to greedy), an assignment differing from R on k heads fits whenever its true error
// is at most eps - k·u, and shares that are multiples of u are exact. Each head's units are then
// shifted by its largest credit so they start at 0. With eps = 0 only zero-error candidates count.
// Returns an empty vector when nothing fits.
std::vector<int32_t> solve_dp(const Prepared& q, int64_t budget_units,
                              const std::vector<int32_t>& reference) {
  const int64_t H = q.heads;
  const int64_t M = q.cands;
  const double eps = q.p.epsilon;
  std::vector<int64_t> units(H * M, kNoUnits);
  int64_t budget = 0;
  if (eps == 0.0) {
    for (int64_t i = 0; i < H * M; ++i) {
      if (q.allowed[i] && q.share[i] == 0.0) units[i] = 0;
    }
  } else {
    const double unit = eps / static_cast<double>(budget_units);
    const double slack = std::floor((eps - q.total_share(reference)) / unit);
    if (!(slack >= 0.0)) return {};
    std::vector<double> raw(H * M, kInf), credit(H, 0.0);
    double total = slack;
    for (int64_t h = 0; h < H; ++h) {
      const double ref = q.s(h, reference[h]);
      for (int64_t m = 0; m < M; ++m) {
        if (!q.ok(h, m)) continue;
        raw[h * M + m] = std::ceil((q.s(h, m) - ref) / unit);
        credit[h] = std::max(credit[h], -raw[h * M + m]);
      }
      total += credit[h];  // at most s[h][R_h] / u + 1 per head: total <= 2 · units + H
    }
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t m = 0; m < M; ++m) {
        const double u = raw[h * M + m] + credit[h];
        if (u <= total) units[h * M + m] = static_cast<int64_t>(u);
      }
    }
    budget = static_cast<int64_t>(total);
  }
  // Per head, the candidates worth considering: sorted by units, each strictly cheaper than every
  // candidate using no more units (ties: fewer units, then larger index, i.e. higher τ).
  std::vector<std::vector<Item>> items(H);
  int64_t reach = 0;  // the largest budget any assignment can use; the DP never needs more
  for (int64_t h = 0; h < H; ++h) {
    std::vector<Item> all;
    for (int64_t m = 0; m < M; ++m) {
      if (units[h * M + m] != kNoUnits) all.push_back({units[h * M + m], q.c(h, m), static_cast<int32_t>(m)});
    }
    if (all.empty()) return {};
    std::sort(all.begin(), all.end(), [](const Item& a, const Item& b) {
      if (a.units != b.units) return a.units < b.units;
      if (a.cost != b.cost) return a.cost < b.cost;
      return a.m > b.m;
    });
    double cheapest = kInf;
    for (const Item& it : all) {
      if (it.cost < cheapest) {
        items[h].push_back(it);
        cheapest = it.cost;
      }
    }
    reach += items[h].back().units;
  }
  const int64_t B = std::min(budget, reach);
  // The choice table dominates memory: one byte per entry when the ladder allows it.
  return M < kNoSmallChoice ? run_dp<uint8_t>(q, items, units, B) : run_dp<uint16_t>(q, items, units, B);
}

// Lagrangian dual: L(lambda) = Σ_h min_m (c + lambda s) - lambda eps, concave in lambda; its
// right slope is (Σ s at the minimisers, least s on ties) - eps. Bisection on the slope's sign.
void lagrangian_bound(const Prepared& q, double* bound, double* multiplier) {
  auto eval = [&](double lambda, double* slope) {
    double total = 0.0, used = 0.0;
    for (int64_t h = 0; h < q.heads; ++h) {
      double best = kInf, best_s = kInf;
      for (int64_t m = 0; m < q.cands; ++m) {
        if (!q.ok(h, m)) continue;
        const double v = q.c(h, m) + lambda * q.s(h, m);
        if (v < best || (v == best && q.s(h, m) < best_s)) {
          best = v;
          best_s = q.s(h, m);
        }
      }
      total += best;
      used += best_s;
    }
    *slope = used - q.p.epsilon;
    return total - lambda * q.p.epsilon;
  };
  double slope = 0.0;
  const double at_zero = eval(0.0, &slope);
  if (slope <= 0.0) {
    *bound = at_zero;
    *multiplier = 0.0;
    return;
  }
  double lo = 0.0, hi = 1.0;
  for (int i = 0; i < 1000 && (eval(hi, &slope), slope > 0.0); ++i) {  // 2^1000: still finite
    lo = hi;
    hi *= 2.0;
  }
  for (int i = 0; i < 200 && hi - lo > 1e-15 * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    eval(mid, &slope);
    (slope > 0.0 ? lo : hi) = mid;
  }
  double s_lo = 0.0, s_hi = 0.0;
  const double l_lo = eval(lo, &s_lo), l_hi = eval(hi, &s_hi);
  *bound = std::max({at_zero, l_lo, l_hi});
  *multiplier = *bound == l_hi ? hi : *bound == l_lo ? lo : 0.0;
}

}  // namespace

std::vector<double> default_tau_ladder() {
  std::vector<double> taus = {0.95, 0.99, 0.995, 0.998, 0.999, 0.9995, 1.0};
  double tau = 0.9;
  for (int m = 0; m <= 20; ++m) {
    taus.push_back(tau);
    tau *= 0.9;
  }
  std::sort(taus.begin(), taus.end());
  return taus;
}

void validate(const SearchProblem& p) {
  const size_t M = p.taus.size();
  XATTN_CHECK_ARG(M > 0, "threshold search: the candidate ladder is empty; give at least one τ");
  XATTN_CHECK_ARG(M < kNoChoice, "threshold search: ", M, " candidates is too many (at most ",
                  kNoChoice - 1, ")");
  for (size_t m = 0; m < M; ++m) {
    XATTN_CHECK_ARG(std::isfinite(p.taus[m]) && p.taus[m] > 0.0 && p.taus[m] <= 1.0,
                    "threshold search: candidate τ[", m, "] = ", p.taus[m], " is not in (0, 1]");
    XATTN_CHECK_ARG(m == 0 || p.taus[m] > p.taus[m - 1], "threshold search: the ladder must be ",
                    "strictly ascending, but τ[", m, "] = ", p.taus[m], " follows ", p.taus[m - 1]);
  }
  XATTN_CHECK_ARG(p.num_heads > 0, "threshold search: num_heads is ", p.num_heads,
                  "; there must be at least one head");
  const size_t HM = static_cast<size_t>(p.num_heads) * M;
  XATTN_CHECK_ARG(p.density.size() == HM, "threshold search: density has ", p.density.size(),
                  " entries, expected heads x candidates = ", p.num_heads, " x ", M, " = ", HM);
  XATTN_CHECK_ARG(p.error.size() == HM, "threshold search: error has ", p.error.size(),
                  " entries, expected heads x candidates = ", p.num_heads, " x ", M, " = ", HM);
  for (size_t i = 0; i < HM; ++i) {
    const int64_t h = static_cast<int64_t>(i / M);
    XATTN_CHECK_ARG(std::isfinite(p.density[i]) && p.density[i] >= 0.0 &&
                        p.density[i] <= 1.0 + kDensityNoise,
                    "threshold search: density of ", head_name(p, h), " at τ = ", p.taus[i % M],
                    " is ", p.density[i], "; it must be a number in [0, 1]");
    XATTN_CHECK_ARG(std::isfinite(p.error[i]) && p.error[i] >= 0.0, "threshold search: error of ",
                    head_name(p, h), " at τ = ", p.taus[i % M], " is ", p.error[i],
                    "; it must be a finite number >= 0");
  }
  auto check_weights = [&](const std::vector<double>& w, const char* what) {
    if (w.empty()) return 0.0;
    XATTN_CHECK_ARG(w.size() == static_cast<size_t>(p.num_heads), "threshold search: ", what,
                    " has ", w.size(), " entries, expected one per head (", p.num_heads,
                    ") or none");
    double sum = 0.0;
    for (size_t h = 0; h < w.size(); ++h) {
      XATTN_CHECK_ARG(std::isfinite(w[h]) && w[h] >= 0.0, "threshold search: ", what, " of ",
                      head_name(p, static_cast<int64_t>(h)), " is ", w[h],
                      "; it must be a finite number >= 0");
      sum += w[h];
    }
    return sum;
  };
  check_weights(p.cost_weight, "cost_weight");
  const double v_sum = check_weights(p.error_weight, "error_weight");
  XATTN_CHECK_ARG(p.error_weight.empty() || v_sum > 0.0,
                  "threshold search: every error_weight is 0; at least one head must count");
  XATTN_CHECK_ARG(std::isfinite(p.epsilon) && p.epsilon >= 0.0, "threshold search: epsilon is ",
                  p.epsilon, "; the error budget must be a finite number >= 0");
  XATTN_CHECK_ARG(!p.per_head_cap || (std::isfinite(*p.per_head_cap) && *p.per_head_cap >= 0.0),
                  "threshold search: the per-head error cap is ", p.per_head_cap.value_or(0.0),
                  "; it must be a finite number >= 0");
  XATTN_CHECK_ARG(p.heads_per_layer >= 0, "threshold search: heads_per_layer is ",
                  p.heads_per_layer, "; it must be >= 0");
}

double min_achievable_error(const SearchProblem& problem) {
  validate(problem);
  const Prepared q(problem, 1e-12);
  return q.total_share(least_error_choice(q));
}

Assignment evaluate_assignment(const SearchProblem& problem, const std::vector<int32_t>& choice) {
  validate(problem);
  const int64_t M = static_cast<int64_t>(problem.taus.size());
  XATTN_CHECK_ARG(choice.size() == static_cast<size_t>(problem.num_heads), "assignment has ",
                  choice.size(), " choices, expected one per head (", problem.num_heads, ")");
  const Prepared q(problem, 1e-12);
  Assignment a;
  a.choice = choice;
  a.tau.resize(choice.size());
  for (int64_t h = 0; h < q.heads; ++h) {
    const int32_t m = choice[h];
    XATTN_CHECK_ARG(m >= 0 && m < M, "assignment: candidate index ", m, " of ",
                    head_name(problem, h), " is outside [0, ", M, ")");
    a.tau[h] = problem.taus[m];
    a.cost += q.c(h, m);
    a.max_head_error = std::max(a.max_head_error, problem.error[h * M + m]);
  }
  a.error = q.total_share(choice);
  a.mean_density = q.weight_sum > 0.0 ? a.cost / q.weight_sum : 0.0;
  return a;
}

bool is_feasible(const SearchProblem& problem, const Assignment& a, double tol) {
  if (a.error > problem.epsilon * (1.0 + tol)) return false;
  return !problem.per_head_cap || a.max_head_error <= *problem.per_head_cap * (1.0 + tol);
}

SearchResult search_thresholds(const SearchProblem& problem, const SearchOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  validate(problem);
  XATTN_CHECK_ARG(options.budget_units >= 0, "threshold search: budget_units is ",
                  options.budget_units, "; it must be >= 1, or 0 for the automatic choice");
  const int64_t budget_units = options.budget_units > 0
                                   ? options.budget_units
                                   : std::max<int64_t>(10000, 16 * problem.num_heads);
  XATTN_CHECK_ARG(std::isfinite(options.feasibility_tolerance) &&
                      options.feasibility_tolerance >= 0.0,
                  "threshold search: feasibility_tolerance must be a finite number >= 0");
  const double table_bytes = (problem.taus.size() < kNoSmallChoice ? 1.0 : 2.0) *
                             static_cast<double>(problem.num_heads) *
                             (2.0 * static_cast<double>(budget_units) + problem.num_heads + 2);
  XATTN_CHECK_ARG(table_bytes <= kMaxTableBytes, "threshold search: ", problem.num_heads,
                  " heads x ", budget_units, " budget units needs ", table_bytes / 1e9,
                  " GB of DP table; lower budget_units");
  const Prepared q(problem, options.feasibility_tolerance);
  const double tol = options.feasibility_tolerance;

  const std::vector<int32_t> safest = least_error_choice(q);  // throws when the cap excludes a head
  const double least = q.total_share(safest);
  XATTN_CHECK_INPUT(least <= problem.epsilon * (1.0 + tol),
                    "no per-head thresholds meet the error budget: epsilon is ", problem.epsilon,
                    " but the smallest achievable weighted mean error is ", least,
                    "; raise epsilon (or the per-head cap), or add the dense candidate 1.0 "
                    "(error 0) to the ladder");

  SearchResult r;
  r.budget_units = budget_units;
  r.budget_unit = problem.epsilon / static_cast<double>(budget_units);

  std::vector<int32_t> greedy = safest;
  improve_greedily(q, greedy);
  r.greedy = evaluate_assignment(problem, greedy);

  std::vector<int32_t> choice = solve_dp(q, budget_units, greedy);
  // Nothing fits only when the greedy solution exceeds the budget by floating-point noise (within
  // the tolerance); then greedy is the answer.
  if (choice.empty()) choice = greedy;
  XATTN_CHECK(is_feasible(problem, evaluate_assignment(problem, choice), tol), ErrorKind::kInternal,
              "threshold DP returned an assignment over the error budget (a bug; please report "
              "it with the statistics file)");
  r.dp_cost_before_polish = evaluate_assignment(problem, choice).cost;
  if (options.polish) improve_greedily(q, choice);
  r.optimal = evaluate_assignment(problem, choice);

  for (int64_t m = q.cands - 1; m >= 0; --m) {  // descending: ties go to the higher τ
    bool capped = false;
    for (int64_t h = 0; h < q.heads && !capped; ++h) capped = !q.ok(h, m);
    if (capped) continue;
    Assignment a = evaluate_assignment(problem, std::vector<int32_t>(q.heads, static_cast<int32_t>(m)));
    if (!is_feasible(problem, a, tol)) continue;
    if (!r.uniform || a.cost < r.uniform->assignment.cost) {
      r.uniform = UniformResult{static_cast<int32_t>(m), problem.taus[m], std::move(a)};
    }
  }

  lagrangian_bound(q, &r.lower_bound, &r.lagrange_multiplier);
  r.relative_gap =
      r.optimal.cost > 0.0 ? (r.optimal.cost - r.lower_bound) / r.optimal.cost : 0.0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace xattn::calibrate
