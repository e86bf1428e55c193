// Device memory figures; see xattn/device_memory.h.
#include "xattn/device_memory.h"

#ifdef XATTN_TORCH_HAS_CUDA
#include "device_memory_cuda.h"
#endif

namespace xattn::runtime {

DeviceMemory device_memory(const at::Device& device) {
#ifdef XATTN_TORCH_HAS_CUDA
  if (device.is_cuda()) return cuda_memory::device_memory(device.has_index() ? device.index() : 0);
#endif
  (void)device;
  return {};
}

void reset_peak_device_memory(const at::Device& device) {
#ifdef XATTN_TORCH_HAS_CUDA
  if (device.is_cuda()) cuda_memory::reset_peak(device.has_index() ? device.index() : 0);
#endif
  (void)device;
}

}  // namespace xattn::runtime
