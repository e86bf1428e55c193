// sm_90a antidiagonal scoring, bf16_hd64 (one specialisation per file so builds parallelise).
#include "scoring_sm90.cuh"

namespace xattn::kernels::cuda::detail {
template cudaError_t launch_antidiagonal_scoring_sm90<__nv_bfloat16, 64>(const ScoringParams&, const ScoringChunk&, cudaStream_t);
}  // namespace xattn::kernels::cuda::detail
