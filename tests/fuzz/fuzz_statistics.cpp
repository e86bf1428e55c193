// libFuzzer target: statistics files (read_checked_statistics, as `calibrate --stats` and `report`
// read them: parsed in a child process first, read, values checked) from a mutated HDF5 image in
// /dev/shm, then the checks of `calibrate --stats` (check_statistics_signature) and,
// for files that pass, the model signature and the search problem calibration builds from them.
#include <numeric>

#include "fuzz_common.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/calibrate/statistics_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  static const fuzz::ShmFile file("statistics.h5");
  const std::string& path = file.write(data, size);
  fuzz::expect_refusal_only([&] {
    const calibrate::Statistics s = calibrate::read_checked_statistics(path);
    const size_t entries = s.samples.size() * s.layers.size() * size_t(s.heads_q) * size_t(s.num_taus());
    fuzz::require(s.density.size() == entries && s.output_error.size() == entries,
                  "arrays hold samples x layers x heads x taus entries");
    calibrate::check_statistics_signature(s, path);
    const io::ModelSignature model = calibrate::parse_signature_key(s.model_signature);
    for (int64_t layer : s.layers)
      fuzz::require(layer >= 0 && layer < model.num_layers, "layers inside the signature's model");
    fuzz::require(model.heads_q == s.heads_q, "heads_q as the signature says");
    if (s.samples.empty()) return;
    std::vector<int64_t> samples(s.samples.size());
    std::iota(samples.begin(), samples.end(), 0);
    (void)calibrate::search_problem_from(s, samples, calibrate::ErrorMetric::kOutputError, 0.01,
                                         std::nullopt, /*worst_case=*/true);
  });
  return 0;
}
