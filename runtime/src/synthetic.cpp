// Synthetic captures with planted attention structures (see synthetic.h for the construction).
// Deterministic on every platform: a splitmix64 stream and Box-Muller, no std distributions.
#include "xattn/synthetic.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "xattn/error.h"

namespace xattn::runtime {

namespace {

// Target logits (after the 1/sqrt(head_dim) scale).
constexpr double kSinkLogit = 12.0;      // sink heads, key 0 (keys 1..7 get 3/4 of it)
constexpr double kRampSlope = 1.0 / 16;  // local heads: logit gain per token toward the query
constexpr double kLocalSinkBonus = 1.0;  // local heads: sink key vs the diagonal key
constexpr double kStripeLogit = 11.0;
constexpr double kSlashPeak = 15.0;
constexpr int64_t kSinkSpan = 8;      // key 0 and a few first tokens attract every query
constexpr int64_t kSlashWidth = 4;    // diagonals i - j = D .. D + 3
constexpr int64_t kMaxStripeRun = 4;  // a stripe is a run of 1..4 consecutive keys
constexpr double kNeedleLogit = 10.0;
constexpr double kNoiseStd = 0.5;
constexpr double kDiffuseNoiseStd = 1.0;
// Secondary sinks of the other heads.
constexpr double kStripesSink = 5.0;
constexpr double kSlashSink = 4.0;
constexpr double kRetrievalSink = 3.0;
constexpr double kDiffuseSink = 3.0;

// Feature layout of q and k along head_dim.
constexpr int64_t kSinkDim = 0;
constexpr int64_t kRampDim = 1;  // three base-64 digits of the key position: exact in fp16/bf16
constexpr int64_t kStripeDim = 4;
constexpr int64_t kNeedleDim = 5;
constexpr int64_t kRotaryDim = 6;

constexpr PlantedStructure kCycle[] = {PlantedStructure::kSink,      PlantedStructure::kLocal,
                                       PlantedStructure::kStripes,   PlantedStructure::kSlash,
                                       PlantedStructure::kRetrieval, PlantedStructure::kDiffuse};

// Random stream tags, so that each quantity has its own reproducible stream.
enum Tag : uint64_t {
  kFreqTag = 1,
  kStripeTag,
  kSlashTag,
  kNeedleTag,
  kKeyTag,
  kQueryTag,
  kValueTag
};

uint64_t splitmix(uint64_t& state) {
  state += 0x9E3779B97F4A7C15ull;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  Rng(uint64_t seed, std::initializer_list<uint64_t> tags) : state_(seed) {
    for (uint64_t t : tags) {
      state_ ^= t + 0x632BE59BD9B4E019ull;
      splitmix(state_);
    }
  }
  double uniform() { return static_cast<double>(splitmix(state_) >> 11) * 0x1.0p-53; }
  int64_t between(int64_t lo, int64_t hi) {  // inclusive
    return lo + static_cast<int64_t>(splitmix(state_) % static_cast<uint64_t>(hi - lo + 1));
  }
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2 * M_PI * u2);
    has_spare_ = true;
    return r * std::cos(2 * M_PI * u2);
  }

 private:
  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0;
};

int64_t noise_dims(int64_t head_dim) { return std::max<int64_t>(4, head_dim / 8); }
int64_t rotary_pairs(int64_t head_dim) {
  return (head_dim - kRotaryDim - noise_dims(head_dim)) / 2;
}

std::vector<double> rotary_frequencies(const SyntheticOptions& o, int64_t layer) {
  Rng rng(o.seed, {kFreqTag, static_cast<uint64_t>(layer)});
  std::vector<double> w(static_cast<size_t>(rotary_pairs(o.head_dim)));
  // High frequencies only: a sharp one-token peak and low side lobes.
  for (double& x : w) x = 0.25 + rng.uniform() * (M_PI - 0.25);
  return w;
}

}  // namespace

const char* structure_name(PlantedStructure structure) {
  switch (structure) {
    case PlantedStructure::kSink:
      return "sink";
    case PlantedStructure::kLocal:
      return "local";
    case PlantedStructure::kStripes:
      return "stripes";
    case PlantedStructure::kSlash:
      return "slash";
    case PlantedStructure::kRetrieval:
      return "retrieval";
    case PlantedStructure::kDiffuse:
      return "diffuse";
  }
  return "unknown";
}

void validate_synthetic_options(const SyntheticOptions& o) {
  XATTN_CHECK_ARG(o.num_layers >= 1, "--layers must be >= 1, got ", o.num_layers);
  XATTN_CHECK_ARG(o.heads_kv >= 1 && o.heads_q >= o.heads_kv && o.heads_q % o.heads_kv == 0,
                  "--heads-q (", o.heads_q, ") must be a positive multiple of --heads-kv (",
                  o.heads_kv, ")");
  XATTN_CHECK_ARG(o.head_dim >= 32 && o.head_dim % 2 == 0, "--head-dim must be even and >= 32",
                  " (room for the planted features), got ", o.head_dim);
  XATTN_CHECK_ARG(o.len >= 64, "--len must be >= 64, got ", o.len);
  XATTN_CHECK_ARG(o.len < (int64_t(1) << 18), "--len must be < 262144, got ", o.len);
  XATTN_CHECK_ARG(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
  XATTN_CHECK_ARG(o.dtype == at::kFloat || o.dtype == at::kHalf || o.dtype == at::kBFloat16,
                  "--dtype must be float32, float16 or bfloat16");
  XATTN_CHECK_ARG(o.item_lengths.empty() || static_cast<int64_t>(o.item_lengths.size()) == o.batch,
                  "item_lengths has ", o.item_lengths.size(), " entries for batch ", o.batch);
  for (int64_t n : o.item_lengths) {
    XATTN_CHECK_ARG(n >= 64 && n <= o.len, "item length ", n, " must be in [64, len = ", o.len,
                    "]");
  }
}

SyntheticLayout synthetic_layout(const SyntheticOptions& o) {
  validate_synthetic_options(o);
  SyntheticLayout layout;
  layout.item_lengths = o.item_lengths.empty()
                            ? std::vector<int64_t>(static_cast<size_t>(o.batch), o.len)
                            : o.item_lengths;
  layout.needle_length = std::clamp<int64_t>(o.len / 64, 8, 64);
  layout.slash_width = kSlashWidth;
  layout.sink_span = kSinkSpan;
  for (int64_t b = 0; b < o.batch; ++b) {
    const int64_t n = layout.item_lengths[b];
    Rng rng(o.seed, {kNeedleTag, static_cast<uint64_t>(b)});
    layout.needle_begin.push_back(rng.between(n / 16, n / 4));
    layout.retrieval_query_begin.push_back(n - n / 8);
  }
  const int64_t num_stripes = std::clamp<int64_t>(o.len / 256, 2, 16);
  const size_t num_structures = sizeof(kCycle) / sizeof(kCycle[0]);
  for (int64_t l = 0; l < o.num_layers; ++l) {
    std::vector<PlantedStructure> structure;
    std::vector<int64_t> offsets;
    for (int64_t h = 0; h < o.heads_q; ++h) {
      const PlantedStructure s = kCycle[static_cast<size_t>(h + 3 * l) % num_structures];
      structure.push_back(s);
      int64_t offset = -1;
      if (s == PlantedStructure::kSlash) {
        Rng rng(o.seed, {kSlashTag, static_cast<uint64_t>(l), static_cast<uint64_t>(h)});
        offset = rng.between(std::max<int64_t>(16, o.len / 32), o.len / 2);
      }
      offsets.push_back(offset);
    }
    layout.structure.push_back(structure);
    layout.slash_offset.push_back(offsets);
    std::vector<std::vector<int64_t>> stripes;
    for (int64_t g = 0; g < o.heads_kv; ++g) {
      Rng rng(o.seed, {kStripeTag, static_cast<uint64_t>(l), static_cast<uint64_t>(g)});
      std::set<int64_t> positions;
      for (int64_t r = 0; r < num_stripes; ++r) {
        const int64_t start = rng.between(16, o.len - 16 - kMaxStripeRun);
        const int64_t run = rng.between(1, kMaxStripeRun);
        for (int64_t t = 0; t < run; ++t) positions.insert(start + t);
      }
      stripes.emplace_back(positions.begin(), positions.end());
    }
    layout.stripe_positions.push_back(stripes);
  }
  return layout;
}

io::CaptureInfo synthetic_capture_info(const SyntheticOptions& o, const SyntheticLayout& layout) {
  io::CaptureInfo info;
  info.model_name = "synthetic-structured";
  info.source = "synthetic";
  info.dtype = o.dtype;
  info.num_layers = o.num_layers;
  info.heads_q = o.heads_q;
  info.heads_kv = o.heads_kv;
  info.head_dim = o.head_dim;
  info.causal = true;
  info.has_v = o.with_v;
  info.len_q = layout.item_lengths;
  info.len_k = layout.item_lengths;
  info.padded_len_q = o.len;
  info.padded_len_k = o.len;

  std::ostringstream d;
  d << "SYNTHETIC capture, not from a model: q/k/v generated by `xattn synth` (seed " << o.seed
    << ") with planted attention structures, one dominant structure per query head plus a "
       "weaker sink (docs/capture-format.md, 'Synthetic captures').";
  for (int64_t l = 0; l < o.num_layers; ++l) {
    d << " Layer " << l << ":";
    for (int64_t h = 0; h < o.heads_q; ++h) {
      d << (h ? "," : "") << " h" << h << " " << structure_name(layout.structure[l][h]);
      if (layout.slash_offset[l][h] >= 0) {
        d << " (offsets " << layout.slash_offset[l][h] << ".."
          << layout.slash_offset[l][h] + kSlashWidth - 1 << ")";
      }
    }
    d << "; stripe keys";
    for (int64_t g = 0; g < o.heads_kv; ++g) {
      d << (g ? "," : "") << " kv" << g << " [";
      const auto& p = layout.stripe_positions[l][g];
      for (size_t i = 0; i < p.size(); ++i) d << (i ? " " : "") << p[i];
      d << "]";
    }
    d << ".";
  }
  d << " Needle (retrieval heads):";
  for (int64_t b = 0; b < o.batch; ++b) {
    d << (b ? ";" : "") << " item " << b << " keys " << layout.needle_begin[b] << ".."
      << layout.needle_begin[b] + layout.needle_length - 1
      << " for queries >= " << layout.retrieval_query_begin[b];
  }
  d << ".";
  info.description = d.str();
  return info;
}

io::CaptureLayer make_synthetic_layer(const SyntheticOptions& o, const SyntheticLayout& layout,
                                      int64_t layer) {
  XATTN_CHECK_ARG(layer >= 0 && layer < o.num_layers, "layer ", layer, " outside [0, ",
                  o.num_layers, ")");
  const int64_t d = o.head_dim;
  const int64_t L = o.len;
  const int64_t pairs = rotary_pairs(d);
  const int64_t noise_begin = kRotaryDim + 2 * pairs;
  const int64_t num_noise = d - noise_begin;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const std::vector<double> freq = rotary_frequencies(o, layer);
  const auto opts = at::TensorOptions().dtype(o.dtype);

  io::CaptureLayer out;
  out.q = at::zeros({o.batch, o.heads_q, L, d}, opts);
  out.k = at::zeros({o.batch, o.heads_kv, L, d}, opts);
  if (o.with_v) out.v = at::zeros({o.batch, o.heads_kv, L, d}, opts);
  std::vector<float> rows(static_cast<size_t>(L * d));
  // Copies the float rows of the first n tokens into one [L, d] slice (the rest stays zero).
  auto store = [&](at::Tensor slice, int64_t n) {
    at::Tensor src = at::from_blob(rows.data(), {n, d}, at::kFloat);
    slice.narrow(0, 0, n).copy_(src);
  };

  for (int64_t b = 0; b < o.batch; ++b) {
    const int64_t n = layout.item_lengths[b];
    const int64_t needle_begin = layout.needle_begin[b];
    const int64_t needle_end = needle_begin + layout.needle_length;
    for (int64_t g = 0; g < o.heads_kv; ++g) {
      const std::vector<int64_t>& stripes = layout.stripe_positions[layer][g];
      Rng rng(o.seed, {kKeyTag, static_cast<uint64_t>(layer), static_cast<uint64_t>(b),
                       static_cast<uint64_t>(g)});
      std::fill(rows.begin(), rows.end(), 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        float* k = rows.data() + j * d;
        k[kSinkDim] = j == 0 ? 1.0f : (j < kSinkSpan ? 0.75f : 0.0f);
        k[kRampDim + 0] = static_cast<float>(j / 4096);
        k[kRampDim + 1] = static_cast<float>((j / 64) % 64);
        k[kRampDim + 2] = static_cast<float>(j % 64);
        k[kStripeDim] = std::binary_search(stripes.begin(), stripes.end(), j) ? 1.0f : 0.0f;
        k[kNeedleDim] = (j >= needle_begin && j < needle_end) ? 1.0f : 0.0f;
        for (int64_t m = 0; m < pairs; ++m) {
          k[kRotaryDim + 2 * m] = static_cast<float>(std::cos(freq[m] * j));
          k[kRotaryDim + 2 * m + 1] = static_cast<float>(std::sin(freq[m] * j));
        }
        for (int64_t c = noise_begin; c < d; ++c) k[c] = static_cast<float>(rng.normal());
      }
      store(out.k[b][g], n);
      if (o.with_v) {
        Rng vrng(o.seed, {kValueTag, static_cast<uint64_t>(layer), static_cast<uint64_t>(b),
                          static_cast<uint64_t>(g)});
        for (int64_t j = 0; j < n; ++j) {
          for (int64_t c = 0; c < d; ++c) rows[j * d + c] = static_cast<float>(vrng.normal());
        }
        store(out.v[b][g], n);
      }
    }

    for (int64_t h = 0; h < o.heads_q; ++h) {
      const PlantedStructure s = layout.structure[layer][h];
      const int64_t offset = layout.slash_offset[layer][h];
      Rng rng(o.seed, {kQueryTag, static_cast<uint64_t>(layer), static_cast<uint64_t>(b),
                       static_cast<uint64_t>(h)});
      const double noise_std = s == PlantedStructure::kDiffuse ? kDiffuseNoiseStd : kNoiseStd;
      // Noise logit std = scale * sigma * sqrt(num_noise) with unit-normal key features.
      const double sigma = noise_std / (scale * std::sqrt(static_cast<double>(num_noise)));
      const double slash_amplitude = kSlashPeak / static_cast<double>(pairs);
      std::fill(rows.begin(), rows.end(), 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        float* q = rows.data() + i * d;
        double sink = 0, ramp = 0, stripe = 0, needle = 0, slash = 0;
        switch (s) {
          case PlantedStructure::kSink:
            sink = kSinkLogit;
            break;
          case PlantedStructure::kLocal:
            ramp = kRampSlope;
            sink = kRampSlope * i + kLocalSinkBonus;  // the sink competes with the diagonal
            break;
          case PlantedStructure::kStripes:
            stripe = kStripeLogit;
            sink = kStripesSink;
            break;
          case PlantedStructure::kSlash:
            slash = slash_amplitude;
            sink = kSlashSink;
            break;
          case PlantedStructure::kRetrieval:
            if (i >= layout.retrieval_query_begin[b]) {
              needle = kNeedleLogit;
              sink = kRetrievalSink;
            } else {
              ramp = kRampSlope;
              sink = kRampSlope * i + kLocalSinkBonus;
            }
            break;
          case PlantedStructure::kDiffuse:
            sink = kDiffuseSink;
            break;
        }
        q[kSinkDim] = static_cast<float>(sink / scale);
        q[kRampDim + 0] = static_cast<float>(ramp * 4096 / scale);
        q[kRampDim + 1] = static_cast<float>(ramp * 64 / scale);
        q[kRampDim + 2] = static_cast<float>(ramp / scale);
        q[kStripeDim] = static_cast<float>(stripe / scale);
        q[kNeedleDim] = static_cast<float>(needle / scale);
        if (slash != 0) {
          for (int64_t m = 0; m < pairs; ++m) {
            double cos_sum = 0, sin_sum = 0;
            for (int64_t u = 0; u < kSlashWidth; ++u) {
              const double phase = freq[m] * static_cast<double>(i - offset - u);
              cos_sum += std::cos(phase);
              sin_sum += std::sin(phase);
            }
            q[kRotaryDim + 2 * m] = static_cast<float>(slash / scale * cos_sum);
            q[kRotaryDim + 2 * m + 1] = static_cast<float>(slash / scale * sin_sum);
          }
        }
        for (int64_t c = noise_begin; c < d; ++c) q[c] = static_cast<float>(sigma * rng.normal());
      }
      store(out.q[b][h], n);
    }
  }
  return out;
}

void write_synthetic_capture(const std::string& path, const SyntheticOptions& options,
                             const io::OutputOptions& output) {
  const SyntheticLayout layout = synthetic_layout(options);
  io::CaptureWriter writer(path, synthetic_capture_info(options, layout), output);
  for (int64_t l = 0; l < options.num_layers; ++l) {
    const io::CaptureLayer layer = make_synthetic_layer(options, layout, l);
    writer.write_layer(l, layer.q, layer.k, layer.v);
  }
  writer.commit();
}

}  // namespace xattn::runtime
