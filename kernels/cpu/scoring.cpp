// CPU reference of antidiagonal block scoring (XATTENTION.md §1).
//
// For each (sequence, query head) the strided score matrix is computed one chunk of query blocks
// at a time: strided query rows Q~[r] = concat_t q[r*S + S-1-t], strided key rows
// K~[c] = concat_t k[c*S + t] (zero beyond the sequence), logits scale * Q~[r].K~[c] over the
// allowed strided keys, a float64 softmax per row, and the probabilities summed per key block.
// With a sliding window the softmax still runs over every causal strided key; the key blocks
// before the window of the query block's first query are then set to 0 (not allowed), and
// selection measures tau against the mass of the allowed blocks only.
// Scratch memory: K~ of one KV head (len_k * d floats), Q~ of one chunk (chunk * d floats) and,
// per thread, one query block's logits ((Bs/S) * (len_k/S) floats).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "numeric.h"
#include "xattn/error.h"
#include "xattn/kernels/cpu.h"

namespace xattn::kernels::cpu {
namespace {

constexpr int64_t kDefaultChunkQueries = 8192;
constexpr int64_t kKeyTile = 64;  // strided keys per tile: keeps a tile of K~ in L2

// Strided rows of one (sequence, head): row r gathers tokens r*S + S-1-t (queries, reversed) or
// r*S + t (keys) for t = 0..S-1, each head_dim long; tokens outside [0, len) are zero.
void load_strided(const TensorView& view, const int32_t* cu_seqlens, int64_t b, int64_t h,
                  int64_t len, int64_t head_dim, int64_t stride, bool reversed, int64_t row_begin,
                  int64_t row_end, float* out) {
  const int64_t base =
      sequence_base(cu_seqlens, b, h, view.batch_stride, view.head_stride, view.token_stride);
  const int64_t width = stride * head_dim;
#pragma omp parallel for schedule(static)
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* row = out + (r - row_begin) * width;
    for (int64_t t = 0; t < stride; ++t) {
      const int64_t token = r * stride + (reversed ? stride - 1 - t : t);
      float* slot = row + t * head_dim;
      if (token < len)
        load_row(view.data, view.dtype, base + token * view.token_stride, head_dim, slot);
      else
        std::fill(slot, slot + head_dim, 0.f);
    }
  }
}

}  // namespace

void antidiagonal_scores(const ScoringParams& params) {
  if (auto error = validate(params); !error.empty()) throw Error(ErrorKind::kInvalidArgument, error);
  const Problem& pr = params.problem;
  const int64_t S = params.stride, Bs = params.block_size, d = pr.head_dim;
  const int64_t rows_per_block = Bs / S;
  const int64_t width = S * d;
  const int64_t nqb_max = ceil_div(pr.max_len_q, Bs), nkb_max = ceil_div(pr.max_len_k, Bs);
  const int64_t chunk_blocks =
      std::max<int64_t>(1, (params.chunk_len_q > 0 ? params.chunk_len_q : kDefaultChunkQueries) / Bs);
  std::fill(params.block_scores, params.block_scores + pr.batch * pr.heads_q * nqb_max * nkb_max,
            0.f);

  std::vector<float> k_strided, q_strided;
  for (int64_t b = 0; b < pr.batch; ++b) {
    const int64_t lq = pr.len_q(b), lk = pr.len_k(b), offset = pr.query_offset(b);
    if (lq == 0 || lk == 0) continue;
    const int64_t n_rows = ceil_div(lq, S), n_cols = ceil_div(lk, S), nqb = ceil_div(lq, Bs);
    const BlockGeometry geometry = block_geometry(pr, b, Bs);
    k_strided.resize(n_cols * width);
    for (int64_t hkv = 0; hkv < pr.heads_kv; ++hkv) {
      load_strided(params.k, pr.cu_seqlens_k, b, hkv, lk, d, S, false, 0, n_cols, k_strided.data());
      for (int64_t hq = hkv * pr.group_size(); hq < (hkv + 1) * pr.group_size(); ++hq) {
        float* scores_head = params.block_scores + (b * pr.heads_q + hq) * nqb_max * nkb_max;
        for (int64_t chunk_begin = 0; chunk_begin < nqb; chunk_begin += chunk_blocks) {
          const int64_t chunk_end = std::min(nqb, chunk_begin + chunk_blocks);
          const int64_t row_begin = chunk_begin * rows_per_block;
          const int64_t row_end = std::min(n_rows, chunk_end * rows_per_block);
          q_strided.resize((row_end - row_begin) * width);
          load_strided(params.q, pr.cu_seqlens_q, b, hq, lq, d, S, true, row_begin, row_end,
                       q_strided.data());
#pragma omp parallel
          {
            std::vector<float> logits(rows_per_block * n_cols);
            std::vector<double> block_sum(nkb_max);
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = chunk_begin; i < chunk_end; ++i) {
              const int64_t r0 = i * rows_per_block, r1 = std::min(n_rows, r0 + rows_per_block);
              // Last allowed strided key of row r: tile (r, c) is visible iff its first key is
              // not after the row's last query (absolute positions).
              auto last_col = [&](int64_t r) {
                return pr.causal ? std::min(n_cols - 1, (offset + r * S + S - 1) / S) : n_cols - 1;
              };
              for (int64_t c0 = 0; c0 <= last_col(r1 - 1); c0 += kKeyTile) {
                for (int64_t r = r0; r < r1; ++r) {
                  const float* q_row = q_strided.data() + (r - row_begin) * width;
                  const int64_t c_end = std::min(c0 + kKeyTile, last_col(r) + 1);
                  float* out = logits.data() + (r - r0) * n_cols;
                  for (int64_t c = c0; c < c_end; ++c)
                    out[c] = params.scale * dot(q_row, k_strided.data() + c * width, width);
                }
              }
              std::fill(block_sum.begin(), block_sum.end(), 0.0);
              for (int64_t r = r0; r < r1; ++r) {
                float* row = logits.data() + (r - r0) * n_cols;
                const int64_t n = last_col(r) + 1;
                const float row_max = *std::max_element(row, row + n);
                double total = 0.0;
                for (int64_t c = 0; c < n; ++c) {
                  row[c] = std::exp(row[c] - row_max);
                  total += row[c];
                }
                for (int64_t c = 0; c < n; ++c) block_sum[c / rows_per_block] += row[c] / total;
              }
              // Sliding window: blocks before the window of the block's first query are not
              // allowed and carry no mass (the softmax above stays over the causal keys, so the
              // CUDA kernels score exactly the same way and drop those blocks afterwards).
              const int64_t first = geometry.first_block(i);
              float* out = scores_head + i * nkb_max;
              for (int64_t j = 0; j < nkb_max; ++j) out[j] = j < first ? 0.f : float(block_sum[j]);
            }
          }
        }
      }
    }
  }
}

}  // namespace xattn::kernels::cpu
