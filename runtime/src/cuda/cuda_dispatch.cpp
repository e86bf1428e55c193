// CUDA dispatch of the runtime: runs the kernels of kernels/cuda on LibTorch's current stream of
// the tensors' device, with scratch memory from LibTorch's caching allocator. Compiled only when
// LibTorch has CUDA.
#include "cuda_dispatch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <string>

#include "xattn/error.h"
#include "xattn/kernels/cuda.h"

namespace xattn::runtime::cuda_dispatch {
namespace {

// The device holding `pointer` (the kernels run where their data lives).
int device_of(const void* pointer) {
  cudaPointerAttributes attributes{};
  const cudaError_t err = cudaPointerGetAttributes(&attributes, pointer);
  XATTN_CHECK(err == cudaSuccess && attributes.type == cudaMemoryTypeDevice, ErrorKind::kCuda,
              "expected a CUDA device pointer (", cudaGetErrorString(err),
              "); pass tensors that live on a CUDA device");
  return attributes.device;
}

template <typename Params>
void check_supported(const Params& params, const char* what) {
  const std::string why = kernels::cuda::unsupported_reason(params);
  XATTN_CHECK(why.empty(), ErrorKind::kInvalidArgument, what, " on CUDA: ", why);
}

void check_launch(cudaError_t err, const char* what) {
  XATTN_CHECK(err == cudaSuccess, ErrorKind::kCuda, what, " failed on the GPU: ",
              cudaGetErrorString(err));
}

// XATTN_CUDA_KERNEL=sm80|sm90|auto picks the scoring and attention kernels of every call that
// leaves the choice to the library (A/B benchmarks, or a fallback should an sm_90a kernel
// misbehave). Read at every call (a getenv is cheap next to a launch), so one process can compare.
kernels::CudaKernel kernel_from_environment() {
  const char* value = std::getenv("XATTN_CUDA_KERNEL");
  const std::string v = value ? value : "auto";
  if (v == "sm80") return kernels::CudaKernel::kSm80;
  if (v == "sm90") return kernels::CudaKernel::kSm90;
  XATTN_CHECK(v == "auto" || v.empty(), ErrorKind::kInvalidArgument, "XATTN_CUDA_KERNEL=", v,
              " is unknown; use sm80, sm90 or auto");
  return kernels::CudaKernel::kAuto;
}

}  // namespace

void antidiagonal_scores(const kernels::ScoringParams& params_in) {
  const int device = device_of(params_in.q.data);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  kernels::ScoringParams params = params_in;
  if (params.kernel == kernels::CudaKernel::kAuto) params.kernel = kernel_from_environment();
  check_supported(params, "antidiagonal scoring");
  const size_t bytes = kernels::cuda::antidiagonal_scores_workspace_bytes(params);
  const at::Tensor workspace =
      at::empty({int64_t(bytes)}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA, device));
  check_launch(kernels::cuda::antidiagonal_scores(params, workspace.data_ptr(), bytes,
                                                  at::cuda::getCurrentCUDAStream(device).stream()),
               "antidiagonal scoring");
}

void select_blocks(const kernels::SelectionParams& params) {
  check_supported(params, "block selection");
  const int device = device_of(params.block_scores);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  check_launch(kernels::cuda::select_blocks(params, at::cuda::getCurrentCUDAStream(device).stream()),
               "block selection");
}


void block_sparse_attention(const kernels::AttentionParams& params_in) {
  const int device = device_of(params_in.q.data);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  kernels::AttentionParams params = params_in;
  if (params.kernel == kernels::CudaKernel::kAuto)
    params.kernel = kernel_from_environment();
  check_supported(params, "block-sparse attention");
  check_launch(kernels::cuda::block_sparse_attention(
                   params, at::cuda::getCurrentCUDAStream(device).stream()),
               "block-sparse attention");
}

std::string device_name(int index) {
  int device = index;
  if (device < 0) check_launch(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp properties{};
  check_launch(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
  return properties.name;
}

}  // namespace xattn::runtime::cuda_dispatch
