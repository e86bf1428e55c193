// Damaged HDF5 files that crash, hang or overflow inside HDF5 1.10 itself (found by the fuzz
// targets of tests/fuzz, kept in tests/fuzz/regressions/): every reader parses a user's file in a
// child process first (io::h5::check_parses_safely), so xattn refuses them as bad input (exit 3,
// one line) instead of crashing. docs/robustness.md lists the faults.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/io/paths.h"

namespace xattn {
namespace {

const std::string kSource = XATTN_SOURCE_DIR;
const std::string kRegressions = kSource + "/tests/fuzz/regressions";

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A short limit for the hanging inputs (30 s by default).
class Hdf5Isolation : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("XATTN_HDF5_PARSE_SECONDS", "3", 1); }
  void TearDown() override { ::unsetenv("XATTN_HDF5_PARSE_SECONDS"); }
};

// The kind of error `parse` leads to, or none.
std::string outcome(const std::function<void()>& parse) {
  try {
    io::h5::check_parses_safely("/some/file.h5", "profile", parse);
    return "accepted";
  } catch (const Error& e) {
    return std::string(e.kind() == ErrorKind::kBadInput ? "bad input: " : "other: ") + e.what();
  }
}

TEST_F(Hdf5Isolation, ChildCrashesHangsAndExceptionsAreRefused) {
  EXPECT_EQ(outcome([] {}), "accepted");
  // An exception in the child comes back as it was thrown (the file is not parsed again here):
  // an xattn::Error with its kind and message, an HDF5 exception as bad input naming the file.
  EXPECT_EQ(outcome([] { throw Error(ErrorKind::kBadInput, "missing attribute"); }),
            "bad input: missing attribute");
  EXPECT_EQ(outcome([] { throw Error(ErrorKind::kIo, "cannot read"); }), "other: cannot read");
  const std::string hdf5 = outcome([] { throw H5::FileIException("H5Fopen", "not an HDF5 file"); });
  EXPECT_EQ(hdf5, "bad input: profile /some/file.h5: damaged or truncated HDF5 file (HDF5: not an "
                  "HDF5 file in H5Fopen); recreate it");
  const std::string crash = outcome([] { ::raise(SIGSEGV); });
  EXPECT_TRUE(has(crash, "bad input: profile /some/file.h5: the HDF5 library crashed reading it"))
      << crash;
  EXPECT_TRUE(has(crash, "signal 11")) << crash;
  const std::string abort = outcome([] { std::abort(); });
  EXPECT_TRUE(has(abort, "crashed")) << abort;
  ::setenv("XATTN_HDF5_PARSE_SECONDS", "1", 1);
  const std::string hang = outcome([] {
    for (;;) ::pause();
  });
  EXPECT_TRUE(has(hang, "did not finish reading it in 1 s")) << hang;
  // The child's effects stay in the child.
  int touched = 0;
  EXPECT_EQ(outcome([&] { touched = 1; }), "accepted");
  EXPECT_EQ(touched, 0);
}

// Each input once crashed or hung HDF5 1.10.8 (under ASan: heap overflows, memcpy overlaps,
// 2^44-byte allocations, endless loops in its metadata cache and global heap code).
TEST_F(Hdf5Isolation, FuzzFoundHdf5FaultsAreRefusedByTheCli) {
  const std::string model = kSource + "/examples/models/xattn-byte";
  const std::vector<std::pair<std::string, std::string>> commands = {
      {"profile", "profile show "},
      {"statistics", "calibrate --stats "},
      {"capture", "estimate --capture "},
      {"token_ids", "generate --model " + model + " --tokens 1 --input "},
  };
  int files = 0;
  for (const auto& [target, command] : commands) {
    if (target == "token_ids" && !io::path_exists(model + "/config.json")) continue;
    for (const std::string& name : io::folder_entries(kRegressions + "/" + target)) {
      const std::string path = kRegressions + "/" + target + "/" + name;
      SCOPED_TRACE(command + path);
      const testing::CliResult r = testing::run_xattn(command + path);
      EXPECT_EQ(r.code, 3) << r.out;
      EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
      EXPECT_FALSE(has(r.out, "internal error")) << r.out;
      ++files;
    }
  }
  EXPECT_GE(files, 8);
}

}  // namespace
}  // namespace xattn
