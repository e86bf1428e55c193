// The `xattn` executable on issue 11's bad inputs: each refused with one line and the exit code
// of docs/cli-errors.md before any work, nothing lost, nothing left behind after SIGINT/SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_runner.h"
#include "scratch.h"
#include "xattn/calibrate/statistics.h"

namespace xattn {
namespace {

using testing::CliResult;
using testing::run_xattn;

const std::string kSource = XATTN_SOURCE_DIR;
const std::string kSample = kSource + "/examples/data/sample_capture.h5";
const std::string kProfile = kSource + "/profiles/xattn-byte.h5";
const std::string kModel = kSource + "/examples/models/xattn-byte";
const std::string kHaystack = " --haystack " + kSource + "/examples/data/haystack.txt";

int count_lines(const std::string& text) {
  int lines = 0;
  for (char c : text) lines += c == '\n';
  return lines;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// One line on stderr, the expected code, and the words.
void expect_refused(const std::string& arguments, int code, const std::vector<std::string>& words) {
  SCOPED_TRACE(arguments);
  const CliResult r = run_xattn(arguments);
  EXPECT_EQ(r.code, code) << r.out;
  EXPECT_EQ(count_lines(r.out), 1) << r.out;
  for (const std::string& word : words) EXPECT_TRUE(has(r.out, word)) << word << " in: " << r.out;
}

// Case 1 (SIGFPE / LibTorch backtrace) and case 10 (nan accepted).
TEST(CliRobustness, EstimateRefusesBadBlockSettingsAndThresholds) {
  expect_refused("estimate --capture " + kSample + " --block-size 0", 2, {"--block-size 0"});
  expect_refused("estimate --capture " + kSample + " --stride 0", 2, {"--stride 0"});
  expect_refused("estimate --capture " + kSample + " --block-size -128", 2, {"--block-size -128"});
  expect_refused("estimate --capture " + kSample + " --stride -8", 2, {"--stride -8"});
  expect_refused("estimate --capture " + kSample + " --threshold nan", 2,
                 {"--threshold", "not a finite number"});
  expect_refused("estimate --capture " + kSample + " --threshold 1.5", 2, {"[0, 1]"});
  expect_refused("estimate --capture " + kSample + " --scale 0", 2, {"--scale"});
}

// Case 2: an output equal to another output or to an input, refused before the work, even with
// --force, and the input left as it was.
TEST(CliRobustness, OutputsEqualToAnInputAreRefusedEvenWithForce) {
  const test_files::ScratchFolder folder("xattn-cli-same-");
  const std::string capture = folder.file("capture.h5");
  test_files::copy_file(kSample, capture);
  const std::string before = read_file(capture);
  expect_refused("estimate --capture " + capture + " --out " + capture + " --force", 2,
                 {"is also an input", "--capture"});
  EXPECT_EQ(read_file(capture), before);

  const std::string profile = folder.file("p.h5");
  test_files::copy_file(kProfile, profile);
  const std::string profile_before = read_file(profile);
  expect_refused("profile export --json " + profile + " " + profile + " --force", 2,
                 {"--json", "is also an input"});
  expect_refused("report " + profile + " --html " + folder.path() + "/./p.h5 --force", 2,
                 {"--html", "is also an input"});
  EXPECT_EQ(read_file(profile), profile_before);
  EXPECT_EQ(folder.entry_count(), 2);
}

// Case 7: output folders (and /proc) are checked before the work.
TEST(CliRobustness, OutputFoldersAreCheckedBeforeTheWork) {
  const test_files::ScratchFolder folder("xattn-cli-folders-");
  const CliResult estimate =
      run_xattn("estimate --capture " + kSample + " --out " + folder.file("missing/x.h5"));
  EXPECT_EQ(estimate.code, 4) << estimate.out;
  EXPECT_FALSE(has(estimate.out, "density")) << "refused after the work: " << estimate.out;
  expect_refused("synth --out /proc/xattn-test.h5 --force", 4, {"does not accept new files"});
  if (!io::path_exists(kModel + "/config.json")) GTEST_SKIP() << "no bundled model";
  // Refused before the model loads (it prints its description first).
  expect_refused("eval niah --model " + kModel + kHaystack +
                     " --lengths 1k --depths 0.5 --samples 1 --json " + folder.file("missing/x.json"),
                 4, {"missing", "does not exist"});
}

// Case 8: device errors are one line, no LibTorch backtrace.
TEST(CliRobustness, DeviceErrorsAreOneLine) {
  if (!io::path_exists(kModel + "/config.json")) GTEST_SKIP() << "no bundled model";
  expect_refused("generate --model " + kModel + " --prompt hi --device foo", 2, {"--device 'foo'"});
  expect_refused("generate --model " + kModel + " --prompt hi --device cuda:x", 2, {"cuda:N"});
  const CliResult cuda = run_xattn("generate --model " + kModel + " --prompt hi --device cuda");
  if (cuda.code != 0) {  // a CPU build, or no GPU visible
    EXPECT_EQ(cuda.code, 5) << cuda.out;
    EXPECT_EQ(count_lines(cuda.out), 1) << cuda.out;
  }
  expect_refused("eval niah --model " + kModel + kHaystack + " --threshold nan", 2, {"--threshold"});
  expect_refused("generate --model " + kModel + " --prompt hi --threshold 0.9 --block-size 100",
                 2, {"--block-size 100"});
}

// Case 9: a binary file as token ids: one clean line, no raw control bytes.
TEST(CliRobustness, BinaryTokenFileGivesACleanMessage) {
  if (!io::path_exists(kModel + "/config.json")) GTEST_SKIP() << "no bundled model";
  const test_files::ScratchFolder folder("xattn-cli-binary-");
  const std::string binary = folder.file("ids.txt");
  const char bytes[] = "12 7\x1b[2J\x07\x00\x01zz";
  std::ofstream(binary, std::ios::binary) << std::string(bytes, sizeof bytes - 1);
  const CliResult r = run_xattn("generate --model " + kModel + " --input " + binary);
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(has(r.out, "binary file")) << r.out;
  const std::string noisy = folder.file("noisy.txt");
  std::ofstream(noisy, std::ios::binary) << "12 7\x1b[2J\x07 5\n";
  const CliResult n = run_xattn("generate --model " + kModel + " --input " + noisy);
  EXPECT_EQ(n.code, 3) << n.out;
  EXPECT_TRUE(has(n.out, "\\x1B[2J\\x07")) << n.out;
  for (const CliResult* result : {&r, &n}) {
    EXPECT_EQ(count_lines(result->out), 1) << result->out;
    for (char c : result->out) EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 32) << int(c);
  }
}

// Case 5: a checkpoint whose tensors' byte ranges overlap is bad input (exit 3), one line naming
// both tensors, before any work. The bundled model with one tensor moved onto another's bytes.
TEST(CliRobustness, OverlappingSafetensorsTensorsAreRefused) {
  if (!io::path_exists(kModel + "/config.json")) GTEST_SKIP() << "no bundled model";
  const test_files::ScratchFolder folder("xattn-cli-overlap-");
  const std::string model = folder.file("model");
  io::make_folders(model);
  test_files::copy_file(kModel + "/config.json", model + "/config.json");
  const std::string bytes = read_file(kModel + "/model.safetensors");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | uint8_t(bytes[i]);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_size));
  const std::string k = "model.layers.0.self_attn.k_proj.weight";
  const std::string v = "model.layers.0.self_attn.v_proj.weight";
  ASSERT_EQ(header[k]["shape"], header[v]["shape"]);
  const auto k_range = header[k]["data_offsets"], v_range = header[v]["data_offsets"];
  const bool k_first = k_range[0].get<uint64_t>() < v_range[0].get<uint64_t>();
  header[k_first ? v : k]["data_offsets"] = k_first ? k_range : v_range;  // aliases the earlier
  const std::string text = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);
  std::ofstream(model + "/model.safetensors", std::ios::binary)
      << out << text << bytes.substr(8 + header_size);
  const std::vector<std::string> words = {"overlap", "'" + k + "'", "'" + v + "'"};
  expect_refused("generate --model " + model + " --prompt hi", 3, words);
  expect_refused("calibrate --model " + model + " --data " + kSource +
                     "/examples/data/calibration.txt --out " + folder.file("p.h5"),
                 3, words);
  EXPECT_FALSE(io::path_exists(folder.file("p.h5")));
}

// Case 11 and consistent codes: a missing input is 4 (I/O) in every command, a folder given as a
// file is called a folder, an input whose content is wrong is 3.
TEST(CliRobustness, InputErrorsHaveOneCodeAcrossCommands) {
  const test_files::ScratchFolder folder("xattn-cli-inputs-");
  const std::string none = folder.file("none.h5");
  expect_refused("estimate --capture " + none, 4, {"no such file"});
  expect_refused("profile show " + none, 4, {"no such file"});
  expect_refused("report " + none, 4, {"no such file"});
  expect_refused("report " + kProfile + " --stats " + none, 4, {"no such file"});
  expect_refused("calibrate --stats " + none, 4, {"no such file"});
  expect_refused("profile show " + folder.path(), 4, {"is a folder"});
  expect_refused("report " + kProfile + " --stats " + folder.path(), 4, {"is a folder"});
  expect_refused("estimate --capture " + folder.path(), 4, {"is a folder"});
  std::ofstream(folder.file("text.h5")) << "not hdf5";
  expect_refused("profile show " + folder.file("text.h5"), 3, {"not an HDF5 file"});
  expect_refused("estimate --capture " + folder.file("text.h5"), 3, {"not an HDF5 file"});
  if (!io::path_exists(kModel + "/config.json")) GTEST_SKIP() << "no bundled model";
  expect_refused("generate --model " + kModel + " --input " + none, 4, {"no such file"});
  expect_refused("capture --model " + kModel + " --text " + none + " --out " +
                     folder.file("c.h5"),
                 4, {"no such file"});
}

// Case 6 in `xattn report`: statistics with a negative error are bad input (exit 3).
TEST(CliRobustness, ReportRefusesStatisticsWithNegativeErrors) {
  const test_files::ScratchFolder folder("xattn-cli-negative-");
  const std::string stats = folder.file("stats.h5");
  const std::string profile = folder.file("profile.h5");
  const CliResult run =
      run_xattn("calibrate --capture " + kSample + " --out " + profile + " --stats-out " + stats +
                " --taus 0.5,0.9,1 --holdout 0");
  ASSERT_EQ(run.code, 0) << run.out;
  calibrate::Statistics s = calibrate::read_statistics(stats);
  s.output_error[1] = -0.25f;
  const std::string negative = folder.file("negative.h5");
  calibrate::write_statistics(negative, s, false);
  expect_refused("report " + profile + " --stats " + negative, 3, {"output_error", "-0.25"});
}

// Item 3: SIGINT / SIGTERM while a file is being written: the temporary file is removed, one line
// is printed, the exit code is 130 / 143, and the existing output (replaced only with --force at
// the end) is untouched.
struct Stopped {
  int code = -1;
  std::string err;
  bool saw_temporary = false;
};

Stopped stop_while_writing(const test_files::ScratchFolder& folder, const std::string& out,
                           int signal_number) {
  const std::string err_path = folder.file("stderr.txt");
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    // About 100 MB in 2 s on a 2-core machine; the signal comes as soon as the temporary exists.
    ::execl(XATTN_CLI_PATH, "xattn", "synth", "--out", out.c_str(), "--force", "--layers", "16",
            "--len", "2048", "--heads-q", "8", "--heads-kv", "8", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  Stopped result;
  const std::string prefix = "." + io::file_name(out) + ".tmp-";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const std::string& name : io::folder_entries(folder.path()))
      if (name.rfind(prefix, 0) == 0) result.saw_temporary = true;
    if (result.saw_temporary) break;
    if (::waitpid(pid, &status, WNOHANG) == pid) return result;  // finished too soon
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(pid, signal_number);
  ::waitpid(pid, &status, 0);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = read_file(err_path);
  return result;
}

TEST(CliRobustness, SignalsRemoveTemporaryFilesAndKeepExistingOutputs) {
  for (const int signal_number : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(signal_number);
    const test_files::ScratchFolder folder("xattn-cli-signal-");
    const std::string out = folder.file("capture.h5");
    std::ofstream(out) << "an earlier result";
    const Stopped stopped = stop_while_writing(folder, out, signal_number);
    ASSERT_TRUE(stopped.saw_temporary) << "synth finished before the signal";
    EXPECT_EQ(stopped.code, 128 + signal_number) << stopped.err;
    EXPECT_EQ(count_lines(stopped.err), 1) << stopped.err;
    EXPECT_TRUE(has(stopped.err, signal_number == SIGINT ? "interrupted" : "terminated"))
        << stopped.err;
    EXPECT_EQ(read_file(out), "an earlier result");
    // capture.h5 and stderr.txt only: no temporary file left.
    EXPECT_EQ(io::folder_entries(folder.path()), (std::vector<std::string>{"capture.h5", "stderr.txt"}));
  }
}

// `xattn calibrate`'s cases 2, 4, 6, 7, 8 and 11 end to end. The checks are unit-tested in
// test_robustness.cpp; here through the executable (cmd_calibrate.cpp calls
// check_calibrate_arguments and check_calibrate_outputs, calibrate/cli/calibrate_checks.h).
TEST(CliRobustness, CalibrateRefusesBadArgumentsBeforeTheWork) {
  const test_files::ScratchFolder folder("xattn-cli-calibrate-");
  const std::string stats = folder.file("stats.h5");
  const std::string profile = folder.file("profile.h5");
  ASSERT_EQ(run_xattn("calibrate --capture " + kSample + " --out " + profile + " --stats-out " +
                      stats + " --taus 0.5,0.9,1 --holdout 0")
                .code,
            0);
  const std::string stats_before = read_file(stats);
  expect_refused("calibrate --capture " + kSample + " --out " + folder.file("a.h5") +
                     " --stats-out " + folder.file("a.h5"),
                 2, {"name the same file"});
  expect_refused("calibrate --stats " + stats + " --out " + stats + " --force", 2,
                 {"is also an input"});
  EXPECT_EQ(read_file(stats), stats_before);
  expect_refused("calibrate --stats " + stats + " --stride 16 --block-size 64", 2,
                 {"stride 8, block size 128", "stride 16"});
  expect_refused("calibrate --stats " + stats + " --sparse-last-block", 2,
                 {"--sparse-last-block"});
  expect_refused("calibrate --stats " + stats + " --stride 3", 2, {"--stride 3"});
  expect_refused("calibrate --stats " + stats + " --out " + folder.file("missing/p.h5"), 4,
                 {"does not exist"});
  expect_refused("calibrate --stats " + stats + " --epsilon nan", 2, {"--epsilon", "finite"});
  expect_refused("calibrate --stats " + stats + " --samples -1", 2, {"--samples"});
  expect_refused("calibrate --stats " + stats + " --device foo", 2, {"--device 'foo'"});
  expect_refused("calibrate --stats " + folder.path(), 4, {"is a folder"});
  calibrate::Statistics s = calibrate::read_statistics(stats);
  s.output_error[0] = -1.0f;
  calibrate::write_statistics(folder.file("negative.h5"), s, false);
  expect_refused("calibrate --stats " + folder.file("negative.h5"), 3, {"output_error"});
  s.output_error[0] = std::numeric_limits<float>::infinity();
  calibrate::write_statistics(folder.file("inf.h5"), s, false);
  expect_refused("calibrate --stats " + folder.file("inf.h5"), 3, {"output_error"});
}

}  // namespace
}  // namespace xattn
