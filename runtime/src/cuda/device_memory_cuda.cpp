// CUDA device memory figures from LibTorch's caching allocator; see xattn/device_memory.h.
// Compiled only when LibTorch has CUDA.
#include "device_memory_cuda.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include "xattn/error.h"

namespace xattn::runtime::cuda_memory {

DeviceMemory device_memory(int device) {
  DeviceMemory m;
  decltype(c10::cuda::CUDACachingAllocator::getDeviceStats(0)) stats;
  try {
    stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  } catch (const c10::Error&) {
    return m;  // the allocator has not run on this device yet (see reset_peak): no figures
  }
  // Index 0 of every stat array is the aggregate over the allocator's pools.
  m.allocated = stats.allocated_bytes[0].current;
  m.peak_allocated = stats.allocated_bytes[0].peak;
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  size_t free = 0, total = 0;
  const cudaError_t err = cudaMemGetInfo(&free, &total);
  XATTN_CHECK(err == cudaSuccess, ErrorKind::kCuda, "cudaMemGetInfo failed: ",
              cudaGetErrorString(err));
  m.free = static_cast<int64_t>(free);
  m.total = static_cast<int64_t>(total);
  m.available = true;
  return m;
}

void reset_peak(int device) {
  // Before the first CUDA allocation the allocator has no per-device state and PyTorch 2.x
  // refuses the call ("Invalid device argument"); nothing is allocated yet, so the peak is
  // already zero and there is nothing to reset.
  try {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
  } catch (const c10::Error&) {
  }
}

}  // namespace xattn::runtime::cuda_memory
