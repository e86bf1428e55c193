// libFuzzer target: the token-id reader (read_token_ids, `--input` of generate, eval and capture).
// Inputs that start with the HDF5 signature are written as ids.h5 (read as an integer dataset),
// the others as ids.txt (integers separated by spaces, newlines or commas). Accepted ids must be
// non-negative (text) and the list non-empty.
#include <cstring>

#include "fuzz_common.h"
#include "xattn/model/tokens.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  static const fuzz::ShmFile text_file("ids.txt");
  static const fuzz::ShmFile hdf5_file("ids.h5");
  const bool hdf5 = size >= 8 && std::memcmp(data, "\x89HDF\r\n\x1a\n", 8) == 0;
  const std::string& path = (hdf5 ? hdf5_file : text_file).write(data, size);
  fuzz::expect_refusal_only([&] {
    const std::vector<int64_t> ids = model::read_token_ids(path);
    if (!hdf5) {
      fuzz::require(!ids.empty(), "a text file yields at least one id");
      for (int64_t id : ids) fuzz::require(id >= 0, "text ids are non-negative");
    }
  });
  return 0;
}
