// Helpers shared by the subcommands: progress on stderr (a bar with ETA on a terminal, plain
// lines every 10% otherwise), durations, bundled file paths and number lists.
#pragma once

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace xattn::cli {

class Progress {
 public:
  explicit Progress(std::string title);
  void update(int64_t done, int64_t total, const std::string& what);
  // Ends the bar's line on a terminal.
  void finish();

 private:
  std::string title_;
  bool terminal_;
  int64_t last_decile_ = -1;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

// "1:05" style.
std::string format_duration(double seconds);

// Folder of the project's bundled files (examples/...): ./examples when run from the source tree,
// else the source folder this binary was built from.
std::string bundled_path(const std::string& relative);

// Parses a subcommand's options into `vm`. With --help it prints `usage` and the options and
// returns true: the command then returns 0. `positional` (not shown among the options: the usage
// line shows them) takes the arguments without an option name.
bool parse_or_help(const std::vector<std::string>& args,
                   const boost::program_options::options_description& options,
                   boost::program_options::variables_map& vm, const char* usage = "",
                   const boost::program_options::options_description* positional_options = nullptr,
                   const boost::program_options::positional_options_description* positional =
                       nullptr);

// Writes `text` to standard output ("-") or atomically to a file (an existing one only with
// `overwrite`).
void write_text_output(const std::string& path, const std::string& text, bool overwrite);

// "0.5,0.9,1" -> {0.5, 0.9, 1}; a malformed or non-finite item (nan, inf) throws xattn::Error
// naming `option`.
std::vector<double> parse_number_list(const std::string& text, const char* option);

// Checks done before any work, so that a mistake costs no time. Each throws xattn::Error with the
// exit code of docs/cli-errors.md.

// --stride / --block-size as the kernels take them: block size a power of two, the stride a
// positive divisor of it (kInvalidArgument naming the option and the value).
void check_block_settings(int64_t stride, int64_t block_size);
// τ values of `option`: finite, in [0, 1] (kInvalidArgument).
void check_thresholds(const std::vector<double>& taus, const char* option);
// A number option that must be finite and at least `minimum` (kInvalidArgument).
void check_finite_at_least(double value, double minimum, const char* option);

// A path given on the command line, with the option that gave it ("--out"). An output whose
// `to_stdout_ok` is set takes "-" for standard output (text outputs: --json, --html).
struct PathOption {
  std::string option;
  std::string path;
  bool to_stdout_ok = false;
};
// "-": the output goes to standard output.
inline bool is_stdout(const std::string& path) { return path == "-"; }
// Outputs (empty paths skipped) must be writable now: absent or --force, not a folder, in an
// existing folder that takes new files (kIo); no two outputs may name one file, and no output may
// name one of the inputs, even with --force (kInvalidArgument: writing would destroy the input).
// "-" is standard output where the output allows it, else refused (kInvalidArgument).
void check_outputs(const std::vector<PathOption>& outputs, const std::vector<PathOption>& inputs,
                   bool force);
// Inputs (empty paths skipped) must be readable regular files (kIo, io::check_readable_file).
void check_inputs(const std::vector<PathOption>& inputs);

// One line, no control bytes: a message quoting a file's bytes must not drive the terminal.
std::string one_line(const std::string& message);

}  // namespace xattn::cli
