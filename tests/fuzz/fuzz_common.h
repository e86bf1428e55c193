// Shared by the libFuzzer targets of tests/fuzz (docs/robustness.md): the input as a file in
// /dev/shm for readers that take a path, and the rule every target checks: a reader given any
// bytes returns normally or throws xattn::Error of an expected kind (kBadInput: exit 3); any other
// exception, kind, crash, leak or sanitizer report is a finding.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <sanitizer/common_interface_defs.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <string>

#include "xattn/error.h"

namespace xattn::fuzz {

// A file in /dev/shm (memory, no disk I/O) named per process, so parallel jobs do not collide;
// rewritten with each input, removed at exit. The readers run on it exactly as on a user's file.
class ShmFile {
 public:
  explicit ShmFile(const std::string& name)
      : path_("/dev/shm/xattn-fuzz-" + std::to_string(::getpid()) + "-" + name) {}
  ~ShmFile() { ::unlink(path_.c_str()); }
  ShmFile(const ShmFile&) = delete;
  ShmFile& operator=(const ShmFile&) = delete;

  const std::string& path() const { return path_; }

  // Replaces the file's content with `size` bytes.
  const std::string& write(const uint8_t* data, size_t size) const {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) die("cannot create " + path_);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd, data + done, size - done);
      if (n <= 0) die("cannot write " + path_);
      done += static_cast<size_t>(n);
    }
    ::close(fd);
    return path_;
  }

  [[noreturn]] static void die(const std::string& what) {
    std::fprintf(stderr, "fuzz harness: %s\n", what.c_str());
    std::abort();
  }

 private:
  std::string path_;
};

// The readers parse HDF5 files in a child process first (io::h5::check_parses_safely); a child
// that trips a sanitizer must not run libFuzzer's death callback, which would save the input as
// a crash although the parent refuses it cleanly. Children forget the callback.
inline const bool kChildrenLeaveNoArtifacts = [] {
  ::pthread_atfork(nullptr, nullptr, [] { __sanitizer_set_death_callback(nullptr); });
  return true;
}();

inline const char* kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "kInvalidArgument (exit 2)";
    case ErrorKind::kBadInput: return "kBadInput (exit 3)";
    case ErrorKind::kIo: return "kIo (exit 4)";
    case ErrorKind::kCuda: return "kCuda (exit 5)";
    case ErrorKind::kInternal: return "kInternal (exit 6)";
  }
  return "?";
}

// Runs `read`; an xattn::Error of one of `allowed` kinds is the expected refusal of bad bytes.
// Anything else thrown aborts with the message, so libFuzzer records the input as a crash.
template <typename F>
void expect_refusal_only(F&& read, std::initializer_list<ErrorKind> allowed = {ErrorKind::kBadInput}) {
  try {
    read();
  } catch (const Error& e) {
    for (ErrorKind kind : allowed)
      if (e.kind() == kind) return;
    std::fprintf(stderr, "fuzz finding: xattn::Error of kind %s on bad input: %s\n",
                 kind_name(e.kind()), e.what());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz finding: an exception other than xattn::Error escaped: %s\n",
                 e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "fuzz finding: a non-std exception escaped (HDF5's H5::Exception?)\n");
    std::abort();
  }
}

// An invariant a successful read must give; a violation is a finding.
inline void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz finding: accepted input breaks: %s\n", what);
    std::abort();
  }
}

}  // namespace xattn::fuzz
