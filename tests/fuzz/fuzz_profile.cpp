// libFuzzer target: calibration profiles (read_profile, as `profile show`, `report`, `generate
// --profile` and load_engine read them) from a mutated HDF5 image in /dev/shm; an accepted profile
// passes validate_profile and is exported to JSON and summarised as the CLI does.
#include "fuzz_common.h"
#include "xattn/io/profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  static const fuzz::ShmFile file("profile.h5");
  const std::string& path = file.write(data, size);
  fuzz::expect_refusal_only([&] {
    const io::Profile p = io::read_profile(path);
    io::validate_profile(p);
    (void)io::profile_to_json(p);
    (void)io::format_profile_summary(p);
  });
  return 0;
}
