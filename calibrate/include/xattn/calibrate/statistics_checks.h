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
void check_statistics_values(const Statistics& statistics, const std::string& source);

}  // namespace xattn::calibrate
