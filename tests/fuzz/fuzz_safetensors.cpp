// libFuzzer target: the safetensors header and index parser (parse_safetensors, the whole
// validation SafetensorsFile runs on its memory mapping), on the image in memory. An accepted
// image must satisfy what loading relies on: every tensor inside the data section, the tensors
// tiling it exactly, the byte count equal to the shape's; its bytes are then copied as load()
// does, so ASan sees any read outside the image.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fuzz_common.h"
#include "xattn/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  fuzz::expect_refusal_only([&] {
    // A copy of exactly `size` bytes: ASan reports a read past the end of the image.
    std::vector<uint8_t> image(data, data + size);
    const model::SafetensorsIndex index =
        model::parse_safetensors(image.data(), image.size(), "fuzz.safetensors");
    fuzz::require(index.data_offset >= 8 && index.data_offset <= size, "data section in the file");
    const uint64_t data_size = size - index.data_offset;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    std::vector<uint8_t> copy;
    for (const auto& [name, info] : index.tensors) {
      fuzz::require(info.begin <= info.end && info.end <= data_size, "tensor inside the data");
      ranges.emplace_back(info.begin, info.end);
      copy.resize(info.end - info.begin);
      if (!copy.empty())
        std::memcpy(copy.data(), image.data() + index.data_offset + info.begin, copy.size());
    }
    std::sort(ranges.begin(), ranges.end());
    uint64_t cursor = 0;
    for (const auto& [begin, end] : ranges) {
      fuzz::require(begin == cursor, "tensors tile the data section (no overlap, no gap)");
      cursor = end;
    }
    fuzz::require(cursor == data_size, "no bytes after the last tensor");
  });
  return 0;
}
