// Scratch files and folders for tests, on xattn's POSIX path helpers (xattn/paths.h says why
// std::filesystem is avoided in programs that link LibTorch).
#pragma once

#include <unistd.h>

#include <fstream>
#include <string>

#include "xattn/io/paths.h"

namespace xattn::test_files {

// A fresh folder under $TMPDIR or /tmp, removed with its contents at scope exit.
class ScratchFolder {
 public:
  explicit ScratchFolder(const std::string& prefix = "xattn-test-")
      : path_(io::make_temporary_folder(prefix)) {}
  ~ScratchFolder() { io::remove_tree(path_); }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return io::join_path(path_, name); }
  int entry_count() const { return int(io::folder_entries(path_).size()); }

 private:
  std::string path_;
};

// "<$TMPDIR or /tmp>/<pid>-<name>": a per-process file name outside any folder the test owns.
inline std::string scratch_file(const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  return io::join_path(tmp && *tmp ? tmp : "/tmp", std::to_string(::getpid()) + "-" + name);
}

inline void copy_file(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
}

inline void truncate_file(const std::string& path, int64_t size) {
  if (::truncate(path.c_str(), off_t(size)) != 0) throw std::runtime_error("truncate " + path);
}

}  // namespace xattn::test_files
