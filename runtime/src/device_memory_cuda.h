// The CUDA half of xattn/device_memory.h, in src/cuda/ (built only when LibTorch has CUDA).
#pragma once

#include "xattn/device_memory.h"

namespace xattn::runtime::cuda_memory {

DeviceMemory device_memory(int device);
void reset_peak(int device);

}  // namespace xattn::runtime::cuda_memory
