// Head-sparsity reports, the drawing: the self-contained HTML pages with inline SVG figures of one
// profile and of two (report.h); the numbers come from report.cpp and report_common.h.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "report_common.h"
#include "xattn/calibrate/report.h"

namespace xattn::calibrate {

using namespace report_internal;

namespace {

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

// Layers are categories, not an order: twelve distinguishable colours (hue steps, alternating
// lightness), repeated for later layers, which also change marker shape (layer_marker).
std::string layer_colour(int64_t layer, int64_t /*layers*/) {
  static const char* kPalette[] = {"#1f5fa8", "#e3731c", "#2a9d3a", "#c8283a",
                                   "#7b4fb0", "#8c5a3c", "#d45aa8", "#5f6b6d",
                                   "#a8a21c", "#17a2b8", "#0b3d6e", "#f2a65a"};
  return kPalette[layer % 12];
}

// Marker of a layer in scatter plots: a circle for layers 0-11, a square for 12-23, a triangle
// for 24-35, ...
int layer_marker(int64_t layer) { return int((layer / 12) % 3); }

// τ scale: position -log10(1 - τ), so 0.9, 0.99, 0.999 and 0.9999 are equally spaced; fixed from
// τ = 0.1 to τ = 0.9999 (the same in every report; the default ladder starts near 0.11). τ = 1
// (dense) has its own colour.
constexpr double kTauScaleLow = 0.1, kTauScaleHigh = 0.9999;
const double kTauTicks[] = {0.1, 0.5, 0.9, 0.99, 0.999, 0.9999};
const Rgb kDense = {0.761, 0.094, 0.357};
double tau_position(double tau) {
  const auto nines = [](double t) { return -std::log10(1.0 - t); };
  const double t = std::clamp(tau, kTauScaleLow, kTauScaleHigh);
  return (nines(t) - nines(kTauScaleLow)) / (nines(kTauScaleHigh) - nines(kTauScaleLow));
}
Rgb tau_colour(double tau) { return tau >= 1.0 ? kDense : sequential(tau_position(tau)); }

// τ as written in a cell: up to 4 decimals, trailing zeros dropped ("0.9", "0.999", "1").
std::string tau_text(double tau) {
  std::string text = fixed(tau, 4);
  if (text.find('.') != std::string::npos) {
    while (text.back() == '0') text.pop_back();
    if (text.back() == '.') text.pop_back();
  }
  return text;
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

// A layers x heads heatmap with a colour legend; `values` is [L*H] (NaN drawn grey). The colour
// scales are fixed (τ by tau_position, density 0 to 1, differences -hi to hi), so two reports of
// the same kind can be compared by eye.
enum class HeatmapKind { kTau, kDensity, kDifference };
struct HeatmapSpec {
  std::string id, title, legend_title;
  HeatmapKind kind = HeatmapKind::kDensity;
  int64_t layers = 0, heads = 0;
  std::vector<double> values;
  double hi = 1;                      // kDifference: the scale runs from -hi to hi
  double floor = kNaN;                // kDensity: the least density a head can have, marked
  int cell_decimals = 2;              // kDifference
  std::vector<std::string> tooltips;  // [L*H]
};

// Cell size of a layers x heads heatmap: as large as fits 980 px, at least 12 px; values are
// written in cells of 20 px and more (32 heads: 30 px cells), else only in tooltips.
double heatmap_cell(int64_t layers, int64_t heads) {
  return std::clamp(std::floor(980.0 / double(std::max(layers, heads))), 12.0, 48.0);
}
constexpr double kMinLabelledCell = 20;

std::string heatmap_svg(const HeatmapSpec& spec) {
  const int64_t L = spec.layers, H = spec.heads;
  const double cell = heatmap_cell(L, H);
  const double left = 62, top = 14, plot_w = double(H) * cell, plot_h = double(L) * cell;
  const double legend_x = left + plot_w + 26, legend_h = std::clamp(plot_h, 200.0, 420.0);
  const double width = legend_x + 120, height = top + std::max(plot_h + 40, legend_h + 22) + 4;
  Svg svg(spec.id, width, height, spec.title);
  auto colour_of = [&](double v) {
    switch (spec.kind) {
      case HeatmapKind::kTau:
        return tau_colour(v);
      case HeatmapKind::kDifference:
        return diverging(spec.hi > 0 ? v / spec.hi : 0.0);
      case HeatmapKind::kDensity:
        break;
    }
    return sequential(v);
  };
  auto cell_text = [&](double v) {
    switch (spec.kind) {
      case HeatmapKind::kTau:
        return tau_text(v);
      case HeatmapKind::kDifference:
        return signed_fixed(v, spec.cell_decimals);
      case HeatmapKind::kDensity:
        break;
    }
    return fixed(100 * v, 0);  // percent
  };
  const bool labels_in_cells = cell >= kMinLabelledCell;
  const double font = std::clamp(cell / 3.4, 7.5, 11.0);
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
      if (labels_in_cells && !(spec.kind == HeatmapKind::kDifference &&
                               std::abs(v) < 0.5 * std::pow(10.0, -spec.cell_decimals))) {
        // Shrink long values to the cell (about 0.58 em per digit), never below 6.5 px.
        const std::string label = cell_text(v);
        const double size =
            std::max(6.5, std::min(font, (cell - 3) / (0.58 * double(label.size()))));
        svg.text(x + cell / 2, y + cell / 2 + size * 0.35, label, "middle", size,
                 std::string(" class=\"cell-value\" pointer-events=\"none\" fill=\"") +
                     (is_dark(c) ? "#fff" : "#111") + "\"");
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

  // Legend: a vertical gradient bar, low at the bottom, ticks in the quantity's own values.
  const std::string gradient = spec.id + "-gradient";
  std::ostringstream defs;
  defs << "<defs><linearGradient id=\"" << gradient << "\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int i = 0; i <= 20; ++i) {
    const double t = i / 20.0;
    const std::string c = spec.kind == HeatmapKind::kTau       ? hex(sequential(t))
                          : spec.kind == HeatmapKind::kDensity ? hex(sequential(t))
                                                               : hex(diverging(2 * t - 1));
    defs << "<stop offset=\"" << i * 5 << "%\" stop-color=\"" << c << "\"/>";
  }
  defs << "</linearGradient></defs>";
  svg.raw(defs.str());
  double bar_top = top + 16, bar_h = legend_h - 16;
  svg.text(legend_x, top + 6, spec.legend_title, "start", 11);
  if (spec.kind == HeatmapKind::kTau) {
    // τ = 1 (dense) as its own swatch above the bar.
    svg.rect(legend_x, bar_top, 14, 14, hex(kDense), "τ = 1: dense",
             " class=\"legend-dense\" stroke=\"#888\" stroke-width=\"0.5\"");
    svg.text(legend_x + 21, bar_top + 11, "1 (dense)", "start", 10);
    bar_top += 24;
    bar_h -= 24;
  }
  svg.rect(legend_x, bar_top, 14, bar_h, "url(#" + gradient + ")", "",
           " stroke=\"#888\" stroke-width=\"0.5\"");
  auto tick = [&](double t01, const std::string& label, const std::string& cls) {
    const double y = bar_top + bar_h * (1 - t01);
    svg.line(legend_x + 14, y, legend_x + 18, y, "#555");
    svg.text(legend_x + 21, y + 3.5, label, "start", 10, " class=\"" + cls + "\"");
  };
  if (spec.kind == HeatmapKind::kTau) {
    for (double t : kTauTicks)
      if (t > kTauScaleLow) tick(tau_position(t), tau_text(t), "legend-tick");
    svg.text(legend_x, bar_top + bar_h + 13, "≤ " + tau_text(kTauScaleLow), "start", 10,
             " class=\"legend-tick\"");
  } else if (spec.kind == HeatmapKind::kDensity) {
    const bool floor_shown = std::isfinite(spec.floor) && spec.floor > 0;
    for (double t : {0.0, 0.2, 0.4, 0.6, 0.8, 1.0})
      if (!floor_shown || std::abs(t - spec.floor) * bar_h > 14)  // the floor's label wins
        tick(t, fixed(100 * t, 0) + " %", "legend-tick");
    if (floor_shown) {
      const double y = bar_top + bar_h * (1 - spec.floor);
      svg.line(legend_x - 4, y, legend_x + 18, y, "#000", 2, "",
               "floor: sink + diagonal blocks, the least density a head can have");
      svg.text(legend_x + 21, y + 3.5, "floor " + fixed(100 * spec.floor, 1) + " %", "start", 10,
               " class=\"legend-floor\" font-weight=\"bold\"");
    }
  } else {
    for (double t : nice_ticks(-spec.hi, spec.hi, 4))
      tick((t / spec.hi + 1) / 2, signed_fixed(t, spec.cell_decimals), "legend-tick");
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
  const double width = std::max(left + plot_w + 20, 640.0), height = top + plot_h + 44;
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

// A layer's marker: circle, square or triangle (layer_marker) in its colour.
void marker(Svg& svg, double x, double y, double r, int64_t layer, const std::string& tooltip) {
  const std::string colour = layer_colour(layer, 0);
  switch (layer_marker(layer)) {
    case 0:
      svg.circle(x, y, r, colour, "#fff", tooltip);
      break;
    case 1:
      svg.rect(x - r, y - r, 2 * r, 2 * r, colour, tooltip, " stroke=\"#fff\"");
      break;
    default: {
      std::ostringstream path;
      path << "<path d=\"M" << coordinate(x) << " " << coordinate(y - 1.2 * r) << " L"
           << coordinate(x + 1.1 * r) << " " << coordinate(y + 0.8 * r) << " L"
           << coordinate(x - 1.1 * r) << " " << coordinate(y + 0.8 * r) << " Z\" fill=\"" << colour
           << "\" stroke=\"#fff\">";
      if (!tooltip.empty()) path << "<title>" << escape_html(tooltip) << "</title>";
      path << "</path>";
      svg.raw(path.str());
    }
  }
}

// A key of layer colours and markers at (x, y): every layer up to 24, else the first 24.
void layer_key(Svg& svg, double x, double y, int64_t layers) {
  const int64_t shown = std::min<int64_t>(layers, 24);
  const int64_t per_column = 12;
  for (int64_t l = 0; l < shown; ++l) {
    const double cx = x + 70 * double(l / per_column), row = y + 15 * double(l % per_column);
    marker(svg, cx + 5, row - 4, 4, l, "");
    svg.text(cx + 14, row, "layer " + std::to_string(l), "start", 11);
  }
  if (shown < layers)
    svg.text(x, y + 15 * double(per_column), "... " + std::to_string(layers) + " layers in all",
             "start", 11);
}

struct Point {
  double x, y;
  int64_t layer;
  std::string tooltip;
};

// A plot axis: linear, logarithmic (decades) or τ (tau_position, with τ = 1 at the far end).
struct Axis {
  enum Kind { kLinear, kLog, kTau } kind = kLinear;
  double lo = 0, hi = 1;
  std::string title;
  // Position in [0, 1].
  double at(double v) const {
    switch (kind) {
      case kLog:
        return std::clamp(
            (std::log10(std::max(v, lo)) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)), 0.0,
            1.0);
      case kTau:
        return v >= 1.0 ? 1.0 : 0.93 * tau_position(v);
      case kLinear:
        break;
    }
    return hi > lo ? std::clamp((v - lo) / (hi - lo), 0.0, 1.0) : 0.5;
  }
  std::vector<std::pair<double, std::string>> ticks() const {
    std::vector<std::pair<double, std::string>> out;
    if (kind == kTau) {
      for (double t : kTauTicks) out.emplace_back(t, tau_text(t));
      out.emplace_back(1.0, "1");
    } else if (kind == kLog) {
      for (double v = lo; v <= hi * 1.0001; v *= 10) out.emplace_back(v, decade_label(v));
    } else {
      for (double v : nice_ticks(lo, hi, 5)) out.emplace_back(v, general(v, 4));
    }
    return out;
  }
};

// The axis that holds `values` with a margin: log decades when the positive ones span more than
// a decade and a half (at most `max_decades`; smaller values and zeros sit on the lower edge),
// else linear from a round value below the least to one above the largest.
Axis fitted_axis(const std::vector<double>& values, const std::string& title, bool log_ok = true,
                 int max_decades = 6) {
  double lo = 1e300, hi = 0, positive_lo = 1e300;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v), hi = std::max(hi, v);
    if (v > 0) positive_lo = std::min(positive_lo, v);
  }
  Axis a;
  a.title = title;
  if (!(hi >= lo)) return a;
  if (hi == lo) {  // one value: a unit range around it
    a.lo = lo - 0.5, a.hi = hi + 0.5;
    return a;
  }
  if (log_ok && lo >= 0 && positive_lo < 1e300 && hi / positive_lo > 30) {
    a.kind = Axis::kLog;
    a.hi = std::pow(10.0, std::ceil(std::log10(hi) - 1e-9));
    a.lo = std::max(std::pow(10.0, std::floor(std::log10(positive_lo))),
                    a.hi / std::pow(10.0, max_decades));
    return a;
  }
  const double pad = std::max((hi - lo) * 0.08, std::abs(hi) * 1e-3);
  const double floor_at = lo >= 0 ? 0.0 : -1e300;  // non-negative data keeps a non-negative axis
  const std::vector<double> ticks = nice_ticks(std::max(floor_at, lo - pad), hi + pad, 5);
  const double step = ticks.size() >= 2 ? ticks[1] - ticks[0] : pad;
  a.lo = std::max(floor_at, std::floor((lo - pad) / step) * step);
  a.hi = std::ceil((hi + pad) / step) * step;
  return a;
}

// Scatter of per-head points, markers by layer, optionally the diagonal y = x (x and y must then
// share one axis kind and range).
std::string scatter_svg(const std::string& id, const std::string& title, const Axis& x_axis,
                        const Axis& y_axis, const std::vector<Point>& points, bool diagonal,
                        int64_t layers) {
  const double left = 78, top = 14, plot = 380;
  const double key_w = layers > 12 ? 170 : layers > 0 ? 100 : 24;
  Svg svg(id, left + plot + key_w, top + plot + 52, title);
  auto px = [&](double v) { return left + plot * x_axis.at(v); };
  auto py = [&](double v) { return top + plot * (1 - y_axis.at(v)); };
  for (const auto& [v, label] : y_axis.ticks()) {
    svg.line(left, py(v), left + plot, py(v), "#e4e4e4");
    svg.text(left - 5, py(v) + 3.5, label, "end", 10);
  }
  for (const auto& [v, label] : x_axis.ticks()) {
    svg.line(px(v), top + plot, px(v), top + plot + 4, "#555");
    svg.line(px(v), top, px(v), top + plot, "#f0f0f0");
    svg.text(px(v), top + plot + 15, label, "middle", 10);
  }
  svg.line(left, top + plot, left + plot, top + plot, "#555");
  svg.line(left, top + plot, left, top, "#555");
  // Zero lines of axes that cross zero.
  if (x_axis.kind == Axis::kLinear && x_axis.lo < 0 && x_axis.hi > 0)
    svg.line(px(0), top, px(0), top + plot, "#777", 1);
  if (y_axis.kind == Axis::kLinear && y_axis.lo < 0 && y_axis.hi > 0)
    svg.line(left, py(0), left + plot, py(0), "#777", 1);
  svg.text(left + plot / 2, top + plot + 32, x_axis.title, "middle", 12);
  svg.vertical_text(left - 52, top + plot / 2, y_axis.title, 12);
  if (diagonal) {
    // y = x, drawn through the shared range.
    const double lo = std::max(x_axis.lo, y_axis.lo), hi = std::min(x_axis.hi, y_axis.hi);
    if (x_axis.kind == Axis::kTau)
      svg.line(px(kTauScaleLow), py(kTauScaleLow), px(1.0), py(1.0), "#999", 1, "4 3", "y = x");
    else
      svg.line(px(lo), py(lo), px(hi), py(hi), "#999", 1, "4 3", "y = x");
  }
  for (const auto& p : points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    marker(svg, px(p.x), py(p.y), 4, p.layer, p.tooltip);
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
  const struct {
    const std::vector<FrontierPoint>* curve;
    const char* colour;
    const char* name;
  } series[] = {{&f.uniform, "#c0392b", "uniform τ"}, {&f.per_head, "#2c6fb6", "per-head"}};
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
         "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
         "table.words td:last-child,table.words th:last-child{text-align:left}\n"
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
         // Values written in heatmap cells, and how many are wider than their cell.
         "  var values = document.querySelectorAll('text.cell-value'), wide = 0;\n"
         "  for (var j = 0; j < values.length; ++j) {\n"
         "    var cell = values[j].previousElementSibling;\n"
         "    if (cell && values[j].getBBox().width > cell.width.baseVal.value) ++wide;\n"
         "  }\n"
         "  document.body.dataset.cellValues = String(values.length);\n"
         "  document.body.dataset.cellValuesTooWide = String(wide);\n"
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
// Figures of a profile

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
  spec.kind = HeatmapKind::kTau;
  spec.layers = p.model.num_layers;
  spec.heads = p.model.heads_q;
  spec.values = to_double(p.thresholds);
  for (int64_t l = 0; l < spec.layers; ++l)
    for (int64_t h = 0; h < spec.heads; ++h) spec.tooltips.push_back(head_tooltip(p, l, h));
  return heatmap_svg(spec);
}

// The profile's density floor at its calibration lengths; NaN when it records none.
double profile_floor(const Profile& p) {
  return p.data.lengths.empty() ? kNaN : density_floor(p.kernel, p.data.lengths);
}

std::string density_heatmap(const Profile& p, const std::string& id) {
  HeatmapSpec spec;
  spec.id = id;
  spec.title = "Predicted density per head (kept / allowed blocks)";
  spec.legend_title = "density";
  spec.kind = HeatmapKind::kDensity;
  spec.layers = p.model.num_layers;
  spec.heads = p.model.heads_q;
  spec.values = to_double(p.predicted_density);
  spec.floor = profile_floor(p);
  for (int64_t l = 0; l < spec.layers; ++l)
    for (int64_t h = 0; h < spec.heads; ++h) spec.tooltips.push_back(head_tooltip(p, l, h));
  return heatmap_svg(spec);
}

// One chart per layer: each head's error against density over the τ ladder, chosen point marked;
// the layer's mean over heads in black with its τ written at the points.
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
  const bool worst = worst_sample_budget(p.budget.metric);
  const std::string y_title = (worst ? "worst-sample " : "mean ") + metric_words(p.budget.metric);
  const double floor = profile_floor(p);
  const bool label_heads = H <= 8;

  std::ostringstream out;
  out << "<div class=\"legend\">";
  if (H <= 16) {
    for (int64_t h = 0; h < H; ++h)
      out << "<span><i style=\"background:" << series_colour(h) << "\"></i>head " << h << "</span>";
  } else {
    out << "<span>" << H << " heads per chart, one colour each; hover a line or point for its "
        << "head</span>";
  }
  out << "<span><i style=\"background:#000\"></i>mean over the layer's heads, τ at its points"
      << "</span><span>● chosen τ (the profile's prediction" << (label_heads ? ", τ written" : "")
      << ")</span><span>- - - ε = " << general(p.budget.epsilon, 4) << " ("
      << (worst ? "budget on the mean of the worst-sample errors" : "mean budget") << ")</span>";
  if (std::isfinite(floor)) out << "<span>grey: below the density floor</span>";
  out << "</div>\n";
  out << "<div class=\"grid\" id=\"fig-error-curves\">\n";
  for (int64_t l = 0; l < L; ++l) {
    const double left = 74, top = 26, plot_w = 420, plot_h = 280;
    Svg svg("fig-error-curves-layer-" + std::to_string(l), left + plot_w + 16, top + plot_h + 50,
            "Layer " + std::to_string(l) + ": error against density per head");
    const Scale x{0, 100, left, left + plot_w};
    const Scale y{y_lo, y_hi, top + plot_h, top, true};
    if (std::isfinite(floor) && floor > 0)
      svg.rect(x(0), top, x(100 * floor) - x(0), plot_h, "#ececec",
               "below the density floor (" + fixed(100 * floor, 1) +
                   " %): sink and diagonal blocks are always kept",
               " class=\"floor-region\"");
    draw_axes(svg, x, y, nice_ticks(0, 100, 5), decades, "density (% of allowed blocks)", y_title,
              true);
    svg.text(left + plot_w / 2, 16, "layer " + std::to_string(l), "middle", 13,
             " font-weight=\"bold\"");
    if (p.budget.epsilon > 0)
      svg.line(left, y(p.budget.epsilon), left + plot_w, y(p.budget.epsilon), "#c00", 1, "5 4",
               "ε = " + general(p.budget.epsilon, 4));
    if (p.budget.per_head_cap)
      svg.line(left, y(*p.budget.per_head_cap), left + plot_w, y(*p.budget.per_head_cap), "#800", 1,
               "2 3", "per-head cap " + general(*p.budget.per_head_cap, 4));
    std::vector<double> mean_d(size_t(M), 0), mean_e(size_t(M), 0);
    std::vector<int64_t> counted(size_t(M), 0);
    for (int64_t h = 0; h < H; ++h) {
      const int64_t head = l * H + h;
      std::vector<std::pair<double, double>> points;
      for (int64_t t = 0; t < M; ++t) {
        const double d = m.curve_density[head * M + t], e = m.curve_error[head * M + t];
        if (!std::isfinite(d) || !std::isfinite(e)) continue;
        points.emplace_back(x(100 * d), y(e));
        mean_d[t] += d, mean_e[t] += e, ++counted[t];
      }
      if (points.size() >= 2)
        svg.polyline(points, series_colour(h), 1.4,
                     "layer " + std::to_string(l) + " head " + std::to_string(h));
    }
    // The layer mean, with τ at its points (a label only where it does not touch the last one).
    std::vector<std::pair<double, double>> mean_points;
    std::vector<double> mean_taus;
    for (int64_t t = 0; t < M; ++t) {
      if (counted[t] == 0) continue;
      const double d = mean_d[t] / double(counted[t]), e = mean_e[t] / double(counted[t]);
      mean_points.emplace_back(x(100 * d), y(e));
      mean_taus.push_back(m.taus[t]);
    }
    if (mean_points.size() >= 2)
      svg.polyline(mean_points, "#000", 2.2, "layer " + std::to_string(l) + ": mean over heads");
    double last_x = -1e9, last_y = -1e9;
    for (size_t k = 0; k < mean_points.size(); ++k) {
      const auto [px, py] = mean_points[k];
      svg.circle(px, py, 2.5, "#000", "#fff", "layer mean at τ " + tau_text(mean_taus[k]));
      if (std::abs(px - last_x) < 42 && std::abs(py - last_y) < 13) continue;
      const bool near_right = px > left + plot_w - 36;
      svg.text(near_right ? px - 4 : px + 4, py - 5, tau_text(mean_taus[k]),
               near_right ? "end" : "start", 10,
               " class=\"tau-label\" fill=\"#000\" stroke=\"#fff\" stroke-width=\"3\" "
               "paint-order=\"stroke\"");
      last_x = px, last_y = py;
    }
    for (int64_t h = 0; h < H; ++h) {
      const size_t i = size_t(l * H + h);
      const double px = x(100 * p.predicted_density[i]), py = y(p.predicted_error[i]);
      svg.circle(px, py, 4, series_colour(h), "#000", head_tooltip(p, l, h));
      // Labels near the right edge go to the left of their point, inside the plot.
      const bool near_right = px > left + plot_w - 44;
      if (label_heads)
        svg.text(near_right ? px - 6 : px + 6, py > top + plot_h - 16 ? py - 8 : py + 12,
                 "τ " + tau_text(p.thresholds[i]), near_right ? "end" : "start", 9.5,
                 " class=\"tau-label\" fill=\"" + series_colour(h) +
                     "\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\"");
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
  std::vector<double> values;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h) {
      const size_t i = size_t(l * H + h);
      const double predicted = p.predicted_error[i], measured = m.holdout_error[i];
      if (!std::isfinite(measured)) continue;
      values.push_back(predicted);
      values.push_back(measured);
      points.push_back({predicted, measured, l,
                        head_tooltip(p, l, h) + ", held-out error " + general(measured, 4)});
    }
  // One axis for both, fitted to the points, so the diagonal is y = x.
  const std::string words = metric_words(p.budget.metric);
  const bool worst = worst_sample_budget(p.budget.metric);
  Axis x =
      fitted_axis(values, std::string(worst ? "worst fit sample: " : "predicted (fit): ") + words);
  Axis y = x;
  y.title = std::string(worst ? "worst held-out sample: " : "held-out: ") + words;
  return scatter_svg("fig-predicted-vs-validated",
                     "Predicted (fit samples) against validated (held-out samples) error per head",
                     x, y, points, true, L);
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

// One head's block map: query blocks down, key blocks across; kept runs of a row are one rect.
std::string block_map_svg(const BlockMap& map, double predicted_density) {
  const double side = 240, left = 44, top = 34;
  const double cw = side / double(std::max<int64_t>(map.key_blocks, 1));
  const double ch = side / double(std::max<int64_t>(map.query_blocks, 1));
  const std::string name =
      "layer " + std::to_string(map.layer) + " head " + std::to_string(map.head);
  Svg svg("fig-block-map-" + std::to_string(map.layer) + "-" + std::to_string(map.head),
          left + side + 12, top + side + 40,
          "Blocks kept by " + name + " at τ " + tau_text(map.tau));
  svg.text(left + side / 2, 13, name, "middle", 12, " font-weight=\"bold\"");
  svg.text(left + side / 2, 27,
           "τ " + tau_text(map.tau) + ", keeps " + fixed(100 * map.density, 1) + " % (predicted " +
               fixed(100 * predicted_density, 1) + " %)",
           "middle", 10.5);
  svg.raw("<g shape-rendering=\"crispEdges\">");
  svg.rect(left, top, side, side, "#ececec", "", " stroke=\"#bbb\" stroke-width=\"0.5\"");
  const char* colour[] = {"", "#ffffff", "#2c6fb6", "#222222"};
  const char* what[] = {"", "dropped", "selected by score", "forced"};
  for (int64_t i = 0; i < map.query_blocks; ++i) {
    const uint8_t* row = map.cells.data() + i * map.key_blocks;
    for (int64_t j = 0; j < map.key_blocks;) {
      int64_t end = j + 1;
      while (end < map.key_blocks && row[end] == row[j]) ++end;
      if (row[j] != kCellNotAllowed) {
        // Tooltips only on kept runs (dropped runs would double the page for nothing).
        const std::string tip = row[j] == kCellDropped
                                    ? ""
                                    : "query block " + std::to_string(i) + ", key blocks " +
                                          std::to_string(j) + "-" + std::to_string(end - 1) + ": " +
                                          what[row[j]];
        svg.rect(left + cw * double(j), top + ch * double(i), cw * double(end - j), ch,
                 colour[row[j]], tip);
      }
      j = end;
    }
  }
  svg.raw("</g>");
  svg.text(left + side / 2, top + side + 14,
           "key block (0 .. " + std::to_string(map.key_blocks - 1) + ")", "middle", 10.5);
  svg.vertical_text(left - 10, top + side / 2,
                    "query block (0 .. " + std::to_string(map.query_blocks - 1) + ")", 10.5);
  return svg.str();
}

std::string block_maps_section(const ProfileReport& r) {
  const BlockMaps& maps = *r.block_maps;
  const Profile& p = r.profile;
  std::ostringstream out;
  out << "<p id=\"block-maps-caption\">Which key blocks each head keeps on one sample: "
      << escape_html(maps.sample)
      << ", at the head's τ, through the runtime's own antidiagonal scoring and block selection. "
         "First row: the sparsest heads (lowest predicted density), second row: the densest. "
         "The forced blocks (sink column, diagonal band"
      << (p.kernel.causal && p.kernel.dense_last_query_block ? ", the last query block row" : "")
      << ") are kept at any τ; vertical stripes are keys many queries need.</p>\n"
      << "<div class=\"legend\"><span><i style=\"background:#222;height:10px\"></i>forced"
      << "</span><span><i style=\"background:#2c6fb6;height:10px\"></i>selected by score</span>"
      << "<span><i style=\"background:#fff;border:1px solid #bbb;height:10px\"></i>dropped</span>"
      << "<span><i style=\"background:#ececec;height:10px\"></i>not allowed (causal)</span>"
      << "</div>\n<div id=\"fig-block-maps\">\n";
  for (bool sparsest : {true, false}) {
    out << "<h3>" << (sparsest ? "Sparsest heads" : "Densest heads")
        << (!sparsest && maps.dense_heads > 0 &&
                    maps.dense_heads < p.model.num_layers * p.model.heads_q
                ? " below τ = 1 (" + std::to_string(maps.dense_heads) +
                      " heads are dense: they keep every allowed block)"
                : "")
        << "</h3>\n"
        << "<div class=\"grid\">\n";
    for (size_t k = 0; k < maps.maps.size(); ++k) {
      if ((int64_t(k) < maps.sparsest) != sparsest) continue;
      const BlockMap& map = maps.maps[k];
      out << figure(
          block_map_svg(map, p.predicted_density[size_t(map.layer * p.model.heads_q + map.head)]),
          "");
    }
    out << "</div>\n";
  }
  out << "</div>\n";
  return out.str();
}

}  // namespace

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

  if (!p.validation.empty()) {
    body << "<h2>Validation</h2>\n<table id=\"validation-table\" class=\"words\">\n"
         << table_row({"quantity", "value", "unit"}, true);
    for (const auto& row : validation_rows(p)) body << table_row(row);
    body << "</table>\n";
  }

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
                 "τ chosen for each head; a lower τ keeps fewer blocks. Colours are spaced by "
                 "-log10(1 - τ) on a fixed scale, so 0.9, 0.99, 0.999 and 0.9999 are equally "
                 "far apart; τ = 1 (dense) has its own colour. Hover a cell for its figures.")
       << figure(density_heatmap(p, "fig-density-heatmap"),
                 "Predicted share of the allowed blocks each head keeps at its τ, in % (100 = "
                 "dense), on a fixed 0-100 % scale. The floor on the legend is the least a head "
                 "can keep at the calibration lengths: the sink and diagonal blocks" +
                     std::string(p.kernel.causal && p.kernel.dense_last_query_block
                                     ? " and the dense last query block."
                                     : ".") +
                     " Cells show values down to 20 px; hover any cell for its figures.");

  std::vector<BarSeries> bars = {{"predicted", "#3b6fb6", {}}};
  for (const auto& s : layers) bars[0].values.push_back(s.density);
  if (holdout) {
    bars.push_back({"held-out", "#e08a2c", {}});
    for (const auto& s : layers) bars[1].values.push_back(s.holdout_density);
  }
  std::vector<ReferenceLine> references = {{"mean", "#333", p.predicted_mean_density}};
  if (p.uniform)
    references.push_back({"uniform τ " + general(p.uniform->tau, 3), "#c00", p.uniform->density});
  if (std::isfinite(profile_floor(p)))
    references.push_back({"floor (sink + diagonal)", "#888", profile_floor(p)});
  body << "<h2>Density per layer</h2>\n"
       << figure(layer_bars_svg("fig-layer-density", "Mean density per layer", "mean density", bars,
                                references),
                 "Mean over the layer's heads of the kept share of blocks; dashed: the overall "
                 "mean and the best single τ under the same budget.");

  body << "<h2>Error against density, per head</h2>\n";
  if (r.measured) {
    const size_t fit = r.measured->fit_samples.size();
    body << "<p id=\"error-curves-caption\">Each line is one head over the τ ladder ("
         << r.measured->taus.size() << " candidates). Density: mean over the " << fit
         << " fit samples, weighted by attention cost. Error: "
         << (worst_sample_budget(p.budget.metric) ? "the worst of the " + std::to_string(fit) +
                                                        " fit samples, as the profile budgets it"
                                                  : "the same cost-weighted mean")
         << ", in " << escape_html(metric_words(p.budget.metric))
         << ". The dot is the τ the profile chose; errors below the bottom axis are drawn on "
            "it.</p>\n"
         << error_curves(r);
  } else {
    body << note("note-no-curves",
                 "Error curves need the statistics the profile was calibrated on: xattn report "
                 "PROFILE --stats FILE.");
  }

  body << "<h2>Predicted against validated error</h2>\n";
  if (holdout) {
    body << figure(predicted_vs_validated(r),
                   "Each marker is a head: predicted from the fit samples (x) against measured "
                   "on the held-out samples (y), a colour and marker per layer. Markers above the "
                   "diagonal did worse than predicted; on log axes, zero errors (dense heads) "
                   "sit on the lower edge.");
  } else {
    body << note("note-no-validation",
                 r.measured ? "No held-out samples: " + r.measured->note + "."
                            : "Validation per head needs the statistics (--stats FILE) of a "
                              "calibration with held-out samples.");
  }

  body << "<h2>Which blocks the heads keep</h2>\n";
  if (r.block_maps && !r.block_maps->maps.empty()) {
    body << block_maps_section(r);
  } else {
    body << note("note-no-block-maps",
                 r.block_maps_note.empty()
                     ? "Block maps need q and k of one sample: xattn report PROFILE --capture "
                       "FILE (a capture of the profile's model, from xattn capture)."
                     : r.block_maps_note);
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

  // What B gains in density against what it costs in accuracy, side by side.
  const bool same_metric = c.a.budget.metric == c.b.budget.metric;
  const auto err_a = to_double(c.a.predicted_error), err_b = to_double(c.b.predicted_error);
  body << "<h2>Density gain and accuracy cost of B against A</h2>\n";
  {
    const double da = c.a.predicted_mean_density, db = c.b.predicted_mean_density;
    std::string summary = "B keeps " + fixed(100 * db, 1) + " % of the allowed blocks, A " +
                          fixed(100 * da, 1) + " % (" + signed_fixed(100 * (db - da), 1) +
                          " points";
    if (da > 0) summary += ", " + fixed(db / da, 2) + "x A's blocks";
    summary += ")";
    if (same_metric)
      summary += "; predicted mean error " + general(c.b.predicted_mean_error, 4) + " against " +
                 general(c.a.predicted_mean_error, 4) + " (" +
                 signed_fixed(c.b.predicted_mean_error - c.a.predicted_mean_error, 6) + ")";
    const auto kl_a = c.a.validation.find("kl_mean"), kl_b = c.b.validation.find("kl_mean");
    if (kl_a != c.a.validation.end() && kl_b != c.b.validation.end())
      summary += "; held-out KL from dense " + general(kl_b->second, 3) + " against " +
                 general(kl_a->second, 3) + " nats / position";
    body << "<p id=\"cost-summary\">" << escape_html(summary + ".") << "</p>\n";
  }
  body << "<table id=\"cost-table\" class=\"words\">\n"
       << table_row({"quantity", "A", "B", "B - A", "unit"}, true)
       << table_row(
              {"predicted mean density (fit samples)", fixed(100 * c.a.predicted_mean_density, 2),
               fixed(100 * c.b.predicted_mean_density, 2),
               signed_fixed(100 * (c.b.predicted_mean_density - c.a.predicted_mean_density), 2),
               "% of allowed blocks (B - A in points)"});
  if (same_metric) {
    body << table_row({"predicted mean error (fit samples)", general(c.a.predicted_mean_error, 4),
                       general(c.b.predicted_mean_error, 4),
                       signed_fixed(c.b.predicted_mean_error - c.a.predicted_mean_error, 6),
                       metric_words(c.a.budget.metric)});
  }
  for (const ValidationField& f : kValidationFields) {
    const auto a = c.a.validation.find(f.key), b = c.b.validation.find(f.key);
    if (a == c.a.validation.end() || b == c.b.validation.end()) continue;
    if (std::string(f.key) == "holdout_mean_error" && !same_metric) continue;
    const double scale = f.percent ? 100 : 1;
    const std::string unit = std::string(f.key) == "holdout_mean_error"
                                 ? metric_words(c.a.budget.metric)
                                 : std::string(f.unit) + (f.percent ? " (B - A in points)" : "");
    body << table_row({f.words, general(scale * a->second, 4), general(scale * b->second, 4),
                       signed_fixed(scale * (b->second - a->second), f.percent ? 2 : 6), unit});
  }
  body << "</table>\n";
  if (!same_metric)
    body << note("note-other-metric", "A budgets " + c.a.budget.metric + ", B " +
                                          c.b.budget.metric +
                                          ": their predicted errors are not comparable.");

  body << "<h2>Per layer</h2>\n<table id=\"layer-table\">\n";
  std::vector<std::string> header = {"layer",     "τ A",       "τ B",     "Δτ",
                                     "density A", "density B", "Δdensity"};
  if (same_metric) header.push_back("Δpredicted error");
  body << table_row(header, true);
  for (int64_t l = 0; l < L; ++l) {
    const double ta = layer_mean(tau_a, l, H), tb = layer_mean(tau_b, l, H);
    const double da = layer_mean(dens_a, l, H), db = layer_mean(dens_b, l, H);
    std::vector<std::string> cells = {std::to_string(l),        fixed(ta, 4), fixed(tb, 4),
                                      signed_fixed(tb - ta, 4), fixed(da, 4), fixed(db, 4),
                                      signed_fixed(db - da, 4)};
    if (same_metric)
      cells.push_back(signed_fixed(layer_mean(err_b, l, H) - layer_mean(err_a, l, H), 6));
    body << table_row(cells);
  }
  body << "</table>\n";

  if (same_metric) {
    std::vector<Point> moves;
    std::vector<double> dx, dy;
    for (int64_t i = 0; i < L * H; ++i) {
      const double x = 100 * (dens_b[i] - dens_a[i]), y = err_b[i] - err_a[i];
      dx.push_back(x), dy.push_back(y);
      moves.push_back({x, y, i / H,
                       "layer " + std::to_string(i / H) + " head " + std::to_string(i % H) +
                           ": density " + signed_fixed(x, 2) + " points, predicted error " +
                           signed_fixed(y, 6) + " (τ " + tau_text(tau_a[i]) + " -> " +
                           tau_text(tau_b[i]) + ")"});
    }
    dx.push_back(0), dy.push_back(0);  // both axes show zero
    body << figure(
        scatter_svg(
            "fig-cost-vs-gain", "Per head: change of density against change of predicted error",
            fitted_axis(dx, "density B - A (points)", false),
            fitted_axis(dy, "predicted error B - A (" + metric_words(c.a.budget.metric) + ")",
                        false),
            moves, false, L),
        "Each marker is a head (a colour and marker per layer). Left of the vertical "
        "line B keeps fewer blocks, above the horizontal line its predicted error is "
        "higher: the upper left holds the heads where B buys density with accuracy.");
  }

  auto diff_heatmap = [&](const std::string& id, const std::string& title,
                          const std::string& legend, const std::vector<double>& a,
                          const std::vector<double>& b) {
    HeatmapSpec spec;
    spec.id = id;
    spec.title = title;
    spec.legend_title = legend;
    spec.layers = L;
    spec.heads = H;
    spec.kind = HeatmapKind::kDifference;
    spec.cell_decimals = 3;
    double largest = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      spec.values.push_back(b[i] - a[i]);
      largest = std::max(largest, std::abs(b[i] - a[i]));
      spec.tooltips.push_back("layer " + std::to_string(int64_t(i) / H) + " head " +
                              std::to_string(int64_t(i) % H) + ": A " + fixed(a[i], 4) + ", B " +
                              fixed(b[i], 4) + ", B - A " + signed_fixed(b[i] - a[i], 4));
    }
    // Fixed: ±0.1 unless a difference is larger (then the next 1-2-5 step), so that two
    // comparisons of close budgets share one scale.
    spec.hi = largest <= 0.1 ? 0.1 : nice_ceiling(largest);
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
    points.push_back({tau_a[i], tau_b[i], i / H,
                      "layer " + std::to_string(i / H) + " head " + std::to_string(i % H) +
                          ": τ A " + fixed(tau_a[i], 4) + ", τ B " + fixed(tau_b[i], 4)});
  Axis tau_axis;
  tau_axis.kind = Axis::kTau;
  tau_axis.title = "τ in A";
  Axis tau_b_axis = tau_axis;
  tau_b_axis.title = "τ in B";
  body << "<h2>Per layer and per head</h2>\n"
       << figure(layer_bars_svg("fig-layer-density-compare", "Mean density per layer, A and B",
                                "mean density", bars, {}),
                 "Mean predicted density of each layer's heads in A and in B.")
       << figure(scatter_svg("fig-tau-scatter", "τ per head, A against B", tau_axis, tau_b_axis,
                             points, true, L),
                 "Each marker is a head, by layer; on the diagonal its τ did not change. Both "
                 "axes are spaced by -log10(1 - τ), so 0.9, 0.99 and 0.999 are equally far "
                 "apart; τ = 1 (dense) is the last tick.");

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

}  // namespace xattn::calibrate
