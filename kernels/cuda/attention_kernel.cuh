// Block-sparse attention forward on tensor cores (XATTENTION.md §3).
//
// One CTA of 4 warps computes 128 query rows of one (sequence, query head), 32 rows per warp;
// K and V tiles of 64 keys stream through double-buffered shared memory (cp.async), S = Q K^T and
// O += P V run on m16n8k16 MMAs fed by ldmatrix, with an online softmax in the log2 domain. The
// CTA visits only the key blocks listed for its query block (or every allowed block in dense
// mode) and applies the token-level mask only on tiles that cross the causal diagonal, the lower
// edge of a sliding window or the end of the keys; tiles wholly before the window are skipped.
// CTAs are launched longest rows first (the last query blocks of a causal problem).
// Shared memory: (128 + 4 * 64) * head_dim * 2 bytes (96 KiB for head_dim 128); two CTAs of 4
// warps per SM.
#pragma once

#include "device_common.cuh"
#include "launchers.h"
#include "xattn/kernels/params.h"

namespace xattn::kernels::cuda::detail {

// kMTiles: m16 row tiles per warp. 1: 8 warps of 16 rows, Q fragments held in registers.
// 2 (shipped): 4 warps of 32 rows, Q fragments re-read from shared memory; every K/V fragment
// read from shared memory then feeds twice the MMAs (half the shared-memory traffic per FLOP).
template <int kHeadDim, int kMTiles>
struct AttentionTile {
  static constexpr int kRows = 128;     // query rows per CTA
  static constexpr int kKeys = 64;      // keys per tile
  static constexpr int kWarps = 8 / kMTiles;
  static constexpr int kWarpRows = 16 * kMTiles;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMinBlocks = kMTiles == 1 ? 1 : 2;
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static constexpr int kSmemElems = (kRows + 4 * kKeys) * kHeadDim;
  static constexpr int kSmemBytes = kSmemElems * 2;
};

// Walks the key tiles of one CTA in ascending key order: the kept blocks (or all allowed blocks),
// each split into 64-key tiles, skipping tiles past the keys, entirely in the causal future or
// entirely before the sliding window of every row.
struct KeyTileWalker {
  const int32_t* blocks;  // kept block indices, or null for first, first + 1, ...
  int32_t n_blocks;
  int32_t first;          // allowed blocks: first .. end - 1
  int32_t end;
  int32_t tiles_per_block;
  int32_t block_size;
  int64_t len_k;
  int64_t last_visible_key;   // keys after this are in the future of every row of the CTA
  int64_t first_visible_key;  // keys before this are outside the window of every row of the CTA
  int32_t entry = 0, sub = -1;

  // Returns the first key of the next tile, or -1 when done.
  __device__ __forceinline__ int64_t next() {
    while (entry < n_blocks) {
      const int32_t j = blocks ? __ldg(blocks + entry) : first + entry;
      if (j >= first && j < end) {
        while (++sub < tiles_per_block) {
          const int64_t k0 = int64_t(j) * block_size + int64_t(sub) * 64;
          // Before the window: a later tile of this block may still be in reach.
          if (k0 + 63 < first_visible_key) continue;
          if (k0 < len_k && k0 <= last_visible_key) return k0;
          break;  // past the keys or in the future: so is every later tile of the block
        }
      }
      ++entry;
      sub = -1;
    }
    return -1;
  }
};

template <typename T, int kHeadDim, int kMTiles>
__global__ void __launch_bounds__(AttentionTile<kHeadDim, kMTiles>::kThreads,
                                  AttentionTile<kHeadDim, kMTiles>::kMinBlocks)
    block_sparse_attention_kernel(const AttentionParams params) {
  using Tile = AttentionTile<kHeadDim, kMTiles>;
  constexpr bool kQInRegisters = kMTiles == 1;
  using Traits = ElementTraits<T>;
  constexpr int kRows = Tile::kRows, kKeys = Tile::kKeys, kChunks = Tile::kChunks;
  constexpr int kDSteps = kHeadDim / 16;  // k16 steps over head_dim; also pairs of n8 O tiles

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* smem_q = reinterpret_cast<T*>(smem_raw);
  T* smem_k = smem_q + kRows * kHeadDim;  // 2 buffers
  T* smem_v = smem_k + 2 * kKeys * kHeadDim;

  const Problem& pr = params.problem;
  const int head = blockIdx.x;
  const int m_tile = gridDim.y - 1 - blockIdx.y;  // longest rows first
  const int batch = blockIdx.z;
  const int64_t len_q = pr.len_q(batch), len_k = pr.len_k(batch);
  // A CTA never spans two query blocks: with 64-row blocks only its first 4 warps hold real rows.
  const int64_t cta_rows = params.block_size < kRows ? params.block_size : kRows;
  const int64_t q0 = int64_t(m_tile) * cta_rows;
  if (q0 >= len_q || len_k == 0) return;
  const int64_t offset = len_k - len_q;
  const int kv_head = head / int(pr.heads_q / pr.heads_kv);
  const int64_t bs = params.block_size;
  const BlockGeometry geometry{len_q, len_k, bs, offset, pr.causal, pr.window};
  const int64_t q_block = q0 / bs;
  const int64_t nqb_max = ceil_div(pr.max_len_q, bs), nkb_max = ceil_div(pr.max_len_k, bs);
  const int64_t row_id = (int64_t(batch) * pr.heads_q + head) * nqb_max + q_block;
  const int64_t rows_here = len_q - q0 < cta_rows ? len_q - q0 : cta_rows;

  KeyTileWalker walker;
  walker.first = int32_t(geometry.first_block(q_block));
  walker.end = int32_t(geometry.end_block(q_block));
  if (params.kv_block_count) {
    walker.blocks = params.kv_block_index + row_id * nkb_max;
    walker.n_blocks = int32_t(min(int64_t(max(params.kv_block_count[row_id], 0)), nkb_max));
  } else {
    walker.blocks = nullptr;
    walker.n_blocks = walker.end - walker.first;
  }
  walker.tiles_per_block = int32_t(bs / kKeys);
  walker.block_size = int32_t(bs);
  walker.len_k = len_k;
  walker.last_visible_key = pr.causal ? offset + q0 + rows_here - 1 : len_k - 1;
  // Sliding window (causal only): the CTA's first row sees the lowest keys.
  const int64_t window = pr.causal ? pr.window : 0;
  walker.first_visible_key = window > 0 ? offset + q0 - window + 1 : 0;

  const T* q_base = static_cast<const T*>(params.q.data) +
                    sequence_base(pr.cu_seqlens_q, batch, head, params.q.batch_stride,
                                  params.q.head_stride, params.q.token_stride);
  const T* k_base = static_cast<const T*>(params.k.data) +
                    sequence_base(pr.cu_seqlens_k, batch, kv_head, params.k.batch_stride,
                                  params.k.head_stride, params.k.token_stride);
  const T* v_base = static_cast<const T*>(params.v.data) +
                    sequence_base(pr.cu_seqlens_k, batch, kv_head, params.v.batch_stride,
                                  params.v.head_stride, params.v.token_stride);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  // Q tile: rows beyond the sequence are zero.
  for (int idx = tid; idx < kRows * kChunks; idx += Tile::kThreads) {
    const int row = idx / kChunks, chunk = idx % kChunks;
    const bool valid = row < rows_here;
    const T* src = q_base + (valid ? (q0 + row) * params.q.token_stride : 0) + chunk * 8;
    cp_async_16(smem_address(smem_q + swizzled<kHeadDim>(row, chunk)), src, valid);
  }
  // K/V tiles: thread tid copies 16-byte chunk (tid % kChunks) of rows tid / kChunks +
  // kKvRowsPerPass * i, so the k-loop only adds to a per-thread base pointer.
  constexpr int kKvRowsPerPass = Tile::kThreads / kChunks;
  static_assert(kKeys % kKvRowsPerPass == 0, "whole load passes");
  const int kv_chunk = tid % kChunks, kv_row0 = tid / kChunks;
  const int64_t k_stride = params.k.token_stride, v_stride = params.v.token_stride;
  const T* k_thread = k_base + kv_row0 * k_stride + kv_chunk * 8;
  const T* v_thread = v_base + kv_row0 * v_stride + kv_chunk * 8;
  auto load_kv = [&](int64_t k0, int buf) {
    T* k_dst = smem_k + buf * kKeys * kHeadDim;
    T* v_dst = smem_v + buf * kKeys * kHeadDim;
    // Pass i loads while i * kKvRowsPerPass < room (keys past len_k are zero).
    const int room = int(min(len_k - k0 - kv_row0, int64_t(kKeys)));
    const T* k_src = k_thread + k0 * k_stride;
    const T* v_src = v_thread + k0 * v_stride;
#pragma unroll
    for (int i = 0; i < kKeys / kKvRowsPerPass; ++i) {
      const int row = kv_row0 + i * kKvRowsPerPass;
      const bool valid = i * kKvRowsPerPass < room;
      cp_async_16(smem_address(k_dst + swizzled<kHeadDim>(row, kv_chunk)),
                  valid ? k_src + i * kKvRowsPerPass * k_stride : k_base, valid);
      cp_async_16(smem_address(v_dst + swizzled<kHeadDim>(row, kv_chunk)),
                  valid ? v_src + i * kKvRowsPerPass * v_stride : v_base, valid);
    }
  };

  int64_t k0 = walker.next();
  if (k0 >= 0) load_kv(k0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // Q fragments: loaded once when they fit in registers, else re-read per k-step below.
  uint32_t q_frag[kQInRegisters ? kDSteps : 1][4];
  if constexpr (kQInRegisters) {
    const int row = warp * 16 + (lane & 15);
    for (int kk = 0; kk < kDSteps; ++kk)
      ldmatrix_x4(q_frag[kk], smem_address(smem_q + swizzled<kHeadDim>(row, kk * 2 + (lane >> 4))));
  }

  float o_acc[kMTiles][2 * kDSteps][4];
  float row_max[kMTiles][2], row_sum[kMTiles][2];
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
    for (int n = 0; n < 2 * kDSteps; ++n) o_acc[m][n][0] = o_acc[m][n][1] = o_acc[m][n][2] = o_acc[m][n][3] = 0.f;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      row_max[m][r] = -INFINITY;
      row_sum[m][r] = 0.f;
    }
  }
  const float scale_log2 = params.scale * kLog2e;

  int buf = 0;
  while (k0 >= 0) {
    const int64_t k0_next = walker.next();
    if (k0_next >= 0) load_kv(k0_next, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    const T* k_tile = smem_k + buf * kKeys * kHeadDim;
    const T* v_tile = smem_v + buf * kKeys * kHeadDim;

    float s[kMTiles][8][4];
#pragma unroll
    for (int m = 0; m < kMTiles; ++m)
#pragma unroll
      for (int n = 0; n < 8; ++n) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDSteps; ++kk) {
      uint32_t a[kMTiles][4];
      if constexpr (kQInRegisters) {
#pragma unroll
        for (int e = 0; e < 4; ++e) a[0][e] = q_frag[kk][e];
      } else {
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          const int row = warp * Tile::kWarpRows + m * 16 + (lane & 15);
          ldmatrix_x4(a[m], smem_address(smem_q + swizzled<kHeadDim>(row, kk * 2 + (lane >> 4))));
        }
      }
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        const int key = np * 16 + ((lane >> 4) << 3) + (lane & 7);
        ldmatrix_x4(b, smem_address(k_tile + swizzled<kHeadDim>(key, kk * 2 + ((lane >> 3) & 1))));
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          Traits::mma(s[m][2 * np], a[m], b[0], b[1]);
          Traits::mma(s[m][2 * np + 1], a[m], b[2], b[3]);
        }
      }
    }

    // The window's lower edge crosses the tile when its first key is out of reach of the CTA's
    // last row.
    const bool needs_mask = k0 + kKeys > len_k || (pr.causal && k0 + kKeys - 1 > offset + q0) ||
                            (window > 0 && offset + q0 + kRows - 1 - k0 >= window);
    if (needs_mask) {
      // Key and row positions relative to the CTA's first row (32-bit: lengths < 2^31).
      const int key_shift = int(k0 - offset - q0);
      const int keys_left = int(len_k - k0 < kKeys ? len_k - k0 : kKeys);
#pragma unroll
      for (int m = 0; m < kMTiles; ++m)
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = n * 8 + 2 * t4 + (e & 1);
            const int row = warp * Tile::kWarpRows + m * 16 + g + 8 * (e >> 1);
            // key + key_shift - row: the key's position minus the row's (<= 0 is causal).
            const bool visible = key < keys_left && (!pr.causal || key + key_shift <= row) &&
                                 (window == 0 || row - (key + key_shift) < window);
            if (!visible) s[m][n][e] = -INFINITY;
          }
    }

    // Online softmax; each row lives in one quad (4 lanes).
#pragma unroll
    for (int m = 0; m < kMTiles; ++m)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int n = 0; n < 8; ++n) tile_max = fmaxf(tile_max, fmaxf(s[m][n][2 * r], s[m][n][2 * r + 1]));
        tile_max = quad_max(tile_max);
        const float new_max = fmaxf(row_max[m][r], tile_max);
        const float base = new_max == -INFINITY ? 0.f : new_max * scale_log2;
        const float correction = exp2f(row_max[m][r] * scale_log2 - base);
        row_max[m][r] = new_max;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < 8; ++n) {
          s[m][n][2 * r] = exp2f(fmaf(s[m][n][2 * r], scale_log2, -base));
          s[m][n][2 * r + 1] = exp2f(fmaf(s[m][n][2 * r + 1], scale_log2, -base));
          sum += s[m][n][2 * r] + s[m][n][2 * r + 1];
        }
        row_sum[m][r] = row_sum[m][r] * correction + sum;
#pragma unroll
        for (int n = 0; n < 2 * kDSteps; ++n) {
          o_acc[m][n][2 * r] *= correction;
          o_acc[m][n][2 * r + 1] *= correction;
        }
      }

    // O += P V: P comes straight from the S accumulators (C layout == A layout per k16 step).
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        a[m][0] = Traits::pack(s[m][2 * kk][0], s[m][2 * kk][1]);
        a[m][1] = Traits::pack(s[m][2 * kk][2], s[m][2 * kk][3]);
        a[m][2] = Traits::pack(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
        a[m][3] = Traits::pack(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
      }
      const int key = kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7);
#pragma unroll
      for (int dp = 0; dp < kDSteps; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_address(v_tile + swizzled<kHeadDim>(key, dp * 2 + (lane >> 4))));
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          Traits::mma(o_acc[m][2 * dp], a[m], b[0], b[1]);
          Traits::mma(o_acc[m][2 * dp + 1], a[m], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this buffer
    buf ^= 1;
    k0 = k0_next;
  }

  // Epilogue: normalise, write O and the log-sum-exp (natural log of the scaled logits).
  T* out_base = static_cast<T*>(params.out.data) +
                sequence_base(pr.cu_seqlens_q, batch, head, params.out.batch_stride,
                              params.out.head_stride, params.out.token_stride);
#pragma unroll
  for (int m = 0; m < kMTiles; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float total = quad_sum(row_sum[m][r]);
      const int64_t row = warp * Tile::kWarpRows + m * 16 + g + 8 * r;
      if (row >= rows_here) continue;
      const float inv = total > 0.f ? 1.f / total : 0.f;
      T* dst = out_base + (q0 + row) * params.out.token_stride + 2 * t4;
#pragma unroll
      for (int n = 0; n < 2 * kDSteps; ++n)
        *reinterpret_cast<uint32_t*>(dst + n * 8) =
            Traits::pack(o_acc[m][n][2 * r] * inv, o_acc[m][n][2 * r + 1] * inv);
      if (params.lse && t4 == 0) {
        params.lse[(int64_t(batch) * pr.heads_q + head) * pr.max_len_q + q0 + row] =
            total > 0.f ? row_max[m][r] * params.scale + logf(total) : -INFINITY;
      }
    }
}

// Host side: grid and launch of one specialisation.
template <typename T, int kHeadDim, int kMTiles>
cudaError_t launch_block_sparse_attention_variant(const AttentionParams& params, cudaStream_t stream) {
  using Tile = AttentionTile<kHeadDim, kMTiles>;
  const auto kernel = block_sparse_attention_kernel<T, kHeadDim, kMTiles>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         Tile::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int64_t cta_rows = params.block_size < Tile::kRows ? params.block_size : Tile::kRows;
  const dim3 grid(unsigned(params.problem.heads_q),
                  unsigned(ceil_div(params.problem.max_len_q, cta_rows)),
                  unsigned(params.problem.batch));
  kernel<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

// Shipped: 4 warps x 32 rows. On the H200 it beat 8 warps x 16 rows at every length and density
// (bf16, d = 128: 280-290 vs 245-263 TFLOP/s dense; docs/benchmarks.md).
template <typename T, int kHeadDim>
cudaError_t launch_block_sparse_attention(const AttentionParams& params, cudaStream_t stream) {
  return launch_block_sparse_attention_variant<T, kHeadDim, 2>(params, stream);
}

}  // namespace xattn::kernels::cuda::detail
