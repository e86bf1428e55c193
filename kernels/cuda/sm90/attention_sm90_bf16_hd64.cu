// sm_90a block-sparse attention, bf16_hd64 (one specialisation per file so builds parallelise).
#include "attention_sm90_launch.cuh"

namespace xattn::kernels::cuda::detail {
template cudaError_t launch_block_sparse_attention_sm90<__nv_bfloat16, 64>(const AttentionParams&, cudaStream_t);
}  // namespace xattn::kernels::cuda::detail
