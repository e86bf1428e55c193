// `mpirun -n N xattn calibrate` against the same calibration in one process (docs/mpi.md): the
// statistics and the profile must be bit-identical, with samples split across 2 ranks and with
// 2 samples on 3 and 4 ranks (layers split too); a failing rank must end the job with its
// message and no output. Registered (label mpi) only when the build has MPI.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "scratch.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/io/paths.h"
#include "xattn/io/profile.h"

namespace {

using xattn::test_files::ScratchFolder;

struct Launch {
  int code = -1;
  std::string out;
};

Launch launch(const std::string& command) {
  Launch result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// One thread per process in both runs: LibTorch's reductions may round differently with
// another thread count, and bit-identity is only promised for equal ones.
const std::string kEnv = "OMP_NUM_THREADS=1 ";
std::string mpirun(int ranks) {
  return std::string(XATTN_MPIEXEC) + " -n " + std::to_string(ranks) +
         " --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS ";
}
const std::string kMpirun = mpirun(2);

// `samples` samples of 512 tokens of the bundled model (6 layers), every round(1/holdout)-th
// held out.
std::string calibrate_args(const std::string& out, int samples = 4,
                           const std::string& holdout = "0.25") {
  const std::string src = XATTN_SOURCE_DIR;
  return std::string(XATTN_CLI_PATH) + " calibrate --model " + src +
         "/examples/models/xattn-byte --data " + src +
         "/examples/data/calibration.txt --sample-len 512 --samples " + std::to_string(samples) +
         " --holdout " + holdout + " --frontier-points 2 --sensitivity-samples 1 --out " + out;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// The profile as JSON (every number at round-trip precision) without created_utc, the only
// field that legitimately differs (a wall-clock time).
std::string profile_text(const std::string& path) {
  std::istringstream in(xattn::io::profile_to_json(xattn::io::read_profile(path)));
  std::string line, text;
  while (std::getline(in, line))
    if (line.find("\"created_utc\"") == std::string::npos) text += line + "\n";
  return text;
}

// A multi-rank run's output: printed once, by rank 0.
void expect_printed_once(const Launch& run) {
  size_t wrote = 0;
  for (size_t at = run.out.find("wrote "); at != std::string::npos; at = run.out.find("wrote ", at + 1))
    ++wrote;
  EXPECT_EQ(wrote, 1u) << run.out;
}

// The statistics (folder/stats-<name>.h5) and profiles (folder/<name>.h5) of two runs are equal
// bit for bit.
void expect_same_calibration(const ScratchFolder& folder, const std::string& one,
                             const std::string& other, size_t samples) {
  const auto a = xattn::calibrate::read_statistics(folder.file("stats-" + one + ".h5"));
  const auto b = xattn::calibrate::read_statistics(folder.file("stats-" + other + ".h5"));
  ASSERT_EQ(a.samples.size(), samples);
  ASSERT_EQ(b.samples.size(), a.samples.size());
  for (size_t i = 0; i < a.samples.size(); ++i) {
    EXPECT_EQ(a.samples[i].source, b.samples[i].source);
    EXPECT_EQ(a.samples[i].len_q, b.samples[i].len_q);
    EXPECT_EQ(a.samples[i].prefix_len, b.samples[i].prefix_len);
  }
  EXPECT_EQ(a.model_signature, b.model_signature);
  EXPECT_EQ(a.layers, b.layers);
  EXPECT_TRUE(same_bits(a.settings.taus, b.settings.taus));
  EXPECT_TRUE(same_bits(a.density, b.density));
  EXPECT_TRUE(same_bits(a.recall_mean, b.recall_mean));
  EXPECT_TRUE(same_bits(a.recall_min, b.recall_min));
  EXPECT_TRUE(same_bits(a.output_error, b.output_error));
  EXPECT_TRUE(same_bits(a.projected_error, b.projected_error));
  EXPECT_TRUE(same_bits(a.prefix_density, b.prefix_density));
  EXPECT_FALSE(a.layer_kl_sensitivity.empty());
  EXPECT_TRUE(same_bits(a.layer_kl_sensitivity, b.layer_kl_sensitivity));
  EXPECT_EQ(a.sensitivity_samples, b.sensitivity_samples);

  const std::string pa = profile_text(folder.file(one + ".h5"));
  const std::string pb = profile_text(folder.file(other + ".h5"));
  EXPECT_NE(pa.find("\"thresholds\""), std::string::npos);
  EXPECT_EQ(pa, pb);
}

TEST(MpiCalibrate, TwoRanksMatchOneProcessBitForBit) {
  ScratchFolder folder;
  const Launch one = launch(kEnv + calibrate_args(folder.file("one.h5")));
  ASSERT_EQ(one.code, 0) << one.out;
  const Launch two = launch(kEnv + kMpirun + calibrate_args(folder.file("two.h5")));
  ASSERT_EQ(two.code, 0) << two.out;
  expect_printed_once(two);
  expect_same_calibration(folder, "one", "two", 4);
}

// Fewer samples than ranks: the ranks split the layers too (calibrate::shard_work). 2 samples
// (1 fit, 1 held out) of 6 layers: on 3 ranks, layers 0-2 and 3-5 of the first and all of the
// second; on 4 ranks, layers 0-2 and 3-5 of each, layer-streamed.
TEST(MpiCalibrate, FewerSamplesThanRanksSplitLayersAndMatchOneProcessBitForBit) {
  ScratchFolder folder;
  const Launch one = launch(kEnv + calibrate_args(folder.file("one.h5"), 2, "0.5"));
  ASSERT_EQ(one.code, 0) << one.out;
  const Launch three = launch(kEnv + mpirun(3) + calibrate_args(folder.file("three.h5"), 2, "0.5"));
  ASSERT_EQ(three.code, 0) << three.out;
  expect_printed_once(three);
  expect_same_calibration(folder, "one", "three", 2);
  const Launch four = launch(kEnv + mpirun(4) + calibrate_args(folder.file("four.h5"), 2, "0.5") +
                             " --stream-layers");
  ASSERT_EQ(four.code, 0) << four.out;
  expect_printed_once(four);
  EXPECT_NE(four.out.find("layer-streamed"), std::string::npos) << four.out;
  expect_same_calibration(folder, "one", "four", 2);
}

TEST(MpiCalibrate, FailingRankEndsTheJobWithItsMessageAndNoOutput) {
  ScratchFolder folder;
  const Launch r = launch(kEnv + "XATTN_TEST_FAIL_RANK=1 " + kMpirun + "-x XATTN_TEST_FAIL_RANK " +
                    calibrate_args(folder.file("p.h5")));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("rank 1 failed: XATTN_TEST_FAIL_RANK=1 asked this rank to fail"),
            std::string::npos) << r.out;
  EXPECT_EQ(folder.entry_count(), 0) << r.out;
}

TEST(MpiCalibrate, ExistingOutputIsRefusedByEveryRankBeforeWork) {
  ScratchFolder folder;
  { std::ofstream(folder.file("p.h5")) << "keep"; }
  const Launch r = launch(kEnv + kMpirun + calibrate_args(folder.file("p.h5")));
  EXPECT_EQ(r.code, 4) << r.out;  // ErrorKind::kIo
  EXPECT_NE(r.out.find("rank 0 failed: " + folder.file("p.h5") + " already exists"),
            std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("calibrate: "), r.out.find("calibrate: error")) << "work started: " << r.out;
  EXPECT_EQ(folder.entry_count(), 1);
}

}  // namespace
