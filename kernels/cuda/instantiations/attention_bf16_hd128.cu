// Block-sparse attention, bf16_hd128 (one specialisation per file so builds parallelise).
#include "../attention_kernel.cuh"

namespace xattn::kernels::cuda::detail {
template cudaError_t launch_block_sparse_attention<__nv_bfloat16, 128>(const AttentionParams&, cudaStream_t);
}  // namespace xattn::kernels::cuda::detail
