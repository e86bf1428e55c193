// Head-sparsity reports: measurements of a profile on its statistics, the terminal summary, and
// the self-contained HTML page with inline SVG figures (report.h).
#include "xattn/calibrate/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"

namespace xattn::calibrate {

using io::fnv1a64;
using io::Frontier;
using io::FrontierPoint;
using io::Profile;
using io::profile_mismatches;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kTopHeads = 5;
constexpr int kTopChangedHeads = 10;

// ---------------------------------------------------------------------------------------------
// Number and text formatting

std::string fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "-";
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

std::string signed_fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "-";
  char text[64];
  std::snprintf(text, sizeof text, "%+.*f", decimals, value);
  return text;
}

std::string general(double value, int digits = 4) {
  if (!std::isfinite(value)) return "-";
  char text[64];
  std::snprintf(text, sizeof text, "%.*g", digits, value);
  return text;
}

// Right-aligns `text` in `width` columns (counting UTF-8 code points, so "τ" is one column).
std::string right(const std::string& text, size_t width) {
  size_t columns = 0;
  for (unsigned char c : text) columns += (c & 0xC0) != 0x80;
  return columns >= width ? text : std::string(width - columns, ' ') + text;
}

std::string escape_html(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

double mean_of(const std::vector<double>& values) {
  double sum = 0;
  int64_t count = 0;
  for (double v : values)
    if (std::isfinite(v)) sum += v, ++count;
  return count > 0 ? sum / double(count) : kNaN;
}

// Mean over the heads of layer `l` of a [L*H] array (NaN entries skipped).
double layer_mean(const std::vector<double>& values, int64_t l, int64_t heads) {
  return mean_of(std::vector<double>(values.begin() + l * heads, values.begin() + (l + 1) * heads));
}

std::vector<double> to_double(const std::vector<float>& values) {
  return std::vector<double>(values.begin(), values.end());
}

// ---------------------------------------------------------------------------------------------
// Colours

struct Rgb {
  double r, g, b;
};

std::string hex(const Rgb& c) {
  auto byte = [](double v) { return int(std::lround(std::clamp(v, 0.0, 1.0) * 255)); };
  char text[8];
  std::snprintf(text, sizeof text, "#%02x%02x%02x", byte(c.r), byte(c.g), byte(c.b));
  return text;
}

Rgb interpolate(const std::vector<Rgb>& anchors, double t) {
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * double(anchors.size() - 1);
  const size_t i = std::min(size_t(t), anchors.size() - 2);
  const double f = t - double(i);
  const Rgb& a = anchors[i];
  const Rgb& b = anchors[i + 1];
  return {a.r + f * (b.r - a.r), a.g + f * (b.g - a.g), a.b + f * (b.b - a.b)};
}

// Perceptually ordered sequential map (dark blue-violet -> green -> yellow), t in [0, 1].
Rgb sequential(double t) {
  static const std::vector<Rgb> anchors = {
      {0.267, 0.005, 0.329}, {0.283, 0.141, 0.458}, {0.254, 0.265, 0.530}, {0.207, 0.372, 0.553},
      {0.164, 0.471, 0.558}, {0.128, 0.567, 0.551}, {0.135, 0.659, 0.518}, {0.267, 0.749, 0.441},
      {0.478, 0.821, 0.318}, {0.741, 0.873, 0.150}, {0.993, 0.906, 0.144}};
  return interpolate(anchors, t);
}

// Diverging map for differences: blue (negative) -> light grey (0) -> red (positive), t in [-1, 1].
Rgb diverging(double t) {
  static const std::vector<Rgb> anchors = {{0.129, 0.400, 0.675},
                                           {0.569, 0.749, 0.859},
                                           {0.969, 0.969, 0.969},
                                           {0.957, 0.647, 0.510},
                                           {0.698, 0.094, 0.169}};
  return interpolate(anchors, (t + 1) / 2);
}

bool is_dark(const Rgb& c) { return 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b < 0.45; }

// Distinguishable colours for up to a few dozen series (golden-angle hues, two lightnesses).
std::string series_colour(int64_t index) {
  const double hue = std::fmod(double(index) * 137.508, 360.0);
  char text[48];
  std::snprintf(text, sizeof text, "hsl(%.0f,70%%,%d%%)", hue, index % 2 == 0 ? 40 : 55);
  return text;
}

std::string layer_colour(int64_t layer, int64_t layers) {
  return hex(sequential(layers > 1 ? 0.85 * double(layer) / double(layers - 1) : 0.0));
}

// ---------------------------------------------------------------------------------------------
// SVG

// Round 1-2-5 ticks covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / magnitude;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    ticks.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return ticks;
}

// The smallest 1-2-5 step value >= v (for axis maxima).
double nice_ceiling(double v) {
  if (!(v > 0)) return 1;
  const double magnitude = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * magnitude >= v * (1 - 1e-12)) return m * magnitude;
  return 10 * magnitude;
}

std::string coordinate(double v) { return fixed(v, 1); }

struct Scale {
  double lo, hi, px_lo, px_hi;
  bool log = false;
  double operator()(double v) const {
    double t;
    if (log) {
      v = std::max(v, lo);
      t = (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    } else {
      t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    }
    t = std::clamp(t, 0.0, 1.0);
    return px_lo + t * (px_hi - px_lo);
  }
};

class Svg {
 public:
  Svg(std::string id, double width, double height, const std::string& title)
      : id_(std::move(id)), width_(width), height_(height) {
    body_ << "<title id=\"" << id_ << "-title\">" << escape_html(title) << "</title>";
  }

  void rect(double x, double y, double w, double h, const std::string& fill,
            const std::string& tooltip = "", const std::string& extra = "") {
    body_ << "<rect x=\"" << coordinate(x) << "\" y=\"" << coordinate(y) << "\" width=\""
          << coordinate(std::max(w, 0.0)) << "\" height=\"" << coordinate(std::max(h, 0.0))
          << "\" fill=\"" << fill << "\"" << extra;
    close(tooltip, "rect");
  }
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            const std::string& dash = "", const std::string& tooltip = "") {
    body_ << "<line x1=\"" << coordinate(x1) << "\" y1=\"" << coordinate(y1) << "\" x2=\""
          << coordinate(x2) << "\" y2=\"" << coordinate(y2) << "\" stroke=\"" << stroke
          << "\" stroke-width=\"" << width << "\"";
    if (!dash.empty()) body_ << " stroke-dasharray=\"" << dash << "\"";
    close(tooltip, "line");
  }
  void circle(double cx, double cy, double r, const std::string& fill, const std::string& stroke,
              const std::string& tooltip = "") {
    body_ << "<circle cx=\"" << coordinate(cx) << "\" cy=\"" << coordinate(cy) << "\" r=\"" << r
          << "\" fill=\"" << fill << "\" stroke=\"" << stroke << "\"";
    close(tooltip, "circle");
  }
  void polyline(const std::vector<std::pair<double, double>>& points, const std::string& stroke,
                double width, const std::string& tooltip = "") {
    body_ << "<polyline fill=\"none\" stroke=\"" << stroke << "\" stroke-width=\"" << width
          << "\" stroke-linejoin=\"round\" points=\"";
    for (size_t i = 0; i < points.size(); ++i)
      body_ << (i ? " " : "") << coordinate(points[i].first) << "," << coordinate(points[i].second);
    body_ << "\"";
    close(tooltip, "polyline");
  }
  void text(double x, double y, const std::string& content, const std::string& anchor = "middle",
            double size = 11, const std::string& extra = "") {
    body_ << "<text x=\"" << coordinate(x) << "\" y=\"" << coordinate(y) << "\" font-size=\""
          << size << "\" text-anchor=\"" << anchor << "\"" << extra << ">" << escape_html(content)
          << "</text>";
  }
  // Text rotated by -90° around its anchor (for vertical axis titles).
  void vertical_text(double x, double y, const std::string& content, double size = 12) {
    text(x, y, content, "middle", size,
         " transform=\"rotate(-90 " + coordinate(x) + " " + coordinate(y) + ")\"");
  }
  void raw(const std::string& markup) { body_ << markup; }

  std::string str() const {
    std::ostringstream out;
    out << "<svg id=\"" << id_ << "\" role=\"img\" aria-labelledby=\"" << id_ << "-title\" width=\""
        << coordinate(width_) << "\" height=\"" << coordinate(height_) << "\" viewBox=\"0 0 "
        << coordinate(width_) << " " << coordinate(height_) << "\" font-family=\"sans-serif\">"
        << body_.str() << "</svg>";
    return out.str();
  }

 private:
  void close(const std::string& tooltip, const char* tag) {
    if (tooltip.empty()) {
      body_ << "/>";
    } else {
      body_ << "><title>" << escape_html(tooltip) << "</title></" << tag << ">";
    }
  }

  std::string id_;
  double width_, height_;
  std::ostringstream body_;
};

// 10^k as "0.001" .. "1000" near 1, else "1e-5".
std::string decade_label(double v) {
  const int exponent = int(std::lround(std::log10(v)));
  if (exponent >= -3 && exponent <= 3) return general(v, 4);
  return "1e" + std::to_string(exponent);
}

// Frame, ticks, tick labels and axis titles of a plot area.
void draw_axes(Svg& svg, const Scale& x, const Scale& y, const std::vector<double>& x_ticks,
               const std::vector<double>& y_ticks, const std::string& x_title,
               const std::string& y_title, bool y_log = false) {
  const double left = x.px_lo, right_edge = x.px_hi, bottom = y.px_lo, top = y.px_hi;
  for (double t : y_ticks) {
    const double py = y(t);
    svg.line(left, py, right_edge, py, "#e4e4e4");
    svg.text(left - 5, py + 3.5, y_log ? decade_label(t) : general(t, 4), "end", 10);
  }
  for (double t : x_ticks) {
    const double px = x(t);
    svg.line(px, bottom, px, bottom + 4, "#555");
    svg.text(px, bottom + 15, general(t, 4), "middle", 10);
  }
  svg.line(left, bottom, right_edge, bottom, "#555");
  svg.line(left, bottom, left, top, "#555");
  svg.text((left + right_edge) / 2, bottom + 30, x_title, "middle", 12);
  svg.vertical_text(left - 42, (top + bottom) / 2, y_title, 12);
}

// A layers x heads heatmap with a colour legend; `values` is [L*H] (NaN drawn grey).
struct HeatmapSpec {
  std::string id, title, legend_title;
  int64_t layers = 0, heads = 0;
  std::vector<double> values;
  double lo = 0, hi = 1;
  bool diverging = false;  // lo = -hi, diverging colours
  int cell_decimals = 2;
  std::vector<std::string> tooltips;  // [L*H]
};

std::string heatmap_svg(const HeatmapSpec& spec) {
  const int64_t L = spec.layers, H = spec.heads;
  const double cell = std::clamp(std::floor(560.0 / double(std::max(L, H))), 12.0, 48.0);
  const double left = 62, top = 14, plot_w = double(H) * cell, plot_h = double(L) * cell;
  const double legend_x = left + plot_w + 26, legend_h = std::max(plot_h, 140.0);
  const double width = legend_x + 90, height = top + std::max(plot_h, legend_h) + 46;
  Svg svg(spec.id, width, height, spec.title);
  auto colour_of = [&](double v) {
    if (spec.diverging) return diverging(spec.hi > 0 ? v / spec.hi : 0.0);
    return sequential(spec.hi > spec.lo ? (v - spec.lo) / (spec.hi - spec.lo) : 1.0);
  };
  const bool labels_in_cells = cell >= 34;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h) {
      const double v = spec.values[l * H + h];
      const double x = left + double(h) * cell, y = top + double(l) * cell;
      const std::string tip = spec.tooltips.empty() ? "" : spec.tooltips[l * H + h];
      if (!std::isfinite(v)) {
        svg.rect(x, y, cell, cell, "#d0d0d0", tip + " (not measured)");
        continue;
      }
      const Rgb c = colour_of(v);
      svg.rect(x, y, cell, cell, hex(c), tip, " stroke=\"#fff\" stroke-width=\"0.5\"");
      // Differences of exactly zero stay unlabelled so the changes stand out.
      if (labels_in_cells &&
          !(spec.diverging && std::abs(v) < 0.5 * std::pow(10.0, -spec.cell_decimals))) {
        svg.text(x + cell / 2, y + cell / 2 + 3.5, fixed(v, spec.cell_decimals), "middle",
                 std::min(11.0, cell / 3.6),
                 std::string(" pointer-events=\"none\" fill=\"") + (is_dark(c) ? "#fff" : "#111") +
                     "\"");
      }
    }
  // Axis labels: every k-th head / layer so that labels do not collide.
  const int64_t step = std::max<int64_t>(1, int64_t(std::ceil(16.0 / cell)));
  for (int64_t h = 0; h < H; h += step)
    svg.text(left + (double(h) + 0.5) * cell, top + plot_h + 13, std::to_string(h), "middle", 10);
  for (int64_t l = 0; l < L; l += step)
    svg.text(left - 6, top + (double(l) + 0.5) * cell + 3.5, std::to_string(l), "end", 10);
  svg.text(left + plot_w / 2, top + plot_h + 32, "query head", "middle", 12);
  svg.vertical_text(left - 36, top + plot_h / 2, "layer", 12);
  // Legend: a vertical gradient bar, low at the bottom.
  const std::string gradient = spec.id + "-gradient";
  std::ostringstream defs;
  defs << "<defs><linearGradient id=\"" << gradient << "\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int i = 0; i <= 10; ++i) {
    const double v = spec.lo + (spec.hi - spec.lo) * i / 10.0;
    defs << "<stop offset=\"" << i * 10 << "%\" stop-color=\"" << hex(colour_of(v)) << "\"/>";
  }
  defs << "</linearGradient></defs>";
  svg.raw(defs.str());
  const double bar_top = top + 16, bar_h = legend_h - 16;
  svg.text(legend_x, top + 6, spec.legend_title, "start", 11);
  svg.rect(legend_x, bar_top, 14, bar_h, "url(#" + gradient + ")", "",
           " stroke=\"#888\" stroke-width=\"0.5\"");
  const Scale legend{spec.lo, spec.hi, bar_top + bar_h, bar_top};
  for (double t : nice_ticks(spec.lo, spec.hi, 5)) {
    svg.line(legend_x + 14, legend(t), legend_x + 18, legend(t), "#555");
    svg.text(legend_x + 21, legend(t) + 3.5, spec.diverging ? signed_fixed(t, 2) : general(t, 3),
             "start", 10);
  }
  return svg.str();
}

// Bars per layer, one bar per series in each group, with optional horizontal reference lines.
struct BarSeries {
  std::string name, colour;
  std::vector<double> values;  // [L]
};
struct ReferenceLine {
  std::string name, colour;
  double value;
};

std::string layer_bars_svg(const std::string& id, const std::string& title,
                           const std::string& y_title, const std::vector<BarSeries>& series,
                           const std::vector<ReferenceLine>& references) {
  const int64_t L = int64_t(series.front().values.size());
  const double group = std::clamp(std::floor(640.0 / double(std::max<int64_t>(L, 1))), 14.0, 72.0);
  const double left = 62, top = 34, plot_h = 220, plot_w = group * double(L);
  const double width = std::max(left + plot_w + 20, 420.0), height = top + plot_h + 44;
  Svg svg(id, width, height, title);
  double y_max = 0;
  for (const auto& s : series)
    for (double v : s.values)
      if (std::isfinite(v)) y_max = std::max(y_max, v);
  for (const auto& r : references)
    if (std::isfinite(r.value)) y_max = std::max(y_max, r.value);
  y_max = std::min(1.0, nice_ceiling(std::max(y_max * 1.05, 0.05)));
  const Scale x{0, double(L), left, left + plot_w};
  const Scale y{0, y_max, top + plot_h, top};
  draw_axes(svg, x, y, {}, nice_ticks(0, y_max, 5), "layer", y_title);
  const double inner = group * 0.8 / double(series.size());
  const int64_t step = std::max<int64_t>(1, int64_t(std::ceil(18.0 / group)));
  for (int64_t l = 0; l < L; ++l) {
    if (l % step == 0)
      svg.text(x(double(l) + 0.5), top + plot_h + 14, std::to_string(l), "middle", 10);
    for (size_t s = 0; s < series.size(); ++s) {
      const double v = series[s].values[l];
      if (!std::isfinite(v)) continue;
      const double bx = x(double(l)) + group * 0.1 + inner * double(s);
      svg.rect(bx, y(v), inner * 0.92, y(0) - y(v), series[s].colour,
               "layer " + std::to_string(l) + ", " + series[s].name + ": " + fixed(v, 4));
    }
  }
  for (const auto& r : references) {
    if (!std::isfinite(r.value)) continue;
    svg.line(left, y(r.value), left + plot_w, y(r.value), r.colour, 1.5, "6 4",
             r.name + ": " + fixed(r.value, 4));
  }
  // Legend row above the plot.
  double lx = left;
  for (const auto& s : series) {
    svg.rect(lx, 10, 12, 12, s.colour);
    svg.text(lx + 16, 20, s.name, "start", 11);
    lx += 26 + 6.2 * double(s.name.size());
  }
  for (const auto& r : references) {
    svg.line(lx, 16, lx + 18, 16, r.colour, 1.5, "6 4");
    svg.text(lx + 22, 20, r.name, "start", 11);
    lx += 32 + 6.2 * double(r.name.size());
  }
  return svg.str();
}

// A key of layer colours at (x, y): every layer up to 12, else 12 spread over the range.
void layer_key(Svg& svg, double x, double y, int64_t layers) {
  const int64_t shown = std::min<int64_t>(layers, 12);
  for (int64_t k = 0; k < shown; ++k) {
    const int64_t l = shown == layers ? k : k * (layers - 1) / (shown - 1);
    const double row = y + 15 * double(k);
    svg.circle(x + 5, row - 4, 4, layer_colour(l, layers), "#fff");
    svg.text(x + 14, row, "layer " + std::to_string(l), "start", 11);
  }
}

struct Point {
  double x, y;
  std::string colour, tooltip;
};

// Scatter with linear axes from 0, optionally the diagonal y = x.
std::string scatter_svg(const std::string& id, const std::string& title, const std::string& x_title,
                        const std::string& y_title, const std::vector<Point>& points, bool diagonal,
                        double axis_max, int64_t layers) {
  const double left = 70, top = 14, plot = 340;
  Svg svg(id, left + plot + (layers > 0 ? 100 : 24), top + plot + 48, title);
  const Scale x{0, axis_max, left, left + plot};
  const Scale y{0, axis_max, top + plot, top};
  const std::vector<double> ticks = nice_ticks(0, axis_max, 5);
  draw_axes(svg, x, y, ticks, ticks, x_title, y_title);
  if (diagonal) svg.line(x(0), y(0), x(axis_max), y(axis_max), "#999", 1, "4 3", "y = x");
  for (const auto& p : points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    svg.circle(x(p.x), y(p.y), 4, p.colour, "#fff", p.tooltip);
  }
  if (layers > 0) layer_key(svg, left + plot + 20, top + 10, layers);
  return svg.str();
}

// Held-out KL against density: uniform τ over the ladder and per-head profiles at several budgets,
// the profile's own point marked. Log KL axis.
std::string frontier_svg(const Profile& p) {
  const Frontier& f = p.frontier;
  const double left = 70, top = 14, plot_w = 420, plot_h = 300;
  Svg svg("fig-frontier", left + plot_w + 150, top + plot_h + 48,
          "Held-out KL against density: per-head profiles and uniform thresholds");
  double kl_lo = 1e300, kl_hi = 0, d_hi = 0;
  auto extend = [&](double d, double kl) {
    if (kl > 0) kl_lo = std::min(kl_lo, kl), kl_hi = std::max(kl_hi, kl);
    d_hi = std::max(d_hi, d);
  };
  for (const auto* curve : {&f.uniform, &f.per_head})
    for (const auto& point : *curve) extend(point.density, point.kl);
  const auto chosen_kl = p.validation.find("kl_mean"), chosen_d = p.validation.find("e2e_density");
  const bool has_chosen = chosen_kl != p.validation.end() && chosen_d != p.validation.end();
  if (has_chosen) extend(chosen_d->second, chosen_kl->second);
  if (kl_hi <= 0) kl_lo = 1e-4, kl_hi = 1;
  const double lo = std::pow(10.0, std::floor(std::log10(kl_lo)));
  const double hi = std::pow(10.0, std::ceil(std::log10(kl_hi * 1.0001)));
  const Scale x{0, std::min(1.0, std::max(0.1, d_hi * 1.05)), left, left + plot_w};
  const Scale y{lo, hi, top + plot_h, top, true};
  std::vector<double> decades;
  for (double v = lo; v <= hi * 1.0001; v *= 10) decades.push_back(v);
  draw_axes(svg, x, y, nice_ticks(0, x.hi, 5), decades, "density (held out)",
            "KL to dense (nats/position)", true);
  const struct { const std::vector<FrontierPoint>* curve; const char* colour; const char* name; }
      series[] = {{&f.uniform, "#c0392b", "uniform τ"}, {&f.per_head, "#2c6fb6", "per-head"}};
  double key_y = top + 10;
  for (const auto& s : series) {
    std::vector<FrontierPoint> sorted = *s.curve;
    std::sort(sorted.begin(), sorted.end(),
              [](const FrontierPoint& a, const FrontierPoint& b) { return a.density < b.density; });
    std::vector<std::pair<double, double>> points;
    for (const auto& q : sorted) points.emplace_back(x(q.density), y(q.kl));
    svg.polyline(points, s.colour, 2, s.name);
    for (const auto& q : sorted)
      svg.circle(x(q.density), y(q.kl), 3.5, s.colour, "#fff",
                 std::string(s.name) + (s.curve == &f.uniform ? " τ " : " budget ") +
                     general(q.parameter, 4) + ": density " + fixed(100 * q.density, 1) +
                     " %, KL " + general(q.kl, 3) + ", ΔNLL " + signed_fixed(q.nll_increase, 4));
    svg.line(left + plot_w + 16, key_y, left + plot_w + 36, key_y, s.colour, 2);
    svg.text(left + plot_w + 42, key_y + 4, s.name, "start", 11);
    key_y += 18;
  }
  if (has_chosen) {
    svg.circle(x(chosen_d->second), y(chosen_kl->second), 7, "none", "#111",
               "this profile: density " + fixed(100 * chosen_d->second, 1) + " %, KL " +
                   general(chosen_kl->second, 3));
    svg.circle(left + plot_w + 26, key_y, 6, "none", "#111");
    svg.text(left + plot_w + 42, key_y + 4, "this profile", "start", 11);
  }
  return svg.str();
}

std::string figure(const std::string& svg, const std::string& caption) {
  return "<figure>" + svg + "<figcaption>" + caption + "</figcaption></figure>\n";
}

std::string note(const std::string& id, const std::string& text) {
  return "<p class=\"note\" id=\"" + id + "\">" + escape_html(text) + "</p>\n";
}

// The page around the sections; counts the figures for the drawn-figures check.
std::string html_page(const std::string& title, const std::string& body) {
  size_t figures = 0;
  for (size_t at = body.find("<svg "); at != std::string::npos; at = body.find("<svg ", at + 1))
    ++figures;
  std::ostringstream out;
  out << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      << "<title>" << escape_html(title) << "</title>\n<style>\n"
      << "body{font-family:sans-serif;color:#1a1a1a;margin:24px auto;max-width:1200px;"
         "padding:0 16px;line-height:1.4}\n"
      << "h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;"
         "border-bottom:1px solid #ddd;padding-bottom:4px}\n"
      << "table{border-collapse:collapse;font-size:0.9em;margin:8px 0}"
         "th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #eee}"
         "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}\n"
      << "dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 16px;"
         "font-size:0.9em}dl.meta dt{font-weight:bold}dl.meta dd{margin:0}\n"
      << "figure{display:inline-block;vertical-align:top;margin:8px 16px 16px 0}"
         "figcaption{font-size:0.85em;color:#444;max-width:560px}\n"
      << ".grid{display:flex;flex-wrap:wrap}.grid figure{margin:4px 8px 8px 0}\n"
      << ".note{background:#fff8e0;border-left:4px solid #e0b000;padding:6px 10px;"
         "font-size:0.9em}\n"
      << ".legend span{display:inline-block;margin-right:12px;font-size:0.85em}"
         ".legend i{display:inline-block;width:14px;height:4px;margin-right:4px;"
         "vertical-align:middle}\n"
      << "</style>\n</head>\n"
      << "<body data-figures-expected=\"" << figures << "\">\n"
      << body
      // Marks how many figures the browser actually drew (a test reads it from the DOM).
      << "<script>\n(function () {\n"
         "  var drawn = 0, svgs = document.querySelectorAll('svg');\n"
         "  for (var i = 0; i < svgs.length; ++i) {\n"
         "    var s = svgs[i], box = s.getBBox();\n"
         "    var shapes = s.querySelectorAll('rect,line,polyline,path,circle').length;\n"
         "    if (shapes > 0 && box.width > 0 && box.height > 0 && s.querySelector('title'))\n"
         "      ++drawn;\n"
         "    else\n"
         "      s.setAttribute('data-empty', 'true');\n"
         "  }\n"
         "  document.body.dataset.figures = String(drawn);\n"
         "})();\n</script>\n</body>\n</html>\n";
  return out.str();
}

std::string table_row(const std::vector<std::string>& cells, bool header = false) {
  std::string row = "<tr>";
  for (const auto& c : cells)
    row += (header ? "<th>" : "<td>") + escape_html(c) + (header ? "</th>" : "</td>");
  return row + "</tr>\n";
}

// ---------------------------------------------------------------------------------------------
// Shared figures of a profile

struct LayerSummary {
  double tau, density, error, holdout_density, holdout_error;
};

std::vector<LayerSummary> summarise_layers(const ProfileReport& r) {
  const Profile& p = r.profile;
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  const auto tau = to_double(p.thresholds), dens = to_double(p.predicted_density),
             err = to_double(p.predicted_error);
  std::vector<LayerSummary> out;
  for (int64_t l = 0; l < L; ++l) {
    LayerSummary s{layer_mean(tau, l, H), layer_mean(dens, l, H), layer_mean(err, l, H), kNaN,
                   kNaN};
    if (r.measured && !r.measured->holdout_samples.empty()) {
      s.holdout_density = layer_mean(r.measured->holdout_density, l, H);
      s.holdout_error = layer_mean(r.measured->holdout_error, l, H);
    }
    out.push_back(s);
  }
  return out;
}

bool has_holdout(const ProfileReport& r) {
  return r.measured && !r.measured->holdout_samples.empty();
}

// Head indices sorted by predicted density (ties by index), ascending.
std::vector<int64_t> heads_by_density(const Profile& p) {
  std::vector<int64_t> order(p.predicted_density.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return p.predicted_density[a] < p.predicted_density[b];
  });
  return order;
}

std::string uniform_line(const Profile& p) {
  if (!p.uniform) return "no single τ meets the budget; per-head thresholds are the only way";
  std::string line = "τ " + general(p.uniform->tau, 4) + " for every head: density " +
                     fixed(p.uniform->density, 4) + ", error " + general(p.uniform->error, 4);
  if (p.uniform->density > 0 && p.predicted_mean_density > 0) {
    line += "; per-head thresholds keep " +
            fixed(100.0 * p.predicted_mean_density / p.uniform->density, 1) + "% of its blocks (" +
            fixed(p.uniform->density / p.predicted_mean_density, 2) + "x fewer)";
  }
  return line;
}

std::string model_line(const Profile& p) {
  return p.model.architecture + ": " + std::to_string(p.model.num_layers) + " layers x " +
         std::to_string(p.model.heads_q) + " query heads (" + std::to_string(p.model.heads_kv) +
         " KV), head_dim " + std::to_string(p.model.head_dim) + "; block " +
         std::to_string(p.kernel.block_size) + ", stride " + std::to_string(p.kernel.stride) +
         ", " + (p.kernel.causal ? "causal" : "non-causal") +
         (p.kernel.causal && p.kernel.dense_last_query_block ? ", last query block dense" : "");
}

std::string budget_line(const Profile& p) {
  std::string line = "mean " + p.budget.metric + " <= " + general(p.budget.epsilon, 4);
  if (p.budget.per_head_cap) line += ", per-head cap " + general(*p.budget.per_head_cap, 4);
  return line;
}

std::string validation_line(const Profile& p) {
  std::string line;
  for (const auto& [name, value] : p.validation)
    line += (line.empty() ? "" : ", ") + name + " " + general(value, 4);
  return line;
}

std::string head_tooltip(const Profile& p, int64_t l, int64_t h) {
  const size_t i = size_t(l * p.model.heads_q + h);
  return "layer " + std::to_string(l) + " head " + std::to_string(h) + ": τ " +
         fixed(p.thresholds[i], 4) + ", density " + fixed(p.predicted_density[i], 4) +
         ", predicted error " + general(p.predicted_error[i], 4);
}

std::string tau_heatmap(const Profile& p, const std::string& id) {
  HeatmapSpec spec;
  spec.id = id;
  spec.title = "Threshold τ per head (layers x query heads)";
  spec.legend_title = "τ";
  spec.layers = p.model.num_layers;
  spec.heads = p.model.heads_q;
  spec.values = to_double(p.thresholds);
  const double lowest = *std::min_element(spec.values.begin(), spec.values.end());
  spec.lo = std::min(0.9, std::floor(lowest * 10 + 1e-9) / 10);  // a round floor below every τ
  spec.hi = 1;
  for (int64_t l = 0; l < spec.layers; ++l)
    for (int64_t h = 0; h < spec.heads; ++h) spec.tooltips.push_back(head_tooltip(p, l, h));
  return heatmap_svg(spec);
}

std::string density_heatmap(const Profile& p, const std::string& id) {
  HeatmapSpec spec;
  spec.id = id;
  spec.title = "Predicted density per head (kept / allowed blocks)";
  spec.legend_title = "density";
  spec.layers = p.model.num_layers;
  spec.heads = p.model.heads_q;
  spec.values = to_double(p.predicted_density);
  spec.lo = 0;
  spec.hi = 1;
  for (int64_t l = 0; l < spec.layers; ++l)
    for (int64_t h = 0; h < spec.heads; ++h) spec.tooltips.push_back(head_tooltip(p, l, h));
  return heatmap_svg(spec);
}

// One chart per layer: each head's error against density over the τ ladder, chosen point marked.
std::string error_curves(const ProfileReport& r) {
  const Profile& p = r.profile;
  const ProfileMeasurements& m = *r.measured;
  const int64_t L = p.model.num_layers, H = p.model.heads_q, M = int64_t(m.taus.size());
  // A shared log error axis: from 3 decades under the budget to the largest error seen.
  const double reference = p.budget.epsilon > 0 ? p.budget.epsilon : 1e-3;
  double largest = reference;
  for (double e : m.curve_error)
    if (std::isfinite(e)) largest = std::max(largest, e);
  for (float e : p.predicted_error) largest = std::max(largest, double(e));
  const double y_hi = std::pow(10.0, std::ceil(std::log10(largest) - 1e-9));
  const double y_lo = std::min(std::pow(10.0, std::floor(std::log10(reference)) - 3), y_hi / 100);
  std::vector<double> decades;
  for (double d = y_lo; d <= y_hi * 1.0001; d *= 10) decades.push_back(d);

  std::ostringstream out;
  out << "<div class=\"legend\">";
  if (H <= 16) {
    for (int64_t h = 0; h < H; ++h)
      out << "<span><i style=\"background:" << series_colour(h) << "\"></i>head " << h << "</span>";
  } else {
    out << "<span>" << H << " heads per chart, one colour each; hover a line or point for its "
        << "head</span>";
  }
  out << "<span>● chosen τ (the profile's prediction)</span><span>- - - ε = "
      << general(p.budget.epsilon, 4) << " (mean budget)</span></div>\n";
  out << "<div class=\"grid\" id=\"fig-error-curves\">\n";
  for (int64_t l = 0; l < L; ++l) {
    const double left = 56, top = 22, plot_w = 210, plot_h = 160;
    Svg svg("fig-error-curves-layer-" + std::to_string(l), left + plot_w + 12, top + plot_h + 46,
            "Layer " + std::to_string(l) + ": error against density per head");
    const Scale x{0, 1, left, left + plot_w};
    const Scale y{y_lo, y_hi, top + plot_h, top, true};
    draw_axes(svg, x, y, nice_ticks(0, 1, 5), decades, "density", p.budget.metric, true);
    svg.text(left + plot_w / 2, 14, "layer " + std::to_string(l), "middle", 12,
             " font-weight=\"bold\"");
    if (p.budget.epsilon > 0)
      svg.line(left, y(p.budget.epsilon), left + plot_w, y(p.budget.epsilon), "#c00", 1, "5 4",
               "ε = " + general(p.budget.epsilon, 4));
    if (p.budget.per_head_cap)
      svg.line(left, y(*p.budget.per_head_cap), left + plot_w, y(*p.budget.per_head_cap), "#800", 1,
               "2 3", "per-head cap " + general(*p.budget.per_head_cap, 4));
    for (int64_t h = 0; h < H; ++h) {
      const int64_t head = l * H + h;
      std::vector<std::pair<double, double>> points;
      for (int64_t t = 0; t < M; ++t) {
        const double d = m.curve_density[head * M + t], e = m.curve_error[head * M + t];
        if (std::isfinite(d) && std::isfinite(e)) points.emplace_back(x(d), y(e));
      }
      if (points.size() >= 2)
        svg.polyline(points, series_colour(h), 1.4,
                     "layer " + std::to_string(l) + " head " + std::to_string(h));
    }
    for (int64_t h = 0; h < H; ++h) {
      const size_t i = size_t(l * H + h);
      svg.circle(x(p.predicted_density[i]), y(p.predicted_error[i]), 3.5, series_colour(h), "#000",
                 head_tooltip(p, l, h));
    }
    out << figure(svg.str(), "");
  }
  out << "</div>\n";
  return out.str();
}

std::string predicted_vs_validated(const ProfileReport& r) {
  const Profile& p = r.profile;
  const ProfileMeasurements& m = *r.measured;
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  std::vector<Point> points;
  double largest = 0;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h) {
      const size_t i = size_t(l * H + h);
      const double predicted = p.predicted_error[i], measured = m.holdout_error[i];
      if (!std::isfinite(measured)) continue;
      largest = std::max({largest, predicted, measured});
      points.push_back({predicted, measured, layer_colour(l, L),
                        head_tooltip(p, l, h) + ", held-out error " + general(measured, 4)});
    }
  return scatter_svg("fig-predicted-vs-validated",
                     "Predicted (fit samples) against validated (held-out samples) error per head",
                     "predicted " + p.budget.metric, "held-out " + p.budget.metric, points, true,
                     nice_ceiling(std::max(largest * 1.05, 1e-6)), L);
}

std::string density_vs_length(const ProfileReport& r) {
  const Profile& p = r.profile;
  const ProfileMeasurements& m = *r.measured;
  const int64_t L = p.model.num_layers, N = int64_t(m.lengths.size());
  const double left = 62, top = 14, plot_w = 440, plot_h = 240;
  Svg svg("fig-density-vs-length", left + plot_w + 130, top + plot_h + 48,
          "Density at the chosen thresholds against sequence length");
  double y_max = 0;
  for (double v : m.density_by_length)
    if (std::isfinite(v)) y_max = std::max(y_max, v);
  y_max = std::min(1.0, nice_ceiling(std::max(y_max * 1.05, 0.05)));
  const double x_lo = double(m.lengths.front()), x_hi = double(m.lengths.back());
  const double pad = (x_hi - x_lo) * 0.05;
  const Scale x{x_lo - pad, x_hi + pad, left, left + plot_w};
  const Scale y{0, y_max, top + plot_h, top};
  std::vector<double> x_ticks;
  for (int64_t len : m.lengths) x_ticks.push_back(double(len));
  if (N > 8) x_ticks = nice_ticks(x_lo, x_hi, 6);
  draw_axes(svg, x, y, x_ticks, nice_ticks(0, y_max, 5), "sequence length (tokens)",
            "mean density");
  std::vector<std::pair<double, double>> mean_line;
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t l = 0; l < L; ++l) {
      const double v = m.density_by_length[n * L + l];
      if (std::isfinite(v)) sum += v, ++count;
    }
    if (count) mean_line.emplace_back(x(double(m.lengths[n])), y(sum / double(count)));
  }
  for (int64_t l = 0; l < L; ++l) {
    std::vector<std::pair<double, double>> line;
    for (int64_t n = 0; n < N; ++n) {
      const double v = m.density_by_length[n * L + l];
      if (!std::isfinite(v)) continue;
      line.emplace_back(x(double(m.lengths[n])), y(v));
      svg.circle(line.back().first, line.back().second, 3, layer_colour(l, L), "#fff",
                 "layer " + std::to_string(l) + ", " + std::to_string(m.lengths[n]) +
                     " tokens: density " + fixed(v, 4) + " (" +
                     std::to_string(m.samples_per_length[n]) + " samples)");
    }
    if (line.size() >= 2) svg.polyline(line, layer_colour(l, L), 1.2, "layer " + std::to_string(l));
  }
  if (mean_line.size() >= 2) svg.polyline(mean_line, "#000", 2.5, "mean over layers");
  // Legend: layers (a colour ramp) and the mean.
  const double lx = left + plot_w + 18;
  svg.line(lx, top + 8, lx + 20, top + 8, "#000", 2.5);
  svg.text(lx + 24, top + 12, "all layers", "start", 11);
  const int64_t shown = std::min<int64_t>(L, 12);
  for (int64_t k = 0; k < shown; ++k) {
    const int64_t l = shown == L ? k : k * (L - 1) / (shown - 1);
    svg.line(lx, top + 26 + 15 * double(k), lx + 20, top + 26 + 15 * double(k), layer_colour(l, L),
             2);
    svg.text(lx + 24, top + 30 + 15 * double(k), "layer " + std::to_string(l), "start", 11);
  }
  return svg.str();
}

int64_t distinct_count(const std::vector<int64_t>& values) {
  std::vector<int64_t> v = values;
  std::sort(v.begin(), v.end());
  return int64_t(std::unique(v.begin(), v.end()) - v.begin());
}

std::string ordinal(int64_t n) {
  const int64_t tens = n % 100, ones = n % 10;
  const char* suffix = (tens >= 11 && tens <= 13) ? "th"
                       : ones == 1                ? "st"
                       : ones == 2                ? "nd"
                       : ones == 3                ? "rd"
                                                  : "th";
  return std::to_string(n) + suffix;
}

std::string sample_list(const std::vector<int64_t>& samples) {
  std::string out;
  for (int64_t s : samples) out += (out.empty() ? "" : ", ") + std::to_string(s);
  return out;
}

void check_same_shape(const ProfileComparison& c) {
  XATTN_CHECK_INPUT(
      c.a.model.num_layers == c.b.model.num_layers && c.a.model.heads_q == c.b.model.heads_q,
      "cannot compare ", c.name_a, " (", c.a.model.num_layers, " layers x ", c.a.model.heads_q,
      " heads) with ", c.name_b, " (", c.b.model.num_layers, " layers x ", c.b.model.heads_q,
      " heads): the profiles are for different model shapes; compare profiles of "
      "one model");
}

}  // namespace

// -----------------------------------------------------------------------------------------------
// Measurements

ProfileMeasurements measure_profile(const Profile& p, const Statistics& s) {
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  XATTN_CHECK_INPUT(s.heads_q == H, "the statistics have ", s.heads_q, " query heads, the profile ",
                    H, "; give the statistics the profile was calibrated on");
  XATTN_CHECK_INPUT(s.settings.block_size == p.kernel.block_size &&
                        s.settings.stride == p.kernel.stride &&
                        s.settings.causal == p.kernel.causal,
                    "the statistics were measured with block ", s.settings.block_size, ", stride ",
                    s.settings.stride, (s.settings.causal ? ", causal" : ", non-causal"),
                    " but the profile is for block ", p.kernel.block_size, ", stride ",
                    p.kernel.stride, (p.kernel.causal ? ", causal" : ", non-causal"),
                    "; give the statistics the profile was calibrated on");
  XATTN_CHECK_INPUT(s.settings.dense_last_query_block == p.kernel.dense_last_query_block,
                    "the statistics were measured with the last query block ",
                    s.settings.dense_last_query_block ? "dense" : "selected like the others",
                    " but the profile was calibrated with it ",
                    p.kernel.dense_last_query_block ? "dense" : "selected like the others",
                    "; give the statistics the profile was calibrated on");
  XATTN_CHECK_INPUT(!s.samples.empty(), "the statistics hold no samples");
  std::vector<int64_t> slot_of(size_t(L), -1);
  for (size_t slot = 0; slot < s.layers.size(); ++slot) {
    XATTN_CHECK_INPUT(s.layers[slot] >= 0 && s.layers[slot] < L, "the statistics measure layer ",
                      s.layers[slot], " but the profile has ", L,
                      " layers; give the statistics of the profile's model");
    slot_of[size_t(s.layers[slot])] = int64_t(slot);
  }
  const BudgetMetric budget_metric = parse_budget_metric(p.budget.metric);
  const ErrorMetric metric = budget_metric.metric;
  const int64_t M = s.num_taus(), N = int64_t(s.samples.size());

  ProfileMeasurements m;
  std::string sources;
  for (const auto& sample : s.samples) sources += sample.source + "\n";
  m.same_data = !p.data.hash.empty() && fnv1a64(sources) == p.data.hash;
  m.taus = s.settings.taus;

  // The profile's τ of each head on the statistics' ladder (τ is stored as float32).
  m.chosen.assign(size_t(L * H), -1);
  for (int64_t l = 0; l < L; ++l) {
    if (slot_of[l] < 0) continue;
    for (int64_t h = 0; h < H; ++h) {
      const double tau = p.thresholds[size_t(l * H + h)];
      for (int64_t t = 0; t < M; ++t)
        if (std::abs(m.taus[t] - tau) <= 1e-6 * std::max(1.0, tau))
          m.chosen[l * H + h] = int32_t(t);
    }
  }

  std::vector<double> weight(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i)
    weight[i] = allowed_blocks(s.samples[i].len_q, s.samples[i].len_k, s.settings.block_size,
                               s.settings.causal);
  auto value = [&](int64_t sample, int64_t slot, int64_t h, int64_t t, bool error) {
    const int64_t at = s.entry(sample, slot, h, t);
    if (!error) return double(s.density[at]);
    return entry_error(s, metric, sample, slot, h, t);
  };
  // Cost-weighted mean over `samples`, summed in the order the search sums (NaN skipped); for
  // errors of a worst-sample budget, the largest.
  auto mean_over = [&](const std::vector<int64_t>& samples, int64_t slot, int64_t h, int64_t t,
                       bool error) {
    double sum = 0, total = 0, worst = kNaN;
    for (int64_t i : samples) {
      const double v = value(i, slot, h, t, error);
      if (std::isnan(v)) continue;
      sum += weight[i] * v;
      total += weight[i];
      worst = std::isnan(worst) ? v : std::max(worst, v);
    }
    if (error && budget_metric.worst_case) return worst;  // the profile budgets worst samples
    return total > 0 ? sum / total : kNaN;
  };
  // Whether fitting on `fit` reproduces every measured head's predicted density and error.
  auto reproduces = [&](const std::vector<int64_t>& fit) {
    int64_t compared = 0;
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t head = l * H + h, t = m.chosen[head];
        if (slot_of[l] < 0 || t < 0) continue;
        const double d = mean_over(fit, slot_of[l], h, t, false);
        const double e = mean_over(fit, slot_of[l], h, t, true);
        const double pd = p.predicted_density[head], pe = p.predicted_error[head];
        if (!(std::abs(d - pd) <= 1e-6 + 1e-5 * std::abs(pd))) return false;
        if (!(std::abs(e - pe) <= 1e-6 + 1e-5 * std::abs(pe))) return false;
        ++compared;
      }
    return compared > 0;
  };

  // Profiles of format 1.1 name their held-out samples; the statistics must then reproduce the
  // predictions from the other samples.
  if (p.format_minor >= 1 && p.data.sample_count == N) {
    std::vector<int64_t> fit, held;
    for (int64_t i = 0; i < N; ++i)
      (std::binary_search(p.data.holdout_samples.begin(), p.data.holdout_samples.end(), i) ? held
                                                                                          : fit)
          .push_back(i);
    if (!fit.empty() && reproduces(fit)) {
      m.split_recovered = true;
      m.fit_samples = fit;
      m.holdout_samples = held;
      m.note = held.empty() ? "every sample of the statistics was fitted; the profile has no "
                              "held-out samples"
                            : std::string(held.size() == 1 ? "sample " : "samples ") +
                                  sample_list(held) + " of " + std::to_string(N) +
                                  " held out, as the profile records";
    }
  }
  // Older profiles: calibrate holds out every k-th sample (k >= 2); try each k, then none.
  for (int64_t every = 2; every <= N + 1 && !m.split_recovered; ++every) {
    const bool none = every == N + 1;
    std::vector<int64_t> fit, held;
    for (int64_t i = 0; i < N; ++i)
      (!none && N >= 2 && i % every == every - 1 ? held : fit).push_back(i);
    if (fit.empty() || (!none && held.empty()) || !reproduces(fit)) continue;
    m.split_recovered = true;
    m.fit_samples = fit;
    m.holdout_samples = held;
    m.note = none ? "every sample of the statistics was fitted; the profile has no held-out samples"
                  : std::string(held.size() == 1 ? "sample " : "samples ") + sample_list(held) +
                        " of " + std::to_string(N) + " held out (every " + ordinal(every) +
                        "), found by reproducing the profile's predictions from the others";
  }
  if (!m.split_recovered) {
    m.fit_samples.resize(size_t(N));
    std::iota(m.fit_samples.begin(), m.fit_samples.end(), 0);
    m.note =
        "the statistics do not reproduce the profile's predictions (other samples, metric or "
        "ladder), so curves use all " +
        std::to_string(N) + " samples and there are no held-out figures";
  }

  m.curve_density.assign(size_t(L * H * M), kNaN);
  m.curve_error.assign(size_t(L * H * M), kNaN);
  m.holdout_density.assign(size_t(L * H), kNaN);
  m.holdout_error.assign(size_t(L * H), kNaN);
  for (int64_t l = 0; l < L; ++l) {
    if (slot_of[l] < 0) continue;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t head = l * H + h;
      for (int64_t t = 0; t < M; ++t) {
        m.curve_density[head * M + t] = mean_over(m.fit_samples, slot_of[l], h, t, false);
        m.curve_error[head * M + t] = mean_over(m.fit_samples, slot_of[l], h, t, true);
      }
      if (m.chosen[head] >= 0 && !m.holdout_samples.empty()) {
        m.holdout_density[head] =
            mean_over(m.holdout_samples, slot_of[l], h, m.chosen[head], false);
        m.holdout_error[head] = mean_over(m.holdout_samples, slot_of[l], h, m.chosen[head], true);
      }
    }
  }

  // Density at the chosen τ per distinct key length: plain mean over its samples and the heads.
  for (const auto& sample : s.samples) m.lengths.push_back(sample.len_k);
  std::sort(m.lengths.begin(), m.lengths.end());
  m.lengths.erase(std::unique(m.lengths.begin(), m.lengths.end()), m.lengths.end());
  m.density_by_length.assign(m.lengths.size() * size_t(L), kNaN);
  m.samples_per_length.assign(m.lengths.size(), 0);
  for (size_t n = 0; n < m.lengths.size(); ++n) {
    std::vector<int64_t> group;
    for (int64_t i = 0; i < N; ++i)
      if (s.samples[i].len_k == m.lengths[n]) group.push_back(i);
    m.samples_per_length[n] = int64_t(group.size());
    for (int64_t l = 0; l < L; ++l) {
      if (slot_of[l] < 0) continue;
      double sum = 0;
      int64_t count = 0;
      for (int64_t i : group)
        for (int64_t h = 0; h < H; ++h) {
          const int32_t t = m.chosen[l * H + h];
          if (t < 0) continue;
          sum += value(i, slot_of[l], h, t, false);
          ++count;
        }
      if (count) m.density_by_length[n * size_t(L) + size_t(l)] = sum / double(count);
    }
  }
  return m;
}

// -----------------------------------------------------------------------------------------------
// One profile: text

std::string format_report_text(const ProfileReport& r) {
  const Profile& p = r.profile;
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  const bool holdout = has_holdout(r);
  const std::vector<LayerSummary> layers = summarise_layers(r);
  std::ostringstream out;
  out << "xattn report  " << r.profile_name << "\n";
  out << "model        " << model_line(p) << "\n";
  out << "budget       " << budget_line(p) << "\n";
  out << "predicted    mean density " << fixed(p.predicted_mean_density, 4) << ", mean error "
      << general(p.predicted_mean_error, 4) << " (fit samples)\n";
  if (holdout) {
    out << "held-out     mean density " << fixed(mean_of(r.measured->holdout_density), 4)
        << ", mean error " << general(mean_of(r.measured->holdout_error), 4) << " over "
        << r.measured->holdout_samples.size() << " of "
        << r.measured->fit_samples.size() + r.measured->holdout_samples.size() << " samples\n";
  }
  out << "uniform      " << uniform_line(p) << "\n";
  if (!p.validation.empty()) out << "validation   " << validation_line(p) << "\n";
  if (!p.frontier.empty()) out << format_frontier(p.frontier);
  if (r.measured) {
    out << "statistics   " << r.statistics_name << ": " << r.measured->note;
    if (!r.measured->same_data)
      out << "; note: their samples are not the profile's calibration data";
    out << "\n";
  } else {
    out << "statistics   none (give --stats FILE for held-out figures and error curves)\n";
  }

  out << "\nlayer   mean τ  density  pred. error";
  if (holdout) out << "  held-out density  held-out error";
  out << "\n";
  auto row = [&](const std::string& name, const LayerSummary& s) {
    out << right(name, 5) << right(fixed(s.tau, 4), 9) << right(fixed(s.density, 4), 9)
        << right(fixed(s.error, 6), 13);
    if (holdout)
      out << right(fixed(s.holdout_density, 4), 18) << right(fixed(s.holdout_error, 6), 16);
    out << "\n";
  };
  for (int64_t l = 0; l < L; ++l) row(std::to_string(l), layers[l]);
  LayerSummary all{mean_of(to_double(p.thresholds)), mean_of(to_double(p.predicted_density)),
                   mean_of(to_double(p.predicted_error)), kNaN, kNaN};
  if (holdout) {
    all.holdout_density = mean_of(r.measured->holdout_density);
    all.holdout_error = mean_of(r.measured->holdout_error);
  }
  row("all", all);

  const std::vector<int64_t> order = heads_by_density(p);
  const int64_t top = std::min<int64_t>(kTopHeads, L * H);
  auto head_rows = [&](const std::string& heading, bool sparsest) {
    out << "\n" << top << " " << heading << "\nlayer  head       τ  density  pred. error";
    if (holdout) out << "  held-out error";
    out << "\n";
    for (int64_t k = 0; k < top; ++k) {
      const int64_t i = sparsest ? order[k] : order[order.size() - 1 - k];
      out << right(std::to_string(i / H), 5) << right(std::to_string(i % H), 6)
          << right(fixed(p.thresholds[i], 4), 8) << right(fixed(p.predicted_density[i], 4), 9)
          << right(fixed(p.predicted_error[i], 6), 13);
      if (holdout) out << right(fixed(r.measured->holdout_error[i], 6), 16);
      out << "\n";
    }
  };
  head_rows("sparsest heads (lowest predicted density)", true);
  head_rows("densest heads (highest predicted density)", false);
  return out.str();
}

// -----------------------------------------------------------------------------------------------
// One profile: HTML

std::string format_report_html(const ProfileReport& r) {
  const Profile& p = r.profile;
  const int64_t L = p.model.num_layers, H = p.model.heads_q;
  const bool holdout = has_holdout(r);
  const std::vector<LayerSummary> layers = summarise_layers(r);
  std::ostringstream body;
  body << "<header><h1>xattn head-sparsity report</h1>\n<dl class=\"meta\">"
       << "<dt>profile</dt><dd>" << escape_html(r.profile_name) << " (written by "
       << escape_html(p.tool_version) << " at " << escape_html(p.created_utc) << ")</dd>"
       << "<dt>model</dt><dd>" << escape_html(model_line(p)) << "</dd>"
       << "<dt>budget</dt><dd>" << escape_html(budget_line(p)) << "</dd>"
       << "<dt>predicted</dt><dd>mean density " << fixed(p.predicted_mean_density, 4)
       << ", mean error " << general(p.predicted_mean_error, 4) << " (fit samples)</dd>";
  if (holdout)
    body << "<dt>held-out</dt><dd>mean density " << fixed(mean_of(r.measured->holdout_density), 4)
         << ", mean error " << general(mean_of(r.measured->holdout_error), 4) << " over "
         << r.measured->holdout_samples.size() << " samples</dd>";
  body << "<dt>uniform</dt><dd>" << escape_html(uniform_line(p)) << "</dd>";
  if (!p.validation.empty())
    body << "<dt>validation</dt><dd>" << escape_html(validation_line(p)) << "</dd>";
  body << "<dt>data</dt><dd>" << p.data.sample_count << " samples";
  if (!p.data.description.empty()) body << ", " << escape_html(p.data.description);
  body << "</dd><dt>statistics</dt><dd>"
       << (r.measured ? escape_html(r.statistics_name + ": " + r.measured->note)
                      : std::string("none: error curves and held-out figures need --stats FILE"))
       << "</dd></dl></header>\n";
  if (r.measured && !r.measured->same_data)
    body << note("note-other-data",
                 "The statistics' samples are not the profile's calibration data (their hash "
                 "differs): the curves describe those samples.");

  if (!p.frontier.empty()) {
    body << "<h2>Quality frontier: per-head against uniform</h2>\n"
         << figure(frontier_svg(p),
                   "Measured on the " + std::to_string(p.frontier.holdout_tokens) +
                       " held-out tokens (never used to fit): KL of the next-token "
                       "distributions against dense attention, for one τ shared by every head "
                       "(red) and per-head profiles at the same predicted errors (blue). Lower "
                       "and further left is better; the ring is this profile.");
  }

  body << "<h2>Per layer</h2>\n<table id=\"layer-table\">\n";
  std::vector<std::string> header = {"layer", "mean τ", "density", "predicted error"};
  if (holdout) header.insert(header.end(), {"held-out density", "held-out error"});
  body << table_row(header, true);
  for (int64_t l = 0; l < L; ++l) {
    std::vector<std::string> cells = {std::to_string(l), fixed(layers[l].tau, 4),
                                      fixed(layers[l].density, 4), fixed(layers[l].error, 6)};
    if (holdout)
      cells.insert(cells.end(),
                   {fixed(layers[l].holdout_density, 4), fixed(layers[l].holdout_error, 6)});
    body << table_row(cells);
  }
  body << "</table>\n";

  const std::vector<int64_t> order = heads_by_density(p);
  const int64_t top = std::min<int64_t>(kTopHeads, L * H);
  for (bool sparsest : {true, false}) {
    body << "<figure><table id=\"" << (sparsest ? "sparsest-heads" : "densest-heads") << "\">"
         << "<caption>" << top << (sparsest ? " sparsest" : " densest") << " heads</caption>\n"
         << table_row({"layer", "head", "τ", "density", "predicted error"}, true);
    for (int64_t k = 0; k < top; ++k) {
      const int64_t i = sparsest ? order[k] : order[order.size() - 1 - k];
      body << table_row({std::to_string(i / H), std::to_string(i % H), fixed(p.thresholds[i], 4),
                         fixed(p.predicted_density[i], 4), fixed(p.predicted_error[i], 6)});
    }
    body << "</table></figure>\n";
  }

  body << "<h2>Thresholds and density per head</h2>\n"
       << figure(tau_heatmap(p, "fig-tau-heatmap"),
                 "τ chosen for each head; a lower τ keeps fewer blocks. Hover a cell for its "
                 "figures.")
       << figure(density_heatmap(p, "fig-density-heatmap"),
                 "Predicted share of the allowed blocks each head keeps at its τ (1 = dense).");

  std::vector<BarSeries> bars = {{"predicted", "#3b6fb6", {}}};
  for (const auto& s : layers) bars[0].values.push_back(s.density);
  if (holdout) {
    bars.push_back({"held-out", "#e08a2c", {}});
    for (const auto& s : layers) bars[1].values.push_back(s.holdout_density);
  }
  std::vector<ReferenceLine> references = {{"mean", "#333", p.predicted_mean_density}};
  if (p.uniform)
    references.push_back({"uniform τ " + general(p.uniform->tau, 3), "#c00", p.uniform->density});
  body << "<h2>Density per layer</h2>\n"
       << figure(layer_bars_svg("fig-layer-density", "Mean density per layer", "mean density", bars,
                                references),
                 "Mean over the layer's heads of the kept share of blocks; dashed: the overall "
                 "mean and the best single τ under the same budget.");

  body << "<h2>Error against density, per head</h2>\n";
  if (r.measured) {
    body << "<p>Each line is one head over the τ ladder (" << r.measured->taus.size()
         << " candidates; mean over the " << r.measured->fit_samples.size()
         << " fit samples, weighted by attention cost); the dot is the τ the profile chose. "
            "Errors below the bottom axis are drawn on it.</p>\n"
         << error_curves(r);
  } else {
    body << note("note-no-curves",
                 "Error curves need the statistics the profile was calibrated on: xattn report "
                 "PROFILE --stats FILE.");
  }

  body << "<h2>Predicted against validated error</h2>\n";
  if (holdout) {
    body << figure(predicted_vs_validated(r),
                   "Each dot is a head: predicted from the fit samples (x) against measured on "
                   "the held-out samples (y), coloured by layer. Dots above the diagonal did "
                   "worse than predicted.");
  } else {
    body << note("note-no-validation",
                 r.measured ? "No held-out samples: " + r.measured->note + "."
                            : "Validation per head needs the statistics (--stats FILE) of a "
                              "calibration with held-out samples.");
  }

  body << "<h2>Density against sequence length</h2>\n";
  if (r.measured && r.measured->lengths.size() >= 2) {
    body << figure(density_vs_length(r),
                   "Mean density at the chosen thresholds over the samples of each length, per "
                   "layer (thin) and over all layers (thick).");
  } else if (r.measured) {
    body << note("note-one-length",
                 "The statistics cover one sequence length (" +
                     std::to_string(r.measured->lengths.front()) +
                     " tokens); calibrate on samples of several lengths to see how density "
                     "changes with length.");
  } else {
    body << note("note-one-length", "Density against length needs the statistics (--stats FILE).");
  }
  return html_page("xattn report: " + base_name(r.profile_name), body.str());
}

// -----------------------------------------------------------------------------------------------
// Two profiles

namespace {

std::vector<int64_t> heads_by_tau_change(const ProfileComparison& c) {
  std::vector<int64_t> order(c.a.thresholds.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    return std::abs(c.b.thresholds[x] - c.a.thresholds[x]) >
           std::abs(c.b.thresholds[y] - c.a.thresholds[y]);
  });
  return order;
}

int64_t changed_heads(const ProfileComparison& c) {
  int64_t changed = 0;
  for (size_t i = 0; i < c.a.thresholds.size(); ++i)
    changed += c.a.thresholds[i] != c.b.thresholds[i];
  return changed;
}

std::string profile_line(const Profile& p) {
  return budget_line(p) + ": mean density " + fixed(p.predicted_mean_density, 4) + ", mean error " +
         general(p.predicted_mean_error, 4) + "; data " + std::to_string(p.data.sample_count) +
         " samples" + (p.data.description.empty() ? "" : " (" + p.data.description + ")");
}

}  // namespace

std::string format_comparison_text(const ProfileComparison& c) {
  check_same_shape(c);
  const int64_t L = c.a.model.num_layers, H = c.a.model.heads_q;
  const auto tau_a = to_double(c.a.thresholds), tau_b = to_double(c.b.thresholds);
  const auto dens_a = to_double(c.a.predicted_density), dens_b = to_double(c.b.predicted_density);
  std::ostringstream out;
  out << "xattn report  A = " << c.name_a << "  B = " << c.name_b << "\n";
  out << "model        " << model_line(c.a) << "\n";
  for (const auto& mismatch : profile_mismatches(c.a, c.b.model))
    out << "note         B differs: " << mismatch << "\n";
  out << "A            " << profile_line(c.a) << "\n";
  out << "B            " << profile_line(c.b) << "\n";
  out << "B - A        mean τ " << signed_fixed(mean_of(tau_b) - mean_of(tau_a), 4)
      << ", mean density "
      << signed_fixed(c.b.predicted_mean_density - c.a.predicted_mean_density, 4) << ", mean error "
      << signed_fixed(c.b.predicted_mean_error - c.a.predicted_mean_error, 6) << "; τ changed on "
      << changed_heads(c) << " of " << L * H << " heads\n";
  out << "\nlayer     τ A     τ B       Δτ  density A  density B   Δdensity\n";
  for (int64_t l = 0; l < L; ++l) {
    const double ta = layer_mean(tau_a, l, H), tb = layer_mean(tau_b, l, H);
    const double da = layer_mean(dens_a, l, H), db = layer_mean(dens_b, l, H);
    out << right(std::to_string(l), 5) << right(fixed(ta, 4), 8) << right(fixed(tb, 4), 8)
        << right(signed_fixed(tb - ta, 4), 9) << right(fixed(da, 4), 11) << right(fixed(db, 4), 11)
        << right(signed_fixed(db - da, 4), 11) << "\n";
  }
  const std::vector<int64_t> order = heads_by_tau_change(c);
  const int64_t top = std::min<int64_t>(kTopChangedHeads, changed_heads(c));
  if (top == 0) return out.str() + "\nevery head has the same τ in A and B\n";
  out << "\n"
      << top
      << " heads whose τ changed most\nlayer  head     τ A     τ B       Δτ  density A  density "
         "B\n";
  for (int64_t k = 0; k < top; ++k) {
    const int64_t i = order[k];
    out << right(std::to_string(i / H), 5) << right(std::to_string(i % H), 6)
        << right(fixed(tau_a[i], 4), 8) << right(fixed(tau_b[i], 4), 8)
        << right(signed_fixed(tau_b[i] - tau_a[i], 4), 9) << right(fixed(dens_a[i], 4), 11)
        << right(fixed(dens_b[i], 4), 11) << "\n";
  }
  return out.str();
}

std::string format_comparison_html(const ProfileComparison& c) {
  check_same_shape(c);
  const int64_t L = c.a.model.num_layers, H = c.a.model.heads_q;
  const auto tau_a = to_double(c.a.thresholds), tau_b = to_double(c.b.thresholds);
  const auto dens_a = to_double(c.a.predicted_density), dens_b = to_double(c.b.predicted_density);
  std::ostringstream body;
  body << "<header><h1>xattn profile comparison</h1>\n<dl class=\"meta\">"
       << "<dt>A</dt><dd>" << escape_html(c.name_a + ": " + profile_line(c.a)) << "</dd>"
       << "<dt>B</dt><dd>" << escape_html(c.name_b + ": " + profile_line(c.b)) << "</dd>"
       << "<dt>model</dt><dd>" << escape_html(model_line(c.a)) << "</dd>"
       << "<dt>B - A</dt><dd>mean τ " << signed_fixed(mean_of(tau_b) - mean_of(tau_a), 4)
       << ", mean density "
       << signed_fixed(c.b.predicted_mean_density - c.a.predicted_mean_density, 4)
       << "; τ changed on " << changed_heads(c) << " of " << L * H << " heads</dd></dl></header>\n";
  for (const auto& mismatch : profile_mismatches(c.a, c.b.model))
    body << note("note-model-mismatch", "B differs: " + mismatch);

  body << "<h2>Per layer</h2>\n<table id=\"layer-table\">\n"
       << table_row({"layer", "τ A", "τ B", "Δτ", "density A", "density B", "Δdensity"}, true);
  for (int64_t l = 0; l < L; ++l) {
    const double ta = layer_mean(tau_a, l, H), tb = layer_mean(tau_b, l, H);
    const double da = layer_mean(dens_a, l, H), db = layer_mean(dens_b, l, H);
    body << table_row({std::to_string(l), fixed(ta, 4), fixed(tb, 4), signed_fixed(tb - ta, 4),
                       fixed(da, 4), fixed(db, 4), signed_fixed(db - da, 4)});
  }
  body << "</table>\n";

  auto diff_heatmap = [&](const std::string& id, const std::string& title,
                          const std::string& legend, const std::vector<double>& a,
                          const std::vector<double>& b) {
    HeatmapSpec spec;
    spec.id = id;
    spec.title = title;
    spec.legend_title = legend;
    spec.layers = L;
    spec.heads = H;
    spec.diverging = true;
    spec.cell_decimals = 3;
    double largest = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      spec.values.push_back(b[i] - a[i]);
      largest = std::max(largest, std::abs(b[i] - a[i]));
      spec.tooltips.push_back("layer " + std::to_string(int64_t(i) / H) + " head " +
                              std::to_string(int64_t(i) % H) + ": A " + fixed(a[i], 4) + ", B " +
                              fixed(b[i], 4) + ", B - A " + signed_fixed(b[i] - a[i], 4));
    }
    spec.hi = nice_ceiling(std::max(largest, 0.01));
    spec.lo = -spec.hi;
    return heatmap_svg(spec);
  };
  body << "<h2>Differences per head (B - A)</h2>\n"
       << figure(diff_heatmap("fig-tau-diff-heatmap", "Change of τ per head (B - A)", "Δτ", tau_a,
                              tau_b),
                 "Red: B keeps more (higher τ); blue: B prunes more.")
       << figure(diff_heatmap("fig-density-diff-heatmap",
                              "Change of predicted density per head (B - A)", "Δdensity", dens_a,
                              dens_b),
                 "Red: the head is denser in B; blue: sparser.");

  std::vector<BarSeries> bars = {{"A", "#3b6fb6", {}}, {"B", "#e08a2c", {}}};
  for (int64_t l = 0; l < L; ++l) {
    bars[0].values.push_back(layer_mean(dens_a, l, H));
    bars[1].values.push_back(layer_mean(dens_b, l, H));
  }
  std::vector<Point> points;
  for (int64_t i = 0; i < L * H; ++i)
    points.push_back({tau_a[i], tau_b[i], layer_colour(i / H, L),
                      "layer " + std::to_string(i / H) + " head " + std::to_string(i % H) +
                          ": τ A " + fixed(tau_a[i], 4) + ", τ B " + fixed(tau_b[i], 4)});
  body << "<h2>Per layer and per head</h2>\n"
       << figure(layer_bars_svg("fig-layer-density-compare", "Mean density per layer, A and B",
                                "mean density", bars, {}),
                 "Mean predicted density of each layer's heads in A and in B.")
       << figure(scatter_svg("fig-tau-scatter", "τ per head, A against B", "τ in A", "τ in B",
                             points, true, 1.0, L),
                 "Each dot is a head, coloured by layer; on the diagonal its τ did not change.");

  const std::vector<int64_t> order = heads_by_tau_change(c);
  const int64_t top = std::min<int64_t>(kTopChangedHeads, changed_heads(c));
  if (top == 0) body << "<p>Every head has the same τ in A and B.</p>\n";
  if (top > 0)
    body << "<table id=\"changed-heads\"><caption>" << top
         << " heads whose τ changed most</caption>\n"
         << table_row({"layer", "head", "τ A", "τ B", "Δτ", "density A", "density B"}, true);
  for (int64_t k = 0; k < top; ++k) {
    const int64_t i = order[k];
    body << table_row({std::to_string(i / H), std::to_string(i % H), fixed(tau_a[i], 4),
                       fixed(tau_b[i], 4), signed_fixed(tau_b[i] - tau_a[i], 4),
                       fixed(dens_a[i], 4), fixed(dens_b[i], 4)});
  }
  if (top > 0) body << "</table>\n";
  return html_page("xattn report: " + base_name(c.name_a) + " vs " + base_name(c.name_b),
                   body.str());
}

void write_report_html(const std::string& path, const std::string& html, bool overwrite) {
  // Replacing is by rename, which would turn a device such as /dev/null into a plain file.
  XATTN_CHECK(!io::path_exists(path) || io::is_regular_file(path),
              ErrorKind::kIo, path,
              " exists and is not a regular file; give a file path for --html");
  io::write_file_atomically(path, overwrite, [&](const std::string& temp) {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    XATTN_CHECK(out.good(), ErrorKind::kIo, "cannot create ", temp,
                "; check that the folder exists and is writable");
    out << html;
    out.flush();
    XATTN_CHECK(out.good(), ErrorKind::kIo, "cannot write ", temp, " (disk full?)");
  });
}

}  // namespace xattn::calibrate
