// The quality frontier: held-out end-to-end quality (KL of the next-token distributions against
// dense attention) as a function of attention density, for per-head profiles at several budgets
// and for one uniform τ over the ladder. Comparing the two curves at equal density (or equal KL)
// is what says whether per-head calibration pays. Torch-free.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "xattn/io/profile.h"

namespace xattn::calibrate {

// The frontier's points and curves (io::FrontierPoint, io::Frontier) are part of the profile
// format; this header is what calibration computes from them.

// KL of a curve at `density`, interpolated between the two measured points around it: linear in
// log KL where both are positive, linear otherwise. A curve is a set of points in any order; its
// hull in density is [min, max] measured density, and outside it there is no answer.
std::optional<double> kl_at_density(const std::vector<io::FrontierPoint>& curve, double density);

// The smallest density at which the curve (joined by the same interpolation, taken in increasing
// density) reaches `kl` or less. None when no point of the curve is that good.
std::optional<double> density_at_kl(const std::vector<io::FrontierPoint>& curve, double kl);

// One comparison of a per-head point with the uniform curve.
struct FrontierComparison {
  std::optional<double> uniform_kl_at_equal_density;  // interpolated
  std::optional<double> uniform_density_at_equal_kl;  // interpolated
};
FrontierComparison compare_with_uniform(const io::FrontierPoint& point,
                                        const std::vector<io::FrontierPoint>& uniform);

// Lines of text: both curves side by side, and the comparison at equal density for each per-head
// point.
std::string format_frontier(const io::Frontier& frontier);

}  // namespace xattn::calibrate
