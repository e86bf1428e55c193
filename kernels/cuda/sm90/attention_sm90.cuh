// Block-sparse attention forward for Hopper (sm_90a): warpgroup MMA, TMA and mbarrier pipelines
// (XATTENTION.md §3).
//
// One CTA computes the 128 query rows of one query block of one (sequence, query head) with three
// warpgroups:
//   producer  (warpgroup 0): one thread issues TMA loads of the Q tile once and of the K and V
//             tiles of each kept key block into a kStages-deep ring of shared-memory buffers;
//   consumers (warpgroups 1, 2): 64 query rows each. Per key block: S = Q K^T on wgmma (both
//             operands in shared memory), the online softmax in registers, then O += P V on wgmma
//             with P straight from registers and V read transposed from shared memory. The two
//             products are software-pipelined: step i issues S(i) and O += P(i-1) V(i-1) and runs
//             softmax(i) while the second is in flight. K of a stage goes back to the producer
//             once S is read, V once O += P V has run.
// Key tiles are 128 keys, one mask block (the kernel runs block_size 128 only). The kept list is
// walked from its end, so with the usual ascending lists the causal diagonal block comes first;
// the token mask is applied only to tiles that cross the causal diagonal, the lower edge of a
// sliding window (problem.window) or the end of the keys; blocks wholly before the window of the
// query block's first row are not allowed and never loaded.
// K/V of a GQA group are read in place through the KV head's coordinates.
// Shared memory: Q (kHeadDim * 256 B) + kStages * (K + V) tiles, 128-byte swizzled by TMA
// (225 KiB for head_dim 128: 3 stages; 4 stages for head_dim 64).
#pragma once

#include <cuda.h>

#include "../device_common.cuh"
#include "primitives.cuh"
#include "wgmma_ops.cuh"
#include "xattn/kernels/params.h"

namespace xattn::kernels::cuda::detail::sm90 {

template <int kHeadDim>
struct AttentionTile {
  static constexpr int kRows = 128;                 // query rows per CTA
  static constexpr int kKeys = 128;                 // keys per tile (= the block size)
  static constexpr int kPanels = kHeadDim / 64;     // 64-column (128-byte) swizzled panels
  static constexpr int kPanelBytes = 128 * 128;     // 128 rows x 128 B
  static constexpr int kTileBytes = kPanels * kPanelBytes;  // Q, K or V tile
  static constexpr int kStages = kHeadDim == 128 ? 3 : 4;
  static constexpr int kThreads = 384;
  static constexpr int kConsumerThreads = 256;
  static constexpr int kBarrierBytes = 8 * (1 + 4 * kStages);
  static constexpr int kSmemBytes = 1024 /* alignment slack */ + kTileBytes * (1 + 2 * kStages) +
                                    kBarrierBytes;
  static constexpr int kProducerRegisters = 40;
  static constexpr int kConsumerRegisters = 232;
};

// Kernel arguments: the common params plus the TMA descriptors the host encoded for q, k and v
// (4-D maps {head_dim, tokens, heads, batch}, box {64, 128, 1, 1}, 128-byte swizzle).
struct AttentionArgs {
  CUtensorMap q_map;
  CUtensorMap k_map;
  CUtensorMap v_map;
  AttentionParams params;
};

// The kept key blocks of one CTA, walked from the end of the list; blocks that are not allowed
// (negative, before the sliding window, causal future, past the keys) are skipped, as the
// reference does.
struct KeptBlocksReversed {
  const int32_t* list;  // kept block indices, or null for first .. first + n - 1
  int32_t cursor;       // next entry to read
  int32_t first;        // allowed blocks: first .. end - 1
  int32_t end;
  int64_t len_k;
  int64_t last_visible_key;

  __device__ __forceinline__ int32_t next() {
    while (cursor >= 0) {
      const int32_t j = list ? __ldg(list + cursor) : first + cursor;
      --cursor;
      const int64_t k0 = int64_t(j) * 128;
      if (j >= first && j < end && k0 < len_k && k0 <= last_visible_key) return j;
    }
    return -1;
  }
};

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(AttentionTile<kHeadDim>::kThreads, 1)
    block_sparse_attention_sm90_kernel(const __grid_constant__ AttentionArgs args) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tile = AttentionTile<kHeadDim>;
  using Traits = ElementTraits<T>;
  constexpr int kStages = Tile::kStages;
  constexpr int kDSteps = kHeadDim / 16;  // k16 steps of S = Q K^T
  constexpr int kKeySteps = Tile::kKeys / 16;  // k16 steps of O += P V
  constexpr int kOutRegs = kHeadDim / 2;

  const AttentionParams& params = args.params;
  const Problem& pr = params.problem;
  const int head = blockIdx.x;
  const int q_block = gridDim.y - 1 - blockIdx.y;  // longest rows first
  const int batch = blockIdx.z;
  const int64_t len_q = pr.len_q(batch), len_k = pr.len_k(batch);
  const int64_t q0 = int64_t(q_block) * Tile::kRows;
  if (q0 >= len_q || len_k == 0) return;
  const int64_t offset = len_k - len_q;
  const int kv_head = head / int(pr.heads_q / pr.heads_kv);
  const BlockGeometry geometry{len_q, len_k, Tile::kKeys, offset, pr.causal, pr.window};
  const int64_t window = pr.causal ? pr.window : 0;
  const int64_t nqb_max = ceil_div(pr.max_len_q, int64_t(Tile::kKeys));
  const int64_t nkb_max = ceil_div(pr.max_len_k, int64_t(Tile::kKeys));
  const int64_t row_id = (int64_t(batch) * pr.heads_q + head) * nqb_max + q_block;
  const int64_t rows_here = len_q - q0 < Tile::kRows ? len_q - q0 : Tile::kRows;

  KeptBlocksReversed kept;
  kept.first = int32_t(geometry.first_block(q_block));
  kept.end = int32_t(geometry.end_block(q_block));
  if (params.kv_block_count) {
    kept.list = params.kv_block_index + row_id * nkb_max;
    // A count past the row (a caller's bug) reads no further than the row.
    kept.cursor = int32_t(min(int64_t(params.kv_block_count[row_id]), nkb_max)) - 1;
  } else {
    kept.list = nullptr;
    kept.cursor = kept.end - kept.first - 1;
  }
  kept.len_k = len_k;
  kept.last_visible_key = pr.causal ? offset + q0 + rows_here - 1 : len_k - 1;

  // Shared memory carve-up: 1024-byte aligned tiles, then the barriers.
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = shared_address(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  const uint32_t q_smem = base;
  const uint32_t k_smem = q_smem + Tile::kTileBytes;             // kStages tiles
  const uint32_t v_smem = k_smem + kStages * Tile::kTileBytes;  // kStages tiles
  const uint32_t bars = v_smem + kStages * Tile::kTileBytes;
  const uint32_t q_full = bars;
  auto k_full = [&](int s) { return bars + 8u * (1 + s); };
  auto v_full = [&](int s) { return bars + 8u * (1 + kStages + s); };
  auto k_empty = [&](int s) { return bars + 8u * (1 + 2 * kStages + s); };
  auto v_empty = [&](int s) { return bars + 8u * (1 + 3 * kStages + s); };

  if (threadIdx.x == 0) {
    mbarrier_init(q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(k_full(s), 1);
      mbarrier_init(v_full(s), 1);
      mbarrier_init(k_empty(s), Tile::kConsumerThreads);
      mbarrier_init(v_empty(s), Tile::kConsumerThreads);
    }
    fence_barrier_init();
  }
  __syncthreads();

  // TMA coordinates: varlen sequences are rows of one packed tensor (batch coordinate 0).
  const int32_t q_row0 = int32_t((pr.cu_seqlens_q ? pr.cu_seqlens_q[batch] : 0) + q0);
  const int32_t k_row0 = pr.cu_seqlens_k ? pr.cu_seqlens_k[batch] : 0;
  const int32_t batch_coord = pr.cu_seqlens_q ? 0 : batch;

  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    // ---------------- producer ----------------
    // K and V of a stage are released separately: K right after S = Q K^T, V after O += P V,
    // which runs one key block later (see the consumers' loop).
    release_registers<Tile::kProducerRegisters>();
    if (threadIdx.x == 0) {
      prefetch_tensor_map(&args.k_map);
      prefetch_tensor_map(&args.v_map);
      mbarrier_arrive_expect_tx(q_full, Tile::kTileBytes);
#pragma unroll
      for (int p = 0; p < Tile::kPanels; ++p)
        tma_load_4d(q_smem + p * Tile::kPanelBytes, &args.q_map, q_full, p * 64, q_row0, head,
                    batch_coord);
      int i = 0;
      for (int32_t j = kept.next(); j >= 0; j = kept.next(), ++i) {
        const int s = i % kStages;
        const uint32_t reuse_parity = ((i / kStages) - 1) & 1;
        const int32_t row = k_row0 + j * Tile::kKeys;
        if (i >= kStages) mbarrier_wait(k_empty(s), reuse_parity);
        mbarrier_arrive_expect_tx(k_full(s), Tile::kTileBytes);
#pragma unroll
        for (int p = 0; p < Tile::kPanels; ++p)
          tma_load_4d(k_smem + s * Tile::kTileBytes + p * Tile::kPanelBytes, &args.k_map,
                      k_full(s), p * 64, row, kv_head, batch_coord);
        if (i >= kStages) mbarrier_wait(v_empty(s), reuse_parity);
        mbarrier_arrive_expect_tx(v_full(s), Tile::kTileBytes);
#pragma unroll
        for (int p = 0; p < Tile::kPanels; ++p)
          tma_load_4d(v_smem + s * Tile::kTileBytes + p * Tile::kPanelBytes, &args.v_map,
                      v_full(s), p * 64, row, kv_head, batch_coord);
      }
    }
    return;
  }

  // ---------------- consumers ----------------
  claim_registers<Tile::kConsumerRegisters>();
  const int consumer = warpgroup - 1;                 // rows 64 * consumer ...
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int row_in_cta = consumer * 64 + warp * 16 + g;  // and row_in_cta + 8

  float o_acc[kOutRegs];
#pragma unroll
  for (int n = 0; n < kOutRegs; ++n) o_acc[n] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  const float scale_log2 = params.scale * kLog2e;

  float s_acc[64];                 // S of the current key block, then its probabilities
  uint32_t p_frag[kKeySteps][4];   // P of the previous key block, the A operand of O += P V
  float correction[2] = {1.f, 1.f};

  // S = Q K^T for the key block in stage s (issued, not waited for).
  auto issue_scores = [&](int s) {
    const uint32_t k_tile = k_smem + s * Tile::kTileBytes;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kDSteps; ++kk) {
      // This warpgroup's 64 rows of Q; k16 step kk lies in panel kk / 4 at byte kk % 4 * 32.
      const uint64_t q_desc = smem_descriptor(
          q_smem + (kk / 4) * Tile::kPanelBytes + consumer * 64 * 128 + (kk % 4) * 32, 16, 1024);
      const uint64_t k_desc =
          smem_descriptor(k_tile + (kk / 4) * Tile::kPanelBytes + (kk % 4) * 32, 16, 1024);
      wgmma_ss_m64n128k16<T>(s_acc, q_desc, k_desc, kk > 0);
    }
    wgmma_commit();
  };
  // O += P V for the key block in stage s (issued, not waited for); V is [keys, head_dim]
  // row-major, i.e. MN-major for the B operand.
  auto issue_values = [&](int s) {
    const uint32_t v_tile = v_smem + s * Tile::kTileBytes;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kKeySteps; ++kk) {
      const uint64_t v_desc = smem_descriptor(v_tile + kk * 16 * 128, Tile::kPanelBytes, 1024);
      if constexpr (kHeadDim == 128)
        wgmma_rs_m64n128k16_tb<T>(o_acc, p_frag[kk], v_desc);
      else
        wgmma_rs_m64n64k16_tb<T>(o_acc, p_frag[kk], v_desc);
    }
    wgmma_commit();
  };
  // Token mask, then the online softmax of s_acc in place (log2 domain): s_acc becomes the
  // unnormalised probabilities, row_max / row_sum advance, correction rescales the old O.
  auto softmax = [&](int32_t j) {
    const int64_t k0 = int64_t(j) * Tile::kKeys;
    // Edge tiles only: the end of the keys, the causal diagonal, or the sliding window's lower
    // edge (the tile's first key out of reach of the CTA's last row).
    if (k0 + Tile::kKeys > len_k || (pr.causal && k0 + Tile::kKeys - 1 > offset + q0) ||
        (window > 0 && offset + q0 + Tile::kRows - 1 - k0 >= window)) {
      const int key_shift = int(k0 - offset - q0);
      const int keys_left = int(len_k - k0 < Tile::kKeys ? len_k - k0 : Tile::kKeys);
#pragma unroll
      for (int n = 0; n < 16; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = n * 8 + 2 * t4 + (e & 1);
          const int row = row_in_cta + 8 * (e >> 1);
          const bool visible = key < keys_left && (!pr.causal || key + key_shift <= row) &&
                               (window == 0 || row - (key + key_shift) < window);
          if (!visible) s_acc[4 * n + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // each row lives in one quad of lanes
      float tile_max = -INFINITY;
#pragma unroll
      for (int n = 0; n < 16; ++n)
        tile_max = fmaxf(tile_max, fmaxf(s_acc[4 * n + 2 * r], s_acc[4 * n + 2 * r + 1]));
      tile_max = quad_max(tile_max);
      const float new_max = fmaxf(row_max[r], tile_max);
      const float shift = new_max == -INFINITY ? 0.f : new_max * scale_log2;
      correction[r] = exp2f(row_max[r] * scale_log2 - shift);
      row_max[r] = new_max;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        float& a = s_acc[4 * n + 2 * r];
        float& b = s_acc[4 * n + 2 * r + 1];
        a = exp2f(fmaf(a, scale_log2, -shift));
        b = exp2f(fmaf(b, scale_log2, -shift));
        sum += a + b;
      }
      row_sum[r] = row_sum[r] * correction[r] + sum;
    }
  };
  // Rescale O by the correction and pack P (accumulator layout == A-fragment layout).
  auto rescale_and_pack = [&]() {
#pragma unroll
    for (int n = 0; n < kOutRegs / 4; ++n) {
      o_acc[4 * n + 0] *= correction[0];
      o_acc[4 * n + 1] *= correction[0];
      o_acc[4 * n + 2] *= correction[1];
      o_acc[4 * n + 3] *= correction[1];
    }
#pragma unroll
    for (int kk = 0; kk < kKeySteps; ++kk) {
      p_frag[kk][0] = Traits::pack(s_acc[8 * kk + 0], s_acc[8 * kk + 1]);
      p_frag[kk][1] = Traits::pack(s_acc[8 * kk + 2], s_acc[8 * kk + 3]);
      p_frag[kk][2] = Traits::pack(s_acc[8 * kk + 4], s_acc[8 * kk + 5]);
      p_frag[kk][3] = Traits::pack(s_acc[8 * kk + 6], s_acc[8 * kk + 7]);
    }
  };

  mbarrier_wait(q_full, 0);
  // Pipeline over the kept blocks j_0, j_1, ...: step i issues S(i) and O += P(i-1) V(i-1),
  // runs softmax(i) while the second product is in flight, then rescales O and packs P(i).
  int32_t j = kept.next();
  if (j >= 0) {
    mbarrier_wait(k_full(0), 0);
    issue_scores(0);
    wgmma_wait<0>();
    fence_registers(s_acc);
    mbarrier_arrive(k_empty(0));
    softmax(j);
    rescale_and_pack();
    int prev = 0, i_prev = 0;
    for (int i = 1; (j = kept.next()) >= 0; ++i) {
      const int s = i % kStages;
      mbarrier_wait(k_full(s), (i / kStages) & 1);
      issue_scores(s);
      mbarrier_wait(v_full(prev), ((i - 1) / kStages) & 1);
      issue_values(prev);
      wgmma_wait<1>();  // S(i) is ready; O += P(i-1) V(i-1) may still run
      fence_registers(s_acc);
      mbarrier_arrive(k_empty(s));
      softmax(j);
      wgmma_wait<0>();
      fence_registers(o_acc);
      fence_registers(p_frag);
      mbarrier_arrive(v_empty(prev));
      rescale_and_pack();
      prev = s;
      i_prev = i;
    }
    mbarrier_wait(v_full(prev), (i_prev / kStages) & 1);
    issue_values(prev);
    wgmma_wait<0>();
    fence_registers(o_acc);
    fence_registers(p_frag);
    mbarrier_arrive(v_empty(prev));
  }
  // Epilogue: normalise, write O and the log-sum-exp (natural log of the scaled logits).
  T* out_base = static_cast<T*>(params.out.data) +
                sequence_base(pr.cu_seqlens_q, batch, head, params.out.batch_stride,
                              params.out.head_stride, params.out.token_stride);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float total = quad_sum(row_sum[r]);
    const int row = row_in_cta + 8 * r;
    if (row >= rows_here) continue;
    const float inv = total > 0.f ? 1.f / total : 0.f;
    T* dst = out_base + (q0 + row) * params.out.token_stride + 2 * t4;
#pragma unroll
    for (int n = 0; n < kOutRegs / 4; ++n)
      *reinterpret_cast<uint32_t*>(dst + n * 8) =
          Traits::pack(o_acc[4 * n + 2 * r] * inv, o_acc[4 * n + 2 * r + 1] * inv);
    if (params.lse && t4 == 0)
      params.lse[(int64_t(batch) * pr.heads_q + head) * pr.max_len_q + q0 + row] =
          total > 0.f ? row_max[r] * params.scale + logf(total) : -INFINITY;
  }
#endif
}

}  // namespace xattn::kernels::cuda::detail::sm90
