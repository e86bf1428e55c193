// Antidiagonal block scoring on tensor cores (XATTENTION.md §1 and §7).
//
// The strided score matrix is a GEMM of shape (Lq/S) x (Lk/S) x (S*d): strided query row r is
// concat_t q[r*S + S-1-t], strided key row c is concat_t k[c*S + t]. Each k-step of the GEMM
// (one t, 64 columns of head_dim) gathers its rows straight from q and k with cp.async (tokens
// past the sequence are zero), so no reshaped copy exists.
//
// One pass over the keys: a CTA owns 128 strided query rows and sweeps 128-column key tiles. For
// every (row, key block) it writes the block's log2-sum-exp to a scratch buffer and keeps the
// row's running max and sum. At the end the CTA knows each row's total, re-reads its own scratch
// rows (L2-resident) and sums exp2(block_lse - row_lse) over the rows of each query block, which
// is the block score. Scratch: 4 bytes per (strided row, key block) of one query chunk, i.e.
// Bs/S times smaller than the strided score matrix; the launcher walks queries in chunks.
// Shared memory: 3 stages x (128 + 128) rows x 64 elements x 2 bytes = 96 KiB; two CTAs per SM.
#pragma once

#include "device_common.cuh"
#include "launchers.h"
#include "xattn/kernels/params.h"

namespace xattn::kernels::cuda::detail {

// kMTiles: m16 row tiles per warp. 8 warps = 4 along rows x 2 along columns (64 each), so a CTA
// owns 64 * kMTiles strided rows: 2 -> 128 rows (two CTAs per SM, shipped), 4 -> 256 rows (one
// CTA per SM; measured slower).
template <int kMTiles>
struct ScoringTile {
  static constexpr int kRows = 64 * kMTiles;  // strided query rows per CTA
  static constexpr int kCols = 128;           // strided key columns per tile
  static constexpr int kDepth = 64;           // head_dim elements per k-step
  static constexpr int kStages = 3;
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStageElems = (kRows + kCols) * kDepth;
  static constexpr int kSmemBytes = kStages * kStageElems * 2;
  static constexpr int kMinBlocks = kMTiles == 2 ? 2 : 1;
};

// Per launch: rows [row_begin, row_begin + gridDim.y * 128) of every (sequence, head).
struct ScoringLaunch {
  ScoringParams params;
  int64_t row_begin;   // first strided row of this chunk
  int64_t chunk_rows;  // rows of scratch per (sequence, head)
  float* scratch;      // [batch, heads_q, chunk_rows, nkb_max] log2-sum-exp per key block
};

// One strided row's 64 columns of a tile (this thread holds 2 of every 8, quad-shared row):
// per key block of kTilesPerBlock n8 tiles, write the block's log2-sum-exp and fold it into the
// row's running max and sum. Values are log2-domain logits, -inf where masked.
// exp2 for the block sums: the approximate flush-to-zero instruction where the caller allows it
// (one MUFU op instead of four instructions with the denormal range fix-up).
template <bool kApprox>
__device__ __forceinline__ float block_exp2(float x) {
  if constexpr (kApprox) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
  } else {
    return exp2f(x);
  }
}

template <int kTilesPerBlock, bool kApproxExp2 = false>
__device__ __forceinline__ void row_block_epilogue(const float (&x)[8][2], int64_t j0,
                                                   int64_t nkb_max, int t4, float* scratch_row,
                                                   float& run_max, float& run_sum) {
#pragma unroll
  for (int nb = 0; nb < 8 / kTilesPerBlock; ++nb) {
    float block_max = -INFINITY;
#pragma unroll
    for (int n = nb * kTilesPerBlock; n < (nb + 1) * kTilesPerBlock; ++n)
      block_max = fmaxf(block_max, fmaxf(x[n][0], x[n][1]));
    block_max = quad_max(block_max);
    float block_sum = 0.f;
    if (block_max != -INFINITY) {
#pragma unroll
      for (int n = nb * kTilesPerBlock; n < (nb + 1) * kTilesPerBlock; ++n)
        block_sum += block_exp2<kApproxExp2>(x[n][0] - block_max) +
                     block_exp2<kApproxExp2>(x[n][1] - block_max);
    }
    block_sum = quad_sum(block_sum);
    if (block_max != -INFINITY) {
      const float new_max = fmaxf(run_max, block_max);
      run_sum = run_sum * block_exp2<kApproxExp2>(run_max - new_max) +
                block_sum * block_exp2<kApproxExp2>(block_max - new_max);
      run_max = new_max;
    }
    const int64_t j = j0 + nb;
    if (t4 == (nb & 3) && scratch_row && j < nkb_max)
      scratch_row[j] = block_max == -INFINITY ? -INFINITY : block_max + __log2f(block_sum);
  }
}

// What one scoring CTA covers (shared by the sm_80 and sm_90a kernels): strided rows
// [r0, r0 + rows_here) of one (sequence, query head) and key columns 0 .. last_col. CTAs are
// launched with the last rows first (causal: later rows see more keys).
struct ScoringCta {
  int head, batch, kv_head;
  int64_t S, len_q, len_k, n_rows, n_cols, r0, rows_here, offset, cols_per_block, nkb_max,
      nqb_max, last_col;
  bool empty;  // past the sequence's rows, or no keys
};

__device__ __forceinline__ ScoringCta scoring_cta(const ScoringLaunch& launch, int rows_per_cta) {
  const ScoringParams& params = launch.params;
  const Problem& pr = params.problem;
  ScoringCta c;
  c.head = blockIdx.x;
  c.batch = blockIdx.z;
  c.kv_head = c.head / int(pr.heads_q / pr.heads_kv);
  c.S = params.stride;
  c.len_q = pr.len_q(c.batch);
  c.len_k = pr.len_k(c.batch);
  c.n_rows = ceil_div(c.len_q, c.S);
  c.n_cols = ceil_div(c.len_k, c.S);
  c.r0 = launch.row_begin + int64_t(gridDim.y - 1 - blockIdx.y) * rows_per_cta;
  c.empty = c.r0 >= c.n_rows || c.len_k == 0;
  c.rows_here = c.n_rows - c.r0 < rows_per_cta ? c.n_rows - c.r0 : rows_per_cta;
  c.offset = c.len_k - c.len_q;
  c.cols_per_block = params.block_size / c.S;
  c.nkb_max = ceil_div(pr.max_len_k, int64_t(params.block_size));
  c.nqb_max = ceil_div(pr.max_len_q, int64_t(params.block_size));
  c.last_col = pr.causal
                   ? min(c.n_cols - 1, (c.offset + (c.r0 + c.rows_here - 1) * c.S + c.S - 1) / c.S)
                   : c.n_cols - 1;
  return c;
}

// The CTA's block scores from its scratch rows (block log2-sum-exp) and row_lse (each row's
// log2-sum-exp, +inf for a row that contributes nothing): for each query block, the sum over its
// strided rows of exp2(block_lse - row_lse). Threads `thread` of `threads` stride the key blocks.
__device__ __forceinline__ void write_block_scores(const ScoringParams& params,
                                                   const ScoringCta& c, const float* scratch,
                                                   const float* row_lse, int64_t n_blocks_seen,
                                                   int thread, int threads) {
  float* scores_head = params.block_scores +
                       (int64_t(c.batch) * params.problem.heads_q + c.head) * c.nqb_max * c.nkb_max;
  for (int64_t qb_row0 = 0; qb_row0 < c.rows_here; qb_row0 += c.cols_per_block) {
    const int64_t i = (c.r0 + qb_row0) / c.cols_per_block;
    const int64_t row_end = min(c.rows_here, qb_row0 + c.cols_per_block);
    for (int64_t j = thread; j < n_blocks_seen; j += threads) {
      float sum = 0.f;
      for (int64_t row = qb_row0; row < row_end; ++row)
        sum += exp2f(scratch[row * c.nkb_max + j] - row_lse[row]);
      scores_head[i * c.nkb_max + j] = sum;
    }
  }
}

template <typename T, int kHeadDim, int kMTiles>
__global__ void __launch_bounds__(ScoringTile<kMTiles>::kThreads, ScoringTile<kMTiles>::kMinBlocks)
    antidiagonal_scoring_kernel(const ScoringLaunch launch) {
  using Tile = ScoringTile<kMTiles>;
  using Traits = ElementTraits<T>;
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols, kDepth = Tile::kDepth;
  constexpr int kDepthChunks = kHeadDim / kDepth;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  __shared__ float row_lse[kRows];

  const ScoringParams& params = launch.params;
  const Problem& pr = params.problem;
  const ScoringCta cta = scoring_cta(launch, kRows);
  if (cta.empty) return;
  const int head = cta.head, batch = cta.batch, kv_head = cta.kv_head;
  const int64_t S = cta.S, len_q = cta.len_q, len_k = cta.len_k, n_cols = cta.n_cols;
  const int64_t r0 = cta.r0, rows_here = cta.rows_here, offset = cta.offset;
  const int64_t cols_per_block = cta.cols_per_block, nkb_max = cta.nkb_max;
  const int n_tiles = int(cta.last_col / kCols + 1);
  const int total_steps = n_tiles * int(S) * kDepthChunks;

  const T* q_base = static_cast<const T*>(params.q.data) +
                    sequence_base(pr.cu_seqlens_q, batch, head, params.q.batch_stride,
                                  params.q.head_stride, params.q.token_stride);
  const T* k_base = static_cast<const T*>(params.k.data) +
                    sequence_base(pr.cu_seqlens_k, batch, kv_head, params.k.batch_stride,
                                  params.k.head_stride, params.k.token_stride);
  float* scratch = launch.scratch +
                   ((int64_t(batch) * pr.heads_q + head) * launch.chunk_rows +
                    (r0 - launch.row_begin)) * nkb_max;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int warp_row = (warp & 3) * 16 * kMTiles, warp_col = (warp >> 2) * 64;
  const int g = lane >> 2, t4 = lane & 3;

  // Step = (key tile, t, depth chunk); rows are gathered from q and k. Thread tid copies 16-byte
  // chunk (tid & 7) of rows tid / 8 + kRowsPerPass * i, so its gather addresses are a per-thread
  // base plus i * (a fixed stride) plus a per-step delta: the k-loop adds, it never multiplies.
  constexpr int kRowsPerPass = Tile::kThreads / 8;
  static_assert(kRows % kRowsPerPass == 0 && kCols % kRowsPerPass == 0, "whole load passes");
  const int chunk = tid & 7, pass_row = tid >> 3;
  const int64_t q_stride = params.q.token_stride, k_stride = params.k.token_stride;
  const int pass_tokens = kRowsPerPass * int(S);  // token distance between a thread's rows
  // q: strided row r gathers token r*S + S-1-t. Row pass_row + i*kRowsPerPass at t loads when
  // i*pass_tokens - t < q_room; rows past n_rows fail this too (their tokens are >= len_q).
  const int64_t q_token0 = (r0 + pass_row) * S + S - 1;
  const int q_room = int(min(len_q - q_token0, int64_t(INT_MAX / 2)));
  const T* q_thread = q_base + q_token0 * q_stride + chunk * 8;
  // k: strided column c of key tile `tile` gathers token (tile*kCols + c)*S + t.
  const int k_room = int(min(len_k - int64_t(pass_row) * S, int64_t(INT_MAX / 2)));
  const T* k_thread = k_base + int64_t(pass_row) * S * k_stride + chunk * 8;
  auto load_step = [&](int step) {
    const int tile = step / (int(S) * kDepthChunks);
    const int rem = step % (int(S) * kDepthChunks);
    const int t = rem / kDepthChunks, dc = rem % kDepthChunks;
    T* a_dst = smem + (step % Tile::kStages) * Tile::kStageElems;
    T* b_dst = a_dst + kRows * kDepth;
    const T* q_src = q_thread + (dc * kDepth - t * q_stride);
    const int64_t q_pass_elems = int64_t(pass_tokens) * q_stride;
#pragma unroll 1
    for (int i = 0; i < kRows / kRowsPerPass; ++i, q_src += q_pass_elems) {
      const bool valid = i * pass_tokens - t < q_room;
      cp_async_16(smem_address(a_dst + swizzled<kDepth>(pass_row + i * kRowsPerPass, chunk)),
                  valid ? q_src : q_base, valid);
    }
    const int k_tile_token = tile * kCols * int(S) + t;  // < len_k + kCols * S
    const T* k_src = k_thread + (int64_t(k_tile_token) * k_stride + dc * kDepth);
    const int64_t k_pass_elems = int64_t(pass_tokens) * k_stride;
#pragma unroll 1
    for (int i = 0; i < kCols / kRowsPerPass; ++i, k_src += k_pass_elems) {
      const bool valid = k_tile_token + i * pass_tokens < k_room;
      cp_async_16(smem_address(b_dst + swizzled<kDepth>(pass_row + i * kRowsPerPass, chunk)),
                  valid ? k_src : k_base, valid);
    }
  };

  float acc[kMTiles][8][4];
#pragma unroll
  for (int m = 0; m < kMTiles; ++m)
#pragma unroll
    for (int n = 0; n < 8; ++n) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.f;
  // Running log2-domain max and sum of this thread's four rows (m tile, g / g + 8).
  float run_max[kMTiles][2], run_sum[kMTiles][2];
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
    run_max[m][0] = run_max[m][1] = -INFINITY;
    run_sum[m][0] = run_sum[m][1] = 0.f;
  }
  const float scale_log2 = params.scale * kLog2e;
  const int steps_per_tile = int(S) * kDepthChunks;
  const int col_tiles_per_block = int(cols_per_block / 8);  // n8 tiles per key block

#pragma unroll
  for (int s = 0; s < Tile::kStages - 1; ++s) {
    if (s < total_steps) load_step(s);
    cp_async_commit();
  }

  for (int step = 0; step < total_steps; ++step) {
    cp_async_wait<Tile::kStages - 2>();
    __syncthreads();
    if (step + Tile::kStages - 1 < total_steps) load_step(step + Tile::kStages - 1);
    cp_async_commit();

    const T* a_tile = smem + (step % Tile::kStages) * Tile::kStageElems;
    const T* b_tile = a_tile + kRows * kDepth;
#pragma unroll
    for (int kk = 0; kk < kDepth / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        const int row = warp_row + m * 16 + (lane & 15);
        ldmatrix_x4(a[m], smem_address(a_tile + swizzled<kDepth>(row, kk * 2 + (lane >> 4))));
      }
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        const int col = warp_col + np * 16 + ((lane >> 4) << 3) + (lane & 7);
        ldmatrix_x4(b, smem_address(b_tile + swizzled<kDepth>(col, kk * 2 + ((lane >> 3) & 1))));
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          Traits::mma(acc[m][2 * np], a[m], b[0], b[1]);
          Traits::mma(acc[m][2 * np + 1], a[m], b[2], b[3]);
        }
      }
    }

    if ((step + 1) % steps_per_tile != 0) continue;

    // Tile epilogue: mask, per key block log2-sum-exp to scratch, running row statistics.
    const int64_t c_tile = int64_t(step / steps_per_tile) * kCols + warp_col;
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t local_row = warp_row + m * 16 + g + 8 * half;
        const int64_t r = r0 + local_row;
        const int64_t last_visible = pr.causal ? (offset + r * S + S - 1) / S : n_cols - 1;
        const int64_t col_limit = min(last_visible, n_cols - 1);
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int64_t c = c_tile + n * 8 + 2 * t4 + e;
            float& v = acc[m][n][2 * half + e];
            v = c <= col_limit ? v * scale_log2 : -INFINITY;
          }
        float x[8][2];
#pragma unroll
        for (int n = 0; n < 8; ++n) {
          x[n][0] = acc[m][n][2 * half];
          x[n][1] = acc[m][n][2 * half + 1];
        }
        float* scratch_row = local_row < rows_here ? scratch + local_row * nkb_max : nullptr;
        const int64_t j0 = c_tile / cols_per_block;
        switch (col_tiles_per_block) {
          case 1: row_block_epilogue<1>(x, j0, nkb_max, t4, scratch_row, run_max[m][half], run_sum[m][half]); break;
          case 2: row_block_epilogue<2>(x, j0, nkb_max, t4, scratch_row, run_max[m][half], run_sum[m][half]); break;
          case 4: row_block_epilogue<4>(x, j0, nkb_max, t4, scratch_row, run_max[m][half], run_sum[m][half]); break;
          default: row_block_epilogue<8>(x, j0, nkb_max, t4, scratch_row, run_max[m][half], run_sum[m][half]); break;
        }
#pragma unroll
        for (int n = 0; n < 8; ++n) acc[m][n][2 * half] = acc[m][n][2 * half + 1] = 0.f;
      }
    }
  }
  cp_async_wait<0>();

  // Row totals: the two column-warps of a row group each saw half of every tile; combine them.
  __shared__ float part_max[2][kRows], part_sum[2][kRows];
  if (t4 == 0) {
#pragma unroll
    for (int m = 0; m < kMTiles; ++m)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int local_row = warp_row + m * 16 + g + 8 * half;
        part_max[warp >> 2][local_row] = run_max[m][half];
        part_sum[warp >> 2][local_row] = run_sum[m][half];
      }
  }
  __syncthreads();
  for (int row = tid; row < kRows; row += Tile::kThreads) {
    const float m0 = part_max[0][row], m1 = part_max[1][row];
    const float mx = fmaxf(m0, m1);
    float total = 0.f;
    if (mx != -INFINITY)
      total = (m0 == -INFINITY ? 0.f : part_sum[0][row] * exp2f(m0 - mx)) +
              (m1 == -INFINITY ? 0.f : part_sum[1][row] * exp2f(m1 - mx));
    row_lse[row] = total > 0.f ? mx + __log2f(total) : INFINITY;  // +inf: row contributes 0
  }
  __syncthreads();  // also makes this CTA's scratch writes visible to all its threads

  // Block scores: sum over the strided rows of each query block of exp2(block_lse - row_lse).
  const int64_t n_blocks_seen = min(nkb_max, ceil_div(int64_t(n_tiles) * kCols, cols_per_block));
  write_block_scores(params, cta, scratch, row_lse, n_blocks_seen, tid, Tile::kThreads);
}

}  // namespace xattn::kernels::cuda::detail

namespace xattn::kernels::cuda::detail {

template <typename T, int kHeadDim, int kMTiles>
cudaError_t launch_antidiagonal_scoring_variant(const ScoringParams& params,
                                                const ScoringChunk& chunk, cudaStream_t stream) {
  using Tile = ScoringTile<kMTiles>;
  const auto kernel = antidiagonal_scoring_kernel<T, kHeadDim, kMTiles>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         Tile::kSmemBytes);
  if (err != cudaSuccess) return err;
  const ScoringLaunch launch{params, chunk.row_begin, chunk.chunk_rows, chunk.scratch};
  const dim3 grid(unsigned(params.problem.heads_q), unsigned(chunk.chunk_rows / Tile::kRows),
                  unsigned(params.problem.batch));
  kernel<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(launch);
  return cudaGetLastError();
}

// Shipped: 128-row CTAs. On the H200 they beat 256-row CTAs at every length (S = 8, 128K:
// 44-45 vs 45 ms; S = 16: 19.5-21 vs 22.5-23 ms; 8K: 0.30 vs 0.40 ms; docs/benchmarks.md).
template <typename T, int kHeadDim>
cudaError_t launch_antidiagonal_scoring(const ScoringParams& params, const ScoringChunk& chunk,
                                        cudaStream_t stream) {
  return launch_antidiagonal_scoring_variant<T, kHeadDim, 2>(params, chunk, stream);
}

}  // namespace xattn::kernels::cuda::detail
