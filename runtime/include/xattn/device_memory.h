// Device memory figures for reports ("peak device memory"). On a CUDA device they come from
// LibTorch's caching allocator and cudaMemGetInfo (compiled only when LibTorch has CUDA); on the
// CPU, or in a build without CUDA, none are available and `available` stays false.
//
//   runtime::reset_peak_device_memory(device);
//   ... work ...
//   const runtime::DeviceMemory m = runtime::device_memory(device);
//   if (m.available) print(m.peak_allocated);
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace xattn::runtime {

struct DeviceMemory {
  bool available = false;
  int64_t allocated = 0;       // bytes held by tensors now
  int64_t peak_allocated = 0;  // the most held at once since the last reset
  int64_t free = 0;            // bytes the device can still give (cudaMemGetInfo)
  int64_t total = 0;
};

DeviceMemory device_memory(const at::Device& device);
// Starts a new peak (no effect where device_memory is unavailable).
void reset_peak_device_memory(const at::Device& device);

}  // namespace xattn::runtime
