// Block-sparse attention, fp16_hd64 (one specialisation per file so builds parallelise).
#include "../attention_kernel.cuh"

namespace xattn::kernels::cuda::detail {
template cudaError_t launch_block_sparse_attention<__half, 64>(const AttentionParams&, cudaStream_t);
}  // namespace xattn::kernels::cuda::detail
