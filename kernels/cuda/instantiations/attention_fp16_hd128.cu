// Block-sparse attention, fp16_hd128 (one specialisation per file so builds parallelise).
#include "../attention_kernel.cuh"

namespace xattn::kernels::cuda::detail {
template cudaError_t launch_block_sparse_attention<__half, 128>(const AttentionParams&, cudaStream_t);
}  // namespace xattn::kernels::cuda::detail
