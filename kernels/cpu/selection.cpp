// CPU reference of block selection with per-head thresholds (XATTENTION.md §2,
// docs/selection-rules.md).
//
// Per (sequence, head, query block), rule "smallest": forced blocks first, then the other allowed
// blocks by descending score (ties: lower key-block index) while the mass taken is below
// threshold * row total; the crossing block is kept. Rule "published" (causal): only the
// diagonal's mass is taken first, the sink competes like the others, one more block in that
// order is kept after the crossing one (when threshold * total > 0), and the sink is kept in any
// case. Sums are float64. With a sliding window the key blocks before the window of the row's
// first query are not allowed: never kept, their mass not in the row total, and the sink is not
// forced when it lies there. The diagonal always is, and so is the key block holding the row
// block's first query (the diagonal too unless a chunk's queries straddle blocks), so every row
// keeps at least its own position.
#include <algorithm>
#include <numeric>
#include <vector>

#include "xattn/error.h"
#include "xattn/kernels/cpu.h"

namespace xattn::kernels::cpu {

void select_blocks(const SelectionParams& params) {
  if (auto error = validate(params); !error.empty()) throw Error(ErrorKind::kInvalidArgument, error);
  const Problem& pr = params.problem;
  const int64_t Bs = params.block_size;
  const int64_t nqb_max = ceil_div(pr.max_len_q, Bs), nkb_max = ceil_div(pr.max_len_k, Bs);
  const int64_t rows = pr.batch * pr.heads_q * nqb_max;

#pragma omp parallel
  {
    std::vector<int32_t> order;
    std::vector<uint8_t> keep(nkb_max);
#pragma omp for schedule(dynamic, 16)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t i = row % nqb_max;
      const int64_t hq = (row / nqb_max) % pr.heads_q;
      const int64_t b = row / (nqb_max * pr.heads_q);
      const BlockGeometry geometry = block_geometry(pr, b, Bs);
      const float* scores = params.block_scores + row * nkb_max;
      std::fill(keep.begin(), keep.end(), uint8_t(0));

      // Allowed key blocks: first .. end - 1 (a sliding window moves `first` past 0).
      const bool real_row = pr.len_q(b) > 0 && i < geometry.num_q_blocks();
      const int64_t first = real_row ? geometry.first_block(i) : 0;
      const int64_t end = real_row ? geometry.end_block(i) : 0;
      const int64_t allowed = end - first;
      const bool last_block_dense = params.dense_last_query_block && pr.causal &&
                                    i == geometry.num_q_blocks() - 1;
      const float threshold = last_block_dense ? 1.f : params.thresholds[hq];
      if (allowed > 0 && threshold >= 1.f) {
        std::fill(keep.begin() + first, keep.begin() + end, uint8_t(1));
      } else if (allowed > 0) {
        double total = 0.0, taken = 0.0;
        for (int64_t j = first; j < end; ++j) total += scores[j];
        auto force = [&](int64_t j) {
          if (!keep[j]) taken += scores[j];
          keep[j] = 1;
        };
        // The published code's forced mask loses the sink (its diagonal write clears column 0),
        // so there only the diagonal's mass counts first; the sink is added back at the end.
        const bool published = params.rule == SelectionRule::kPublished && pr.causal;
        // The sink is kept only while it is inside the window.
        const bool sink = params.keep_sink && first == 0;
        if (sink && !published) force(0);
        if (params.keep_diagonal) {
          force(geometry.diagonal_block(i));
          // With a window the sink no longer guarantees every row a key: the block holding the
          // row block's first query is forced too (the same block when aligned).
          if (pr.window > 0) force(geometry.first_diagonal_block(i));
        }
        const double required = double(threshold) * total;
        order.resize(allowed);
        std::iota(order.begin(), order.end(), int32_t(first));
        std::stable_sort(order.begin(), order.end(),
                         [&](int32_t a, int32_t c) { return scores[a] > scores[c]; });
        // Published: its cumulative sums are laid out for two forced blocks while only one is
        // forced, so each block is tested against the mass taken before the previous one: the
        // block after the crossing one is kept too (the first candidate whenever required > 0).
        int extra = published && required > 0.0 ? 1 : 0;
        for (int32_t j : order) {
          if (keep[j]) continue;
          if (taken >= required) {
            if (extra-- > 0) keep[j] = 1;
            break;
          }
          keep[j] = 1;
          taken += scores[j];
        }
        if (published && sink) keep[0] = 1;
      }

      int32_t count = 0;
      int32_t* index = params.kv_block_index + row * nkb_max;
      for (int64_t j = 0; j < nkb_max; ++j)
        if (keep[j]) index[count++] = int32_t(j);
      std::fill(index + count, index + nkb_max, int32_t(-1));
      params.kv_block_count[row] = count;
      if (params.mask) std::copy(keep.begin(), keep.end(), params.mask + row * nkb_max);
    }
  }
}

}  // namespace xattn::kernels::cpu
