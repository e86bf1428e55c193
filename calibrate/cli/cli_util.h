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
// returns true: the command then returns 0.
bool parse_or_help(const std::vector<std::string>& args,
                   const boost::program_options::options_description& options,
                   boost::program_options::variables_map& vm, const char* usage = "");

// "0.5,0.9,1" -> {0.5, 0.9, 1}; a malformed item throws xattn::Error naming `option`.
std::vector<double> parse_number_list(const std::string& text, const char* option);

}  // namespace xattn::cli
