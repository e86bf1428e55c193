// Antidiagonal scoring, fp16_hd128 (one specialisation per file so builds parallelise).
#include "../scoring_kernel.cuh"

namespace xattn::kernels::cuda::detail {
template cudaError_t launch_antidiagonal_scoring<__half, 128>(const ScoringParams&, const ScoringChunk&,
                                                          cudaStream_t);
}  // namespace xattn::kernels::cuda::detail
