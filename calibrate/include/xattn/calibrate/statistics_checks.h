// Plausibility of a statistics file's numbers, checked when it is read for a search or a report:
// the threshold search trusts them, and a negative error would be clamped to a profile claiming
// error 0 (issue 11).
#pragma once

#include <string>

#include "xattn/calibrate/statistics.h"

namespace xattn::calibrate {

// Throws xattn::Error kBadInput naming `source`, the array, the entry (sample, layer, head, τ) and
// the value when: a density or recall is not a finite number in [0, 1]; an output or projected
// error is negative or infinite (NaN stays allowed: "not measured"); the candidate τ are not
// ascending values in (0, 1]; a sample has no queries or more queries than keys.
// Also: a layer index that is negative or repeated.
void check_statistics_values(const Statistics& statistics, const std::string& source);

// A statistics file given by a user: parsed once in a child process first (HDF5 1.10 can crash
// on a damaged file: io::h5::check_parses_safely), then read and its values checked
// (check_statistics_values). Throws like read_statistics, or kBadInput.
Statistics read_checked_statistics(const std::string& path);

// Statistics a profile can be made from alone (`xattn calibrate --stats`): model_signature is the
// key xattn writes (calibrate::signature_key) with positive layers, heads_q, heads_kv and head_dim,
// heads_q equal to the file's, and every layer index below layers. Throws kBadInput otherwise.
void check_statistics_signature(const Statistics& statistics, const std::string& source);

}  // namespace xattn::calibrate
