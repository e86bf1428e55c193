// Block selection on the GPU (XATTENTION.md §2), one warp per (sequence, head, query block).
//
// Same rule as the CPU reference: forced blocks (sink, diagonal) first, then the other allowed
// blocks by descending score, ties by lower index, while the mass taken is below tau * row total,
// the crossing block included. Instead of sorting, the warp finds the crossing score v* by a
// binary search over float bit patterns: v* is the largest v with
//   forced mass + sum of candidate scores >= v  >=  tau * total,
// keeps every candidate above v*, then the tied candidates at v* in ascending index order until
// the threshold is crossed. Sums are float64, as in the reference. No scratch memory.
// With a sliding window (problem.window) only the key blocks first_block .. end_block - 1 of the
// row take part: the blocks before the window are never kept, their mass is not in the row
// total, and the sink is forced only when it is inside the window; the block holding the row
// block's first query is forced beside the diagonal.
//
// Rule "published" (causal; docs/selection-rules.md): the sink is a candidate instead of a forced
// block (kept in any case), and one candidate more is kept after the crossing one when
// tau * total > 0: the next tie at v*, else the lowest-index candidate at the largest score below
// v* (the first candidate when the diagonal alone reaches the threshold).
#include <cuda_runtime.h>

#include <cstdint>

#include "xattn/kernels/params.h"

namespace xattn::kernels::cuda::detail {
namespace {

constexpr int kSelectionWarps = 8;

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__global__ void __launch_bounds__(kSelectionWarps * 32)
    select_blocks_kernel(const SelectionParams params, int64_t n_rows) {
  const int64_t row = int64_t(blockIdx.x) * kSelectionWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= n_rows) return;
  const Problem& pr = params.problem;
  const int64_t bs = params.block_size;
  const int64_t nqb_max = ceil_div(pr.max_len_q, bs), nkb_max = ceil_div(pr.max_len_k, bs);
  const int64_t i = row % nqb_max;
  const int64_t head = (row / nqb_max) % pr.heads_q;
  const int64_t b = row / (nqb_max * pr.heads_q);
  const BlockGeometry geometry = block_geometry(pr, b, bs);
  const float* scores = params.block_scores + row * nkb_max;
  // Allowed key blocks: first .. end - 1 (a sliding window moves `first` past 0).
  const bool real_row = pr.len_q(b) > 0 && i < geometry.num_q_blocks();
  const int64_t first = real_row ? geometry.first_block(i) : 0;
  const int64_t end = real_row ? geometry.end_block(i) : 0;
  const int64_t allowed = end - first;
  const bool last_block_dense =
      params.dense_last_query_block && pr.causal && i == geometry.num_q_blocks() - 1;
  const float tau = last_block_dense ? 1.f : params.thresholds[head];
  const bool published = params.rule == SelectionRule::kPublished && pr.causal;
  // The sink is kept only while it is inside the window.
  const int64_t sink = (params.keep_sink && allowed > 0 && first == 0) ? 0 : -1;
  const int64_t diagonal = (params.keep_diagonal && allowed > 0) ? geometry.diagonal_block(i) : -1;
  // With a window, the block holding the row block's first query is forced too (-1 when it is
  // the diagonal or no window is set).
  const int64_t first_diagonal =
      (diagonal >= 0 && pr.window > 0 && geometry.first_diagonal_block(i) != diagonal)
          ? geometry.first_diagonal_block(i)
          : -1;
  // Blocks whose mass is taken before the candidates; the published rule keeps the sink
  // without counting it there.
  const int64_t forced_sink = published ? -1 : sink;
  auto forced = [&](int64_t j) {
    return j == forced_sink || j == diagonal || j == first_diagonal;
  };

  // keep_mode 0: forced only; 1: every allowed block; 2: candidates > v*, ties by count, and
  // (published) the first `below_kept` candidates at `below` < v*.
  int keep_mode = 1;
  float cut = 0.f, below = 0.f;
  int64_t ties_kept = 0, below_kept = 0;
  if (allowed > 0 && tau < 1.f) {
    double total = 0.0;
    float max_candidate = 0.f;
    for (int64_t j = first + lane; j < end; j += 32) {
      const float s = __ldg(scores + j);
      total += s;
      if (!forced(j)) max_candidate = fmaxf(max_candidate, s);
    }
    total = warp_sum(total);
    max_candidate = warp_max(max_candidate);
    // Under the published rule the sink is a candidate: its mass counts among the candidates'.
    double forced_mass = 0.0;
    if (forced_sink >= 0) forced_mass += __ldg(scores + forced_sink);
    if (diagonal >= 0 && diagonal != forced_sink) forced_mass += __ldg(scores + diagonal);
    if (first_diagonal >= 0 && first_diagonal != forced_sink)
      forced_mass += __ldg(scores + first_diagonal);
    const double required = double(tau) * total;
    // Mass of the candidates scoring at least v (strictly above when `strict`).
    auto mass_from = [&](float v, bool strict) {
      double m = 0.0;
      for (int64_t j = first + lane; j < end; j += 32) {
        const float s = __ldg(scores + j);
        if (!forced(j) && (strict ? s > v : s >= v)) m += s;
      }
      return warp_sum(m);
    };
    // Number of candidates scoring exactly v.
    auto count_at = [&](float v) {
      int64_t n = 0;
      for (int64_t j = first + lane; j < end; j += 32)
        n += (!forced(j) && __ldg(scores + j) == v) ? 1 : 0;
      for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
      return n;
    };
    if (forced_mass >= required) {
      keep_mode = 0;
      if (published && required > 0.0 && count_at(max_candidate) > 0) {
        cut = max_candidate;  // the first candidate: highest score, lowest index
        ties_kept = 1;
        keep_mode = 2;
      }
    } else if (forced_mass + mass_from(0.f, false) < required) {
      keep_mode = 1;  // the threshold is never crossed: the reference takes every candidate
    } else {
      // Largest bit pattern u in [0, bits(max)] with forced + mass(>= float(u)) >= required;
      // non-negative floats order like their bit patterns.
      uint32_t lo = 0, hi = __float_as_uint(max_candidate);
      while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        if (forced_mass + mass_from(__uint_as_float(mid), false) >= required) lo = mid;
        else hi = mid - 1;
      }
      cut = __uint_as_float(lo);
      double taken = forced_mass + mass_from(cut, true);
      const int64_t n_ties = count_at(cut);
      // Ties are taken one by one while the mass is still short, as the reference's loop does.
      while (ties_kept < n_ties && taken < required) {
        taken += cut;
        ++ties_kept;
      }
      keep_mode = 2;
      if (published) {  // one candidate more: the next tie, else the best one below v*
        if (ties_kept < n_ties) {
          ++ties_kept;
        } else {
          float best_below = -1.f;
          for (int64_t j = first + lane; j < end; j += 32) {
            const float s = __ldg(scores + j);
            if (!forced(j) && s < cut) best_below = fmaxf(best_below, s);
          }
          best_below = warp_max(best_below);
          if (best_below >= 0.f) {
            below = best_below;
            below_kept = 1;
          }
        }
      }
    }
  } else if (allowed > 0 && tau >= 1.f) {
    keep_mode = 1;
  }

  // Emit mask, ascending indices and count; -1 pads the index row like the reference.
  int32_t* index = params.kv_block_index + row * nkb_max;
  uint8_t* mask = params.mask ? params.mask + row * nkb_max : nullptr;
  int64_t count = 0, ties_seen = 0, below_seen = 0;
  for (int64_t base = 0; base < nkb_max; base += 32) {
    const int64_t j = base + lane;
    bool keep = false, tie = false, at_below = false;
    if (j >= first && j < end) {
      if (forced(j)) {
        keep = true;
      } else if (keep_mode == 1) {
        keep = true;
      } else if (keep_mode == 2) {
        const float s = __ldg(scores + j);
        keep = s > cut;
        tie = s == cut;
        at_below = below_kept > 0 && s == below;
      }
    }
    const unsigned lower = (1u << lane) - 1u;
    const unsigned tie_bits = __ballot_sync(0xffffffffu, tie);
    if (tie) keep = ties_seen + __popc(tie_bits & lower) < ties_kept;
    ties_seen += __popc(tie_bits);
    const unsigned below_bits = __ballot_sync(0xffffffffu, at_below);
    if (at_below) keep = below_seen + __popc(below_bits & lower) < below_kept;
    below_seen += __popc(below_bits);
    if (j == sink) keep = true;  // the published rule's sink is a candidate, kept in any case
    const unsigned keep_bits = __ballot_sync(0xffffffffu, keep);
    if (keep) index[count + __popc(keep_bits & lower)] = int32_t(j);
    count += __popc(keep_bits);
    if (mask && j < nkb_max) mask[j] = keep ? 1 : 0;
  }
  for (int64_t p = count + lane; p < nkb_max; p += 32) index[p] = -1;
  if (lane == 0) params.kv_block_count[row] = int32_t(count);
}

}  // namespace

cudaError_t launch_select_blocks(const SelectionParams& params, cudaStream_t stream) {
  const Problem& pr = params.problem;
  const int64_t nqb_max = ceil_div(pr.max_len_q, params.block_size);
  const int64_t n_rows = pr.batch * pr.heads_q * nqb_max;
  if (n_rows == 0) return cudaSuccess;
  const unsigned grid = unsigned(ceil_div(n_rows, kSelectionWarps));
  select_blocks_kernel<<<grid, kSelectionWarps * 32, 0, stream>>>(params, n_rows);
  return cudaGetLastError();
}

}  // namespace xattn::kernels::cuda::detail
