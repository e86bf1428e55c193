// `xattn calibrate`'s checks before any work (issue 11): every option's value, the inputs, the
// statistics files' settings and numbers, and the outputs. cmd_calibrate.cpp calls the two
// functions; each throws xattn::Error with the exit code of docs/cli-errors.md.
#pragma once

#include <boost/program_options.hpp>
#include <string>

namespace xattn::cli {

// Right after parsing: --device (cpu, cuda, cuda:N; CUDA present), --sample-len >= 2,
// --samples >= 1, --batch >= 1, --stride / --block-size, --taus in (0, 1], --epsilon and --cap
// finite >= 0, --holdout in [0, 1), --target-kl / --target-nll-increase finite >= 0, --metric,
// --error-aggregate; --model, --data, --capture and --stats readable; each --stats file's numbers
// plausible and naming their model (calibrate::check_statistics_values and
// check_statistics_signature, kBadInput) and measured at the asked --stride,
// --block-size and last-block rule (kInvalidArgument naming both settings: a profile labelled
// with other settings than its statistics would run other thresholds than calibrated).
void check_calibrate_arguments(const boost::program_options::variables_map& vm);

// Once the output paths are known: the profile `out` and the statistics `stats_out` (empty: none)
// writable now, distinct, and neither one of the inputs (cli_util's check_outputs).
void check_calibrate_outputs(const boost::program_options::variables_map& vm,
                             const std::string& out, const std::string& stats_out);

}  // namespace xattn::cli
