// `mpirun -n 2 xattn calibrate` against the same calibration in one process (docs/mpi.md): the
// statistics and the profile must be bit-identical; a failing rank must end the job with its
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
const std::string kMpirun = std::string(XATTN_MPIEXEC) +
                            " -n 2 --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS ";

// 4 samples of 512 tokens of the bundled model: 3 fit, 1 held out.
std::string calibrate_args(const std::string& out) {
  const std::string src = XATTN_SOURCE_DIR;
  return std::string(XATTN_CLI_PATH) + " calibrate --model " + src +
         "/examples/models/xattn-byte --data " + src +
         "/examples/data/calibration.txt --sample-len 512 --samples 4 --frontier-points 2 "
         "--sensitivity-samples 1 --out " + out;
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

TEST(MpiCalibrate, TwoRanksMatchOneProcessBitForBit) {
  ScratchFolder folder;
  const Launch one = launch(kEnv + calibrate_args(folder.file("one.h5")));
  ASSERT_EQ(one.code, 0) << one.out;
  const Launch two = launch(kEnv + kMpirun + calibrate_args(folder.file("two.h5")));
  ASSERT_EQ(two.code, 0) << two.out;
  // Only rank 0 prints.
  size_t wrote = 0;
  for (size_t at = two.out.find("wrote "); at != std::string::npos; at = two.out.find("wrote ", at + 1))
    ++wrote;
  EXPECT_EQ(wrote, 1u) << two.out;

  const auto a = xattn::calibrate::read_statistics(folder.file("stats-one.h5"));
  const auto b = xattn::calibrate::read_statistics(folder.file("stats-two.h5"));
  ASSERT_EQ(a.samples.size(), 4u);
  ASSERT_EQ(b.samples.size(), a.samples.size());
  for (size_t i = 0; i < a.samples.size(); ++i) {
    EXPECT_EQ(a.samples[i].source, b.samples[i].source);
    EXPECT_EQ(a.samples[i].len_q, b.samples[i].len_q);
  }
  EXPECT_EQ(a.model_signature, b.model_signature);
  EXPECT_EQ(a.layers, b.layers);
  EXPECT_TRUE(same_bits(a.settings.taus, b.settings.taus));
  EXPECT_TRUE(same_bits(a.density, b.density));
  EXPECT_TRUE(same_bits(a.recall_mean, b.recall_mean));
  EXPECT_TRUE(same_bits(a.recall_min, b.recall_min));
  EXPECT_TRUE(same_bits(a.output_error, b.output_error));
  EXPECT_TRUE(same_bits(a.projected_error, b.projected_error));
  EXPECT_FALSE(a.layer_kl_sensitivity.empty());
  EXPECT_TRUE(same_bits(a.layer_kl_sensitivity, b.layer_kl_sensitivity));
  EXPECT_EQ(a.sensitivity_samples, b.sensitivity_samples);

  const std::string pa = profile_text(folder.file("one.h5")), pb = profile_text(folder.file("two.h5"));
  EXPECT_NE(pa.find("\"thresholds\""), std::string::npos);
  EXPECT_EQ(pa, pb);
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
