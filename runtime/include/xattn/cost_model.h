// Density-aware dispatch: predicts, per call and per layer, what estimate + sparse attention and
// dense attention will cost, and picks the cheaper one.
//
//   CostTable table = builtin_cost_table("NVIDIA H200");        // or read_cost_table(path)
//   DensityModel density = density_model_of(profile);            // xattn/engine_profile.h
//   DispatchDecision d = decide_dispatch(table, density, layer, CallGeometry{...});
//   d.sparse; d.reason  // "predicted density 46% at 16384: sparse 9.1 ms > dense 7.5 ms"
//
// Where the numbers come from: the built-in H200 table is fitted to the H200 measurements of
// docs/benchmarks.md (bf16, 32 query / 8 KV heads, head_dim 128, causal, block 128, sm_90a
// kernels, cuDNN SDPA dense, 2026-12-01): cuDNN dense 255.5 ms at 128K and 0.93 ms at 8K; our
// sparse kernel 16.5-154.5 ms at 5-50 % density at 128K (about 19 ns per kept 128x128 block per
// head at d 128); scoring + selection 29.0 ms (S = 8) and 15.3 ms (S = 16) at 128K. The fixed
// costs are the intercepts at 4K-8K. The A100 entry is an estimate, not a measurement (dense at
// about 220 TFLOP/s, the sm_80 kernels at their H200 speed scaled by the A100's lower bandwidth
// and tensor throughput, then made 20 % more expensive for sparse), so it leans towards dense.
// scripts/gpu-e2e-speed.sh measures a table on the device (bench/cost_table.cpp) and writes it
// as JSON; DensePolicy::cost_table takes it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace xattn::runtime {

// Per-device costs. Units: a "unit" is one allowed (query, key) pair x one query head x one
// head_dim element (causal attention over L tokens has L (L + 1) / 2 pairs per head).
struct CostTable {
  std::string device;        // e.g. "NVIDIA H200"
  std::string source;        // where the numbers come from
  bool estimate = false;     // true: not measured on such a device
  double dense_ns_per_unit = 0;  // dense attention (cuDNN SDPA)
  double dense_fixed_ms = 0;     // per call
  // Scoring + selection per unit at stride S (2 .. 32); a stride missing from the map uses the
  // nearest one present, scaled by nearest / S.
  std::map<int64_t, double> scoring_ns_per_unit;
  double sparse_ns_per_block_dim = 0;  // block-sparse attention per kept 128x128 block x head_dim
  double sparse_fixed_ms = 0;          // per call: scoring, selection, attention launches and the
                                       // density telemetry
  // Sparse runs only when predicted at least this fraction cheaper than dense: the table's
  // predictions are within about 10 % on the H200 (docs/benchmarks.md), and a layer that only
  // breaks even must not risk a slower prefill. JSON field "min_sparse_gain" (optional).
  double min_sparse_gain = 0.1;

  double scoring_ns_at(int64_t stride) const;
};

// The built-in table for a device name as CUDA reports it ("NVIDIA H200", "NVIDIA A100-SXM4-80GB"):
// H200 / H100 get the measured H200 table, every other device the A100 estimate.
CostTable builtin_cost_table(const std::string& device_name);

// JSON: {"device", "source", "estimate", "dense_ns_per_unit", "dense_fixed_ms",
// "scoring_ns_per_unit": {"8": ..., "16": ...}, "sparse_ns_per_block_dim", "sparse_fixed_ms"}.
// Throws xattn::Error (kIo unreadable, kBadInput naming the missing or bad field).
CostTable read_cost_table(const std::string& path);
std::string cost_table_to_json(const CostTable& table);
// Atomic (temporary file, then rename); replaces an existing file.
void write_cost_table(const std::string& path, const CostTable& table);

// Kept density of each layer as a function of the key length: density(L) = min(1,
// density[layer] * (L / reference_len)^(-exponent[layer])), from the profile's density fit
// (format 1.4). Profiles without a fit give exponent 0: the calibrated density at every length.
struct DensityModel {
  int64_t reference_len = 0;
  std::vector<double> density;   // [layers] in (0, 1]
  std::vector<double> exponent;  // [layers] >= 0 (0: constant)
  bool fitted = false;           // false: no fit in the profile, calibrated density assumed
  double at(int64_t layer, int64_t len_k) const;
};

// One sequence of one call.
struct CallGeometry {
  int64_t len_q = 0;
  int64_t len_k = 0;
  int64_t heads_q = 0;
  int64_t head_dim = 0;
  int64_t block_size = 128;
  int64_t stride = 8;
  bool causal = true;
};

struct DispatchDecision {
  bool sparse = true;
  double density = 1;       // predicted kept density
  double sparse_ms = 0;     // predicted scoring + selection + sparse attention
  double dense_ms = 0;      // predicted dense attention
  std::string reason;       // e.g. "predicted density 46% at 16384: sparse 9.1 ms > dense 7.5 ms"
};

// Allowed (query, key) pairs per head (bottom-right causal: query i sees len_k - len_q + i + 1).
double allowed_pairs(int64_t len_q, int64_t len_k, bool causal);

// Sparse when its predicted cost is below (1 - min_sparse_gain) x dense's; ties run dense.
DispatchDecision decide_dispatch(const CostTable& table, const DensityModel& density,
                                 int64_t layer, const CallGeometry& call);

}  // namespace xattn::runtime
