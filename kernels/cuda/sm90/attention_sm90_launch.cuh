// Host side of the sm_90a block-sparse attention: TMA descriptors, grid and launch of one
// specialisation. Included by one instantiation file per (dtype, head_dim) in sm90/.
#pragma once

#include "../launchers.h"
#include "attention_sm90.cuh"
#include "tensor_maps.h"

namespace xattn::kernels::cuda::detail {

template <typename T, int kHeadDim>
cudaError_t launch_block_sparse_attention_sm90(const AttentionParams& params, cudaStream_t stream) {
  using Tile = sm90::AttentionTile<kHeadDim>;
  sm90::AttentionArgs args;
  args.params = params;
  if (cudaError_t err = sm90::encode_attention_maps(params, Tile::kRows, &args.q_map, &args.k_map,
                                                    &args.v_map);
      err != cudaSuccess)
    return err;
  const auto kernel = sm90::block_sparse_attention_sm90_kernel<T, kHeadDim>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         Tile::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(params.problem.heads_q),
                  unsigned(ceil_div(params.problem.max_len_q, int64_t(Tile::kRows))),
                  unsigned(params.problem.batch));
  kernel<<<grid, Tile::kThreads, Tile::kSmemBytes, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace xattn::kernels::cuda::detail
