// The quality frontier: held-out end-to-end quality (KL of the next-token distributions against
// dense attention) as a function of attention density, for per-head profiles at several budgets
// and for one uniform τ over the ladder. Comparing the two curves at equal density (or equal KL)
// is what says whether per-head calibration pays. Torch-free.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace xattn::calibrate {

struct FrontierPoint {
  double parameter = 0;          // uniform: τ; per-head: the search budget
  double predicted_density = 0;  // on the fitting samples
  double density = 0;            // measured on the held-out samples
  double kl = 0;                 // held-out mean KL(dense || sparse), nats per position
  double nll_increase = 0;       // held-out mean NLL change, nats per token
};

struct Frontier {
  std::vector<FrontierPoint> uniform;   // one per ladder τ
  std::vector<FrontierPoint> per_head;  // one per budget
  int64_t holdout_tokens = 0;
  bool empty() const { return uniform.empty() && per_head.empty(); }
};

// KL of a curve at `density`, interpolated between the two measured points around it: linear in
// log KL where both are positive, linear otherwise. A curve is a set of points in any order; its
// hull in density is [min, max] measured density, and outside it there is no answer.
std::optional<double> kl_at_density(const std::vector<FrontierPoint>& curve, double density);

// The smallest density at which the curve (joined by the same interpolation, taken in increasing
// density) reaches `kl` or less. None when no point of the curve is that good.
std::optional<double> density_at_kl(const std::vector<FrontierPoint>& curve, double kl);

// One comparison of a per-head point with the uniform curve.
struct FrontierComparison {
  std::optional<double> uniform_kl_at_equal_density;  // interpolated
  std::optional<double> uniform_density_at_equal_kl;  // interpolated
};
FrontierComparison compare_with_uniform(const FrontierPoint& point,
                                        const std::vector<FrontierPoint>& uniform);

// Lines of text: both curves side by side, and the comparison at equal density for each per-head
// point.
std::string format_frontier(const Frontier& frontier);

}  // namespace xattn::calibrate
