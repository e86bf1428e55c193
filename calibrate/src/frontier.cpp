// Frontier interpolation and text; see frontier.h.
#include "xattn/calibrate/frontier.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace xattn::calibrate {

using io::Frontier;
using io::FrontierPoint;
namespace {

std::vector<FrontierPoint> by_density(std::vector<FrontierPoint> curve) {
  std::stable_sort(curve.begin(), curve.end(), [](const FrontierPoint& a, const FrontierPoint& b) {
    return a.density < b.density;
  });
  return curve;
}

// Value at fraction f between a and b: geometric where both are positive, else linear.
double blend(double a, double b, double f) {
  if (a > 0 && b > 0) return std::exp(std::log(a) + f * (std::log(b) - std::log(a)));
  return a + f * (b - a);
}

// Fraction f in [0, 1] at which blend(a, b, f) == target (a and b on either side of it).
double inverse_blend(double a, double b, double target) {
  if (a == b) return 0.0;
  if (a > 0 && b > 0 && target > 0)
    return (std::log(target) - std::log(a)) / (std::log(b) - std::log(a));
  return (target - a) / (b - a);
}

}  // namespace

std::optional<double> kl_at_density(const std::vector<FrontierPoint>& curve, double density) {
  if (curve.empty() || !std::isfinite(density)) return std::nullopt;
  const std::vector<FrontierPoint> c = by_density(curve);
  if (density < c.front().density || density > c.back().density) return std::nullopt;
  for (size_t i = 0; i + 1 < c.size(); ++i) {
    const FrontierPoint &a = c[i], &b = c[i + 1];
    if (density > b.density) continue;
    if (b.density == a.density) return std::min(a.kl, b.kl);
    return blend(a.kl, b.kl, (density - a.density) / (b.density - a.density));
  }
  return c.back().kl;  // a single point, hit exactly
}

std::optional<double> density_at_kl(const std::vector<FrontierPoint>& curve, double kl) {
  if (curve.empty() || !std::isfinite(kl)) return std::nullopt;
  const std::vector<FrontierPoint> c = by_density(curve);
  if (c.front().kl <= kl) return c.front().density;
  for (size_t i = 0; i + 1 < c.size(); ++i) {
    const FrontierPoint &a = c[i], &b = c[i + 1];
    if (b.kl > kl) continue;  // a.kl > kl >= b.kl: the curve crosses here first
    const double f = std::clamp(inverse_blend(a.kl, b.kl, kl), 0.0, 1.0);
    return a.density + f * (b.density - a.density);
  }
  return std::nullopt;
}

FrontierComparison compare_with_uniform(const FrontierPoint& point,
                                        const std::vector<FrontierPoint>& uniform) {
  return {kl_at_density(uniform, point.density), density_at_kl(uniform, point.kl)};
}

std::string format_frontier(const Frontier& f) {
  std::ostringstream out;
  char line[256];
  out << "quality frontier on held-out samples (" << f.holdout_tokens
      << " tokens; KL of next-token distributions against dense, nats per position):\n";
  std::snprintf(line, sizeof line, "  %-9s %8s %10s %11s   %-10s %8s %10s %11s\n", "uniform tau",
                "density", "KL", "dNLL", "per-head", "density", "KL", "uniform KL");
  out << line;
  const std::vector<FrontierPoint> u = by_density(f.uniform), p = by_density(f.per_head);
  for (size_t i = 0; i < std::max(u.size(), p.size()); ++i) {
    std::string left(44, ' '), right;
    if (i < u.size()) {
      std::snprintf(line, sizeof line, "  %-9.4g %7.1f%% %10.3g %+11.4f", u[i].parameter,
                    100 * u[i].density, u[i].kl, u[i].nll_increase);
      left = line;
    }
    if (i < p.size()) {
      const auto at = kl_at_density(f.uniform, p[i].density);
      char ratio[64] = "-";
      if (at && p[i].kl > 0) std::snprintf(ratio, sizeof ratio, "%.3g (%.2fx)", *at, *at / p[i].kl);
      std::snprintf(line, sizeof line, "   budget %-8.3g %7.1f%% %10.3g  %s", p[i].parameter,
                    100 * p[i].density, p[i].kl, ratio);
      right = line;
    }
    out << left << right << "\n";
  }
  return out.str();
}

}  // namespace xattn::calibrate
