// Antidiagonal block scoring for Hopper (sm_90a): the strided GEMM of scoring_kernel.cuh on
// warpgroup MMA, with the same one-pass bookkeeping (per key block log2-sum-exp to scratch, the
// row's running max and sum, block scores from the scratch at the end).
//
// One CTA owns 128 strided query rows and sweeps 256-column key tiles (wide tiles halve the
// re-reads of the query rows, which bound the sm_80 kernel); three warpgroups:
//   producer  (warpgroup 0, 128 threads): brings each k-step's rows (one t, 64 columns of
//             head_dim) of q and k into a kStages ring, in the 128-byte swizzled layout wgmma
//             reads, one of two ways:
//             - TMA (padded layout, both lengths multiples of S): one thread issues the two boxes
//               of a step from 5-D strided views of q and k (tensor_maps.h), whole strided rows
//               past the sequence zero-filled by the copy engine;
//             - otherwise 16-byte cp.async gathers by all 128 threads (tokens past the sequence
//               zero-filled per copy, which a strided TMA view cannot do inside a partial row);
//               each thread's copies arrive on the stage's mbarrier when they land
//               (cp.async.mbarrier.arrive), so the producer only ever waits for free stages;
//   consumers (warpgroups 1, 2): 64 rows each, S += A B^T on m64n256k16 wgmma (both operands in
//             shared memory); a stage is released as soon as the MMA that read it is done; after
//             the last k-step of a tile, the tile epilogue (scale; mask, only in tiles some row
//             of the warp does not see whole; block log2-sum-exp with the approximate exp2;
//             running row statistics). Each row's 256 columns live in one quad of lanes.
// Shared memory: kStages x (128 + 256) rows x 128 B = 192 KiB (4 stages); one CTA per SM.
#pragma once

#include "../scoring_kernel.cuh"
#include "primitives.cuh"
#include "tensor_maps.h"
#include "wgmma_ops.cuh"

namespace xattn::kernels::cuda::detail::sm90 {

struct ScoringTile {
  static constexpr int kRows = 128;   // strided query rows per CTA
  static constexpr int kCols = 256;   // strided key columns per tile
  static constexpr int kDepth = 64;   // head_dim elements per k-step (one 128-byte row)
  static constexpr int kStages = 4;
  static constexpr int kThreads = 384;
  static constexpr int kConsumerThreads = 256;
  static constexpr int kABytes = kRows * 128;  // rows x 128 B
  static constexpr int kBBytes = kCols * 128;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = 1024 + kStages * kStageBytes + 8 * 2 * kStages;
  static constexpr int kProducerRegisters = 40;
  static constexpr int kConsumerRegisters = 232;
};

// Arrives on `bar` once all of this thread's earlier cp.async copies have completed (the arrival
// is counted in the barrier's expected count: no increment).
__device__ __forceinline__ void cp_async_mbarrier_arrive_noinc(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void cp_async_zfill_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
// Synchronises the 256 consumer threads only (the producer warpgroup has left).
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, 256;\n" ::: "memory");
}

// The TMA descriptors of q and k (unused by the gather variant).
struct ScoringMaps {
  CUtensorMap q, k;
};

template <typename T, int kHeadDim, ScoringLoadPath kLoads>
__global__ void __launch_bounds__(ScoringTile::kThreads, 1)
    antidiagonal_scoring_sm90_kernel(const ScoringLaunch launch,
                                     const __grid_constant__ ScoringMaps maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kTmaLoads = kLoads == ScoringLoadPath::kTma;
  using Tile = ScoringTile;
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols, kDepth = Tile::kDepth;
  constexpr int kStages = Tile::kStages;
  constexpr int kDepthChunks = kHeadDim / kDepth;
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
  const int steps_per_tile = int(S) * kDepthChunks;
  const int total_steps = n_tiles * steps_per_tile;

  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (shared_address(smem_raw) + 1023u) & ~1023u;
  auto a_stage = [&](int s) { return base + uint32_t(s) * Tile::kStageBytes; };
  auto b_stage = [&](int s) { return a_stage(s) + Tile::kABytes; };
  const uint32_t bars = base + kStages * Tile::kStageBytes;
  auto full = [&](int s) { return bars + 8u * s; };
  auto empty = [&](int s) { return bars + 8u * (kStages + s); };
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      // TMA: one expect_tx arrival; gathers: one cp.async arrival per producer thread.
      mbarrier_init(full(s), kTmaLoads ? 1 : 128);
      mbarrier_init(empty(s), Tile::kConsumerThreads);
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    // ---------------- producer: gathers of strided q and k rows ----------------
    release_registers<Tile::kProducerRegisters>();
    // Both load paths: wait until the consumers have freed the ring stage of `step`, and name
    // what the step loads (key tile, t in 0..S-1, head_dim chunk).
    struct StepLoad {
      int stage, tile, t, dc;
    };
    auto claim_stage = [&](int step) {
      const int s = step % kStages;
      if (step >= kStages) mbarrier_wait(empty(s), ((step / kStages) - 1) & 1);
      const int rem = step % steps_per_tile;
      return StepLoad{s, step / steps_per_tile, rem / kDepthChunks, rem % kDepthChunks};
    };
    if constexpr (kTmaLoads) {
      // One thread: per step, wait for a free stage, announce its bytes, issue both boxes.
      if (threadIdx.x == 0) {
        prefetch_tensor_map(&maps.q);
        prefetch_tensor_map(&maps.k);
        const int q_row0 = int(r0);
        for (int step = 0; step < total_steps; ++step) {
          const auto [s, tile, t, dc] = claim_stage(step);
          mbarrier_arrive_expect_tx(full(s), Tile::kStageBytes);
          // q: strided row r gathers token r*S + S-1-t; k: strided column c gathers token c*S + t.
          tma_load_5d(a_stage(s), &maps.q, full(s), dc * kDepth, int(S) - 1 - t, q_row0, head,
                      batch);
          tma_load_5d(b_stage(s), &maps.k, full(s), dc * kDepth, t, tile * kCols, kv_head, batch);
        }
      }
      return;
    }
    const T* q_base = static_cast<const T*>(params.q.data) +
                      sequence_base(pr.cu_seqlens_q, batch, head, params.q.batch_stride,
                                    params.q.head_stride, params.q.token_stride);
    const T* k_base = static_cast<const T*>(params.k.data) +
                      sequence_base(pr.cu_seqlens_k, batch, kv_head, params.k.batch_stride,
                                    params.k.head_stride, params.k.token_stride);
    // Thread tid copies 16-byte chunk (tid & 7) of rows tid / 8 + 16 i (i < 8), so its gather
    // addresses are a per-thread base plus i * (a fixed stride) plus a per-step delta.
    const int tid = threadIdx.x;
    const int chunk = tid & 7, pass_row = tid >> 3;
    constexpr int kRowsPerPass = 16;
    const int64_t q_stride = params.q.token_stride, k_stride = params.k.token_stride;
    const int pass_tokens = kRowsPerPass * int(S);
    // q: strided row r gathers token r*S + S-1-t; k: strided column c gathers token c*S + t.
    const int64_t q_token0 = (r0 + pass_row) * S + S - 1;
    const int q_room = int(min(len_q - q_token0, int64_t(INT_MAX / 2)));
    const T* q_thread = q_base + q_token0 * q_stride + chunk * 8;
    const int k_room = int(min(len_k - int64_t(pass_row) * S, int64_t(INT_MAX / 2)));
    const T* k_thread = k_base + int64_t(pass_row) * S * k_stride + chunk * 8;
    const int64_t q_pass_elems = int64_t(pass_tokens) * q_stride;
    const int64_t k_pass_elems = int64_t(pass_tokens) * k_stride;
    for (int step = 0; step < total_steps; ++step) {
      const auto [s, tile, t, dc] = claim_stage(step);
      // Rows tid / 8 + 16 i share the swizzle of row tid / 8: one destination per thread and stage.
      const uint32_t a_dst = a_stage(s) + pass_row * 128 + ((chunk ^ (pass_row & 7)) << 4);
      const uint32_t b_dst = b_stage(s) + pass_row * 128 + ((chunk ^ (pass_row & 7)) << 4);
      constexpr int kQPasses = kRows / kRowsPerPass, kKPasses = kCols / kRowsPerPass;
      const T* q_src = q_thread + (dc * kDepth - t * q_stride);
      // Validity falls with i, so a step whose last row is inside the sequence (almost all of
      // them) copies without per-row checks.
      if ((kQPasses - 1) * pass_tokens - t < q_room) {
#pragma unroll
        for (int i = 0; i < kQPasses; ++i, q_src += q_pass_elems)
          cp_async_zfill_16(a_dst + i * kRowsPerPass * 128, q_src, true);
      } else {
#pragma unroll 1
        for (int i = 0; i < kQPasses; ++i, q_src += q_pass_elems) {
          const bool valid = i * pass_tokens - t < q_room;
          cp_async_zfill_16(a_dst + i * kRowsPerPass * 128, valid ? q_src : q_base, valid);
        }
      }
      const int k_tile_token = tile * kCols * int(S) + t;
      const T* k_src = k_thread + (int64_t(k_tile_token) * k_stride + dc * kDepth);
      if (k_tile_token + (kKPasses - 1) * pass_tokens < k_room) {
#pragma unroll
        for (int i = 0; i < kKPasses; ++i, k_src += k_pass_elems)
          cp_async_zfill_16(b_dst + i * kRowsPerPass * 128, k_src, true);
      } else {
#pragma unroll 1
        for (int i = 0; i < kKPasses; ++i, k_src += k_pass_elems) {
          const bool valid = k_tile_token + i * pass_tokens < k_room;
          cp_async_zfill_16(b_dst + i * kRowsPerPass * 128, valid ? k_src : k_base, valid);
        }
      }
      // The stage's barrier gets this thread's arrival when its copies have landed; the producer
      // never waits for its own copies, only for free stages.
      cp_async_mbarrier_arrive_noinc(full(s));
    }
    return;
  }

  // ---------------- consumers ----------------
  claim_registers<Tile::kConsumerRegisters>();
  const int consumer = warpgroup - 1;
  const int ctid = threadIdx.x - 128;
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  float* scratch = launch.scratch +
                   ((int64_t(batch) * pr.heads_q + head) * launch.chunk_rows +
                    (r0 - launch.row_begin)) * nkb_max;
  const float scale_log2 = params.scale * kLog2e;
  const int col_tiles_per_block = int(cols_per_block / 8);  // n8 tiles per key block

  float acc[kCols / 2];
  float run_max[2] = {-INFINITY, -INFINITY}, run_sum[2] = {0.f, 0.f};
  for (int step = 0; step < total_steps; ++step) {
    const int s = step % kStages;
    const int in_tile = step % steps_per_tile;
    mbarrier_wait(full(s), (step / kStages) & 1);
    // A gathered stage was written by cp.async (generic proxy); wgmma reads through the async
    // proxy. TMA writes through the async proxy already.
    if constexpr (!kTmaLoads) fence_proxy_async_shared();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kDepth / 16; ++kk) {
      const uint64_t a_desc = smem_descriptor(a_stage(s) + consumer * 64 * 128 + kk * 32, 16, 1024);
      const uint64_t b_desc = smem_descriptor(b_stage(s) + kk * 32, 16, 1024);
      wgmma_ss_m64n256k16<T>(acc, a_desc, b_desc, in_tile > 0 || kk > 0);
    }
    wgmma_commit();
    // Each stage goes back as soon as its MMAs are done: holding one stage instead of two leaves
    // three of the four for loads in flight, which the gathers' latency needs more than the
    // consumer needs an MMA group queued behind the running one.
    wgmma_wait<0>();
    mbarrier_arrive(empty(s));
    if (in_tile != steps_per_tile - 1) continue;
    fence_registers(acc);

    // Tile epilogue: scale, mask, per key block log2-sum-exp to scratch, running row statistics.
    const int64_t c_tile = int64_t(step / steps_per_tile) * kCols;
    // Last visible column of each of this thread's two rows, relative to the tile (clamped to
    // 32 bits); only tiles that some row of the warp does not see whole pay for the mask.
    int visible[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t r = r0 + consumer * 64 + warp * 16 + g + 8 * half;
      const int64_t last_visible = pr.causal ? (offset + r * S + S - 1) / S : n_cols - 1;
      visible[half] = int(min(min(last_visible, n_cols - 1) - c_tile, int64_t(kCols)));
    }
#pragma unroll
    for (int i = 0; i < kCols / 2; ++i) acc[i] *= scale_log2;
    if (!__all_sync(0xffffffffu, min(visible[0], visible[1]) >= kCols - 1)) {
#pragma unroll
      for (int i = 0; i < kCols / 2; ++i) {
        const int col = (i / 4) * 8 + 2 * t4 + (i & 1);  // acc[4 n + 2 half + e]: n8 tile n
        if (col > visible[(i / 2) & 1]) acc[i] = -INFINITY;
      }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t local_row = consumer * 64 + warp * 16 + g + 8 * half;
      float* scratch_row = local_row < rows_here ? scratch + local_row * nkb_max : nullptr;
#pragma unroll
      for (int part = 0; part < kCols / 64; ++part) {  // columns 64 * part ... 64 * part + 63
        float x[8][2];
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) x[n][e] = acc[4 * (part * 8 + n) + 2 * half + e];
        const int64_t j0 = (c_tile + 64 * part) / cols_per_block;
        switch (col_tiles_per_block) {
          case 1: row_block_epilogue<1, true>(x, j0, nkb_max, t4, scratch_row, run_max[half], run_sum[half]); break;
          case 2: row_block_epilogue<2, true>(x, j0, nkb_max, t4, scratch_row, run_max[half], run_sum[half]); break;
          case 4: row_block_epilogue<4, true>(x, j0, nkb_max, t4, scratch_row, run_max[half], run_sum[half]); break;
          default: row_block_epilogue<8, true>(x, j0, nkb_max, t4, scratch_row, run_max[half], run_sum[half]); break;
        }
      }
    }
  }

  // Row totals (each row's statistics are whole in its quad).
  if (t4 == 0) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int local_row = consumer * 64 + warp * 16 + g + 8 * half;
      row_lse[local_row] =
          run_sum[half] > 0.f ? run_max[half] + __log2f(run_sum[half]) : INFINITY;  // +inf: 0
    }
  }
  consumers_sync();  // also makes this CTA's scratch writes visible to all consumer threads

  // Block scores: sum over the strided rows of each query block of exp2(block_lse - row_lse).
  const int64_t n_blocks_seen = min(nkb_max, ceil_div(int64_t(n_tiles) * kCols, cols_per_block));
  write_block_scores(params, cta, scratch, row_lse, n_blocks_seen, ctid, Tile::kConsumerThreads);
#endif
}

}  // namespace xattn::kernels::cuda::detail::sm90

namespace xattn::kernels::cuda::detail {

template <typename T, int kHeadDim>
cudaError_t launch_antidiagonal_scoring_sm90(const ScoringParams& params,
                                             const ScoringChunk& chunk, cudaStream_t stream) {
  using Tile = sm90::ScoringTile;
  using sm90::ScoringLoadPath;
  sm90::ScoringMaps maps{};
  ScoringLoadPath path = sm90::scoring_loads(params);
  if (path == ScoringLoadPath::kTma &&
      sm90::encode_scoring_maps(params, Tile::kRows, Tile::kCols, &maps.q, &maps.k) != cudaSuccess)
    path = ScoringLoadPath::kGather;
  const auto kernel =
      path == ScoringLoadPath::kTma
          ? sm90::antidiagonal_scoring_sm90_kernel<T, kHeadDim, ScoringLoadPath::kTma>
          : sm90::antidiagonal_scoring_sm90_kernel<T, kHeadDim, ScoringLoadPath::kGather>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         Tile::kSmemBytes);
  if (err != cudaSuccess) return err;
  const ScoringLaunch launch{params, chunk.row_begin, chunk.chunk_rows, chunk.scratch};
  const dim3 grid(unsigned(params.problem.heads_q), unsigned(chunk.chunk_rows / Tile::kRows),
                  unsigned(params.problem.batch));
  kernel<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(launch, maps);
  return cudaGetLastError();
}

}  // namespace xattn::kernels::cuda::detail
