// The `xattn` executable end to end: exit codes, one-line errors, estimate and calibrate on the
// bundled synthetic capture, no overwrite without --force, statistics re-search.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include "cli_runner.h"
#include "scratch.h"
#include "xattn/io/profile.h"

namespace xattn {
namespace {

using testing::run_xattn;

const std::string kSample = std::string(XATTN_SOURCE_DIR) + "/examples/data/sample_capture.h5";

int count_lines(const std::string& text) {
  int lines = 0;
  for (char c : text) lines += c == '\n';
  return lines;
}

TEST(Cli, UsageAndErrorsAreOneLineWithDistinctCodes) {
  EXPECT_EQ(run_xattn("").code, 2);
  const testing::CliResult unknown = run_xattn("frobnicate");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.out.find("unknown command"), std::string::npos);
  const testing::CliResult bad_option = run_xattn("estimate --no-such-option");
  EXPECT_EQ(bad_option.code, 2);
  EXPECT_EQ(count_lines(bad_option.out), 1) << bad_option.out;

  const test_files::ScratchFolder folder("xattn-cli-errors-");
  const testing::CliResult missing = run_xattn("estimate --capture " + folder.file("none.h5"));
  EXPECT_NE(missing.code, 0);
  EXPECT_EQ(count_lines(missing.out), 1) << missing.out;
  std::ofstream(folder.file("junk.h5")) << "this is not HDF5";
  const testing::CliResult junk = run_xattn("estimate --capture " + folder.file("junk.h5"));
  EXPECT_EQ(junk.code, 3) << junk.out;
  EXPECT_EQ(count_lines(junk.out), 1) << junk.out;
  const testing::CliResult bad_stride = run_xattn("estimate --capture " + kSample + " --stride 3");
  EXPECT_EQ(bad_stride.code, 2) << bad_stride.out;
  EXPECT_NE(bad_stride.out.find("stride"), std::string::npos);
}

TEST(Cli, EstimateOnTheBundledSample) {
  const test_files::ScratchFolder folder("xattn-cli-estimate-");
  const std::string out = folder.file("masks.h5");
  const testing::CliResult run = run_xattn("estimate --capture " + kSample + " --out " + out);
  ASSERT_EQ(run.code, 0) << run.out;
  EXPECT_NE(run.out.find("SYNTHETIC"), std::string::npos);
  EXPECT_NE(run.out.find("mean density"), std::string::npos);
  EXPECT_TRUE(io::path_exists(out));
  const testing::CliResult again = run_xattn("estimate --capture " + kSample + " --out " + out);
  EXPECT_EQ(again.code, 4) << again.out;
  EXPECT_NE(again.out.find("--force"), std::string::npos);
  EXPECT_EQ(run_xattn("estimate --capture " + kSample + " --out " + out + " --force").code, 0);
}

TEST(Cli, CalibrateOnCaptureThenResearchFromStatistics) {
  const test_files::ScratchFolder folder("xattn-cli-calibrate-");
  const std::string profile = folder.file("profile.h5");
  const std::string stats = folder.file("stats.h5");
  const testing::CliResult run = run_xattn("calibrate --capture " + kSample + " --out " + profile + " --stats-out " +
                          stats + " --taus 0.5,0.8,0.9,0.95,1 --block-size 128 --holdout 0.5");
  ASSERT_EQ(run.code, 0) << run.out;
  EXPECT_NE(run.out.find("uniform"), std::string::npos) << run.out;
  const io::Profile p = io::read_profile(profile);
  ASSERT_FALSE(p.thresholds.empty());
  for (float tau : p.thresholds)
    EXPECT_TRUE(tau == 0.5f || tau == 0.8f || tau == 0.9f || tau == 0.95f || tau == 1.f) << tau;
  EXPECT_LE(p.predicted_mean_error, p.budget.epsilon + 1e-9);

  // An existing profile is kept without --force, and stays intact.
  const int64_t size_before = io::file_size(profile);
  const testing::CliResult again = run_xattn("calibrate --capture " + kSample + " --out " + profile);
  EXPECT_EQ(again.code, 4) << again.out;
  EXPECT_EQ(io::file_size(profile), size_before);

  // The statistics file alone is enough to search again, with another budget.
  const std::string tighter = folder.file("tighter.h5");
  const testing::CliResult research = run_xattn("calibrate --stats " + stats + " --out " + tighter + " --epsilon 0.01");
  ASSERT_EQ(research.code, 0) << research.out;
  const io::Profile t = io::read_profile(tighter);
  EXPECT_GE(t.predicted_mean_density, p.predicted_mean_density - 1e-9);
}

}  // namespace
}  // namespace xattn
