// CPU reference of block-sparse attention, dense attention and exact block mass
// (XATTENTION.md §3 and the ground truth of calibration).
//
// Attention walks the kept key blocks of each query block with an online softmax kept in float64;
// dense attention is the same walk over every allowed block. A sliding window (problem.window)
// masks each row's keys before position - window + 1, token by token. Scratch per thread: one query
// block's rows and accumulators (Bs * d float64); per KV head, K and V converted to float32.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "numeric.h"
#include "xattn/error.h"
#include "xattn/kernels/cpu.h"

namespace xattn::kernels::cpu {
namespace {

// Visits (sequence b, kv head, K and V of that head as float32 [len_k, d]) in order; the
// callback runs the query heads of the group.
template <typename Body>
void for_each_kv_head(const Problem& pr, const TensorView& k, const TensorView* v, Body&& body) {
  std::vector<float> k_float, v_float;
  for (int64_t b = 0; b < pr.batch; ++b) {
    const int64_t lk = pr.len_k(b);
    if (pr.len_q(b) == 0 || lk == 0) continue;
    k_float.resize(lk * pr.head_dim);
    if (v) v_float.resize(lk * pr.head_dim);
    for (int64_t hkv = 0; hkv < pr.heads_kv; ++hkv) {
      load_sequence(k, pr.cu_seqlens_k, b, hkv, lk, pr.head_dim, k_float.data());
      if (v) load_sequence(*v, pr.cu_seqlens_k, b, hkv, lk, pr.head_dim, v_float.data());
      body(b, hkv, k_float.data(), v_float.data());
    }
  }
}

}  // namespace

void block_sparse_attention(const AttentionParams& params) {
  if (auto error = validate(params); !error.empty()) throw Error(ErrorKind::kInvalidArgument, error);
  const Problem& pr = params.problem;
  const int64_t Bs = params.block_size, d = pr.head_dim;
  const int64_t nqb_max = ceil_div(pr.max_len_q, Bs), nkb_max = ceil_div(pr.max_len_k, Bs);
  const double neg_inf = -std::numeric_limits<double>::infinity();

  // Rows of a sequence that is absent (varlen) or beyond a sequence's length stay untouched in
  // `out`; their lse is -inf.
  if (params.lse)
    std::fill(params.lse, params.lse + pr.batch * pr.heads_q * pr.max_len_q,
              -std::numeric_limits<float>::infinity());

  for_each_kv_head(pr, params.k, &params.v, [&](int64_t b, int64_t hkv, const float* kf,
                                                const float* vf) {
    const int64_t lq = pr.len_q(b), lk = pr.len_k(b), offset = pr.query_offset(b);
    const BlockGeometry geometry = block_geometry(pr, b, Bs);
    const int64_t nqb = geometry.num_q_blocks();
    const int64_t group = pr.group_size();
#pragma omp parallel
    {
      std::vector<float> q_rows(Bs * d), logits(Bs), out_row(d);
      std::vector<double> acc(Bs * d), row_max(Bs), row_sum(Bs);
      std::vector<int32_t> dense_blocks;
#pragma omp for schedule(dynamic, 1) collapse(2)
      for (int64_t g = 0; g < group; ++g) {
        for (int64_t i = 0; i < nqb; ++i) {
          const int64_t hq = hkv * group + g;
          const int64_t q0 = i * Bs, q1 = std::min(lq, q0 + Bs), n_rows = q1 - q0;
          const int64_t first = geometry.first_block(i), end = geometry.end_block(i);
          const int64_t row_id = (b * pr.heads_q + hq) * nqb_max + i;
          const int32_t* blocks;
          int64_t n_blocks;
          if (params.kv_block_count) {
            blocks = params.kv_block_index + row_id * nkb_max;
            // A count past the row (a caller's bug) reads no further than the row.
            n_blocks = std::min<int64_t>(std::max<int64_t>(params.kv_block_count[row_id], 0), nkb_max);
          } else {
            dense_blocks.resize(end - first);
            for (int64_t j = first; j < end; ++j) dense_blocks[j - first] = int32_t(j);
            blocks = dense_blocks.data();
            n_blocks = end - first;
          }

          const int64_t q_base = sequence_base(pr.cu_seqlens_q, b, hq, params.q.batch_stride,
                                                params.q.head_stride, params.q.token_stride);
          for (int64_t r = 0; r < n_rows; ++r)
            load_row(params.q.data, params.q.dtype, q_base + (q0 + r) * params.q.token_stride, d,
                     q_rows.data() + r * d);
          std::fill(acc.begin(), acc.begin() + n_rows * d, 0.0);
          std::fill(row_max.begin(), row_max.end(), neg_inf);
          std::fill(row_sum.begin(), row_sum.end(), 0.0);

          for (int64_t n = 0; n < n_blocks; ++n) {
            const int64_t j = blocks[n];
            // Outside the causal triangle, the sliding window or the sequence.
            if (j < first || j >= end) continue;
            const int64_t k0 = j * Bs, k1 = std::min(lk, k0 + Bs);
            for (int64_t r = 0; r < n_rows; ++r) {
              const int64_t position = offset + q0 + r;
              const int64_t k_end = pr.causal ? std::min(k1, position + 1) : k1;
              const int64_t k_begin =
                  pr.window > 0 ? std::max(k0, position - pr.window + 1) : k0;
              if (k_end <= k_begin) continue;
              const float* q_row = q_rows.data() + r * d;
              float block_max = -std::numeric_limits<float>::infinity();
              for (int64_t key = k_begin; key < k_end; ++key) {
                logits[key - k0] = params.scale * dot(q_row, kf + key * d, d);
                block_max = std::max(block_max, logits[key - k0]);
              }
              const double new_max = std::max(row_max[r], double(block_max));
              const double rescale = std::exp(row_max[r] - new_max);
              double* a = acc.data() + r * d;
              double sum = row_sum[r] * rescale;
              for (int64_t e = 0; e < d; ++e) a[e] *= rescale;
              for (int64_t key = k_begin; key < k_end; ++key) {
                const double p = std::exp(double(logits[key - k0]) - new_max);
                sum += p;
                const float* v_row = vf + key * d;
                for (int64_t e = 0; e < d; ++e) a[e] += p * v_row[e];
              }
              row_max[r] = new_max;
              row_sum[r] = sum;
            }
          }

          const int64_t out_base = sequence_base(pr.cu_seqlens_q, b, hq, params.out.batch_stride,
                                                  params.out.head_stride, params.out.token_stride);
          for (int64_t r = 0; r < n_rows; ++r) {
            const bool empty = row_sum[r] == 0.0;
            for (int64_t e = 0; e < d; ++e)
              out_row[e] = empty ? 0.f : float(acc[r * d + e] / row_sum[r]);
            store_row(out_row.data(), d, params.out.data, params.out.dtype,
                      out_base + (q0 + r) * params.out.token_stride);
            if (params.lse)
              params.lse[(b * pr.heads_q + hq) * pr.max_len_q + q0 + r] =
                  empty ? -std::numeric_limits<float>::infinity()
                        : float(row_max[r] + std::log(row_sum[r]));
          }
        }
      }
    }
  });
}

void exact_block_mass(const BlockMassParams& params) {
  const Problem& pr = params.problem;
  if (auto error = validate(pr); !error.empty()) throw Error(ErrorKind::kInvalidArgument, error);
  if (!params.q.data || !params.k.data || !params.block_mass)
    throw Error(ErrorKind::kInvalidArgument, "exact_block_mass: q, k and block_mass must be set");
  const int64_t Bs = params.block_size, d = pr.head_dim;
  const int64_t nqb_max = ceil_div(pr.max_len_q, Bs), nkb_max = ceil_div(pr.max_len_k, Bs);
  std::fill(params.block_mass, params.block_mass + pr.batch * pr.heads_q * nqb_max * nkb_max, 0.f);

  for_each_kv_head(pr, params.k, nullptr, [&](int64_t b, int64_t hkv, const float* kf,
                                              const float*) {
    const int64_t lq = pr.len_q(b), lk = pr.len_k(b), offset = pr.query_offset(b);
    const int64_t nqb = ceil_div(lq, Bs);
    const int64_t group = pr.group_size();
#pragma omp parallel
    {
      std::vector<float> q_row(d), logits(lk);
      std::vector<double> mass(nkb_max);
#pragma omp for schedule(dynamic, 1) collapse(2)
      for (int64_t g = 0; g < group; ++g) {
        for (int64_t i = 0; i < nqb; ++i) {
          const int64_t hq = hkv * group + g;
          const int64_t q0 = i * Bs, q1 = std::min(lq, q0 + Bs);
          const int64_t q_base = sequence_base(pr.cu_seqlens_q, b, hq, params.q.batch_stride,
                                                params.q.head_stride, params.q.token_stride);
          std::fill(mass.begin(), mass.end(), 0.0);
          for (int64_t query = q0; query < q1; ++query) {
            load_row(params.q.data, params.q.dtype, q_base + query * params.q.token_stride, d,
                     q_row.data());
            const int64_t n_keys = pr.causal ? std::min(lk, offset + query + 1) : lk;
            const int64_t key0 =
                pr.window > 0 ? std::max<int64_t>(0, offset + query - pr.window + 1) : 0;
            float row_max = -std::numeric_limits<float>::infinity();
            for (int64_t key = key0; key < n_keys; ++key) {
              logits[key] = params.scale * dot(q_row.data(), kf + key * d, d);
              row_max = std::max(row_max, logits[key]);
            }
            double total = 0.0;
            for (int64_t key = key0; key < n_keys; ++key)
              total += std::exp(double(logits[key]) - row_max);
            for (int64_t key = key0; key < n_keys; ++key)
              mass[key / Bs] += std::exp(double(logits[key]) - row_max) / total;
          }
          float* out = params.block_mass + ((b * pr.heads_q + hq) * nqb_max + i) * nkb_max;
          for (int64_t j = 0; j < nkb_max; ++j) out[j] = float(mass[j] / double(q1 - q0));
        }
      }
    }
  });
}

}  // namespace xattn::kernels::cpu
