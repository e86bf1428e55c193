// Progress reporting on stderr: a bar with ETA on a terminal, plain lines (every 10%) otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

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

}  // namespace xattn::cli
