// Issue 11's library-side guards: error messages formatted without iostreams, the kernels'
// validation throwing the project's error type, unreadable inputs and unwritable folders named
// as such, temporary files recorded for the CLI's signal handler, implausible statistics
// refused, and `xattn calibrate`'s up-front argument checks (calibrate/cli/calibrate_checks.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <boost/program_options.hpp>
#include <cmath>
#include <fstream>
#include <limits>
#include <vector>

#include "calibrate_checks.h"
#include "cli_util.h"
#include "scratch.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/calibrate/statistics_checks.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/kernels/cpu.h"

namespace xattn {
namespace {

// The kind of the xattn::Error `call` throws, with its message in `message`.
template <typename Call>
ErrorKind kind_of(Call&& call, std::string* message = nullptr) {
  try {
    call();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "no xattn::Error thrown";
  return ErrorKind::kInternal;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Robustness, MessagesFormatNumbersAndSizesWithoutIostreams) {
  const std::vector<int64_t> sizes = {1, 32, 4096, 128};
  EXPECT_EQ(detail::concat("len ", int64_t(-5), ", count ", size_t(7), ", tau ", 0.9, ", ",
                           std::nan(""), ", ", true, ", ", 'x', ", ", sizes),
            "len -5, count 7, tau 0.9, nan, true, x, [1, 32, 4096, 128]");
  EXPECT_EQ(detail::concat("t ", at::IntArrayRef(sizes), " ", at::kBFloat16, " ", at::Device("cpu")),
            "t [1, 32, 4096, 128] BFloat16 cpu");
  const char* none = nullptr;
  EXPECT_EQ(detail::concat("a", none, std::string("b")), "a(null)b");
}

TEST(Robustness, KernelValidationThrowsTheProjectsErrorType) {
  kernels::ScoringParams params;  // every pointer null, lengths 0
  std::string message;
  EXPECT_EQ(kind_of([&] { kernels::cpu::antidiagonal_scores(params); }, &message),
            ErrorKind::kInvalidArgument);
  EXPECT_TRUE(has(message, "len")) << message;
  kernels::AttentionParams attention;
  EXPECT_EQ(kind_of([&] { kernels::cpu::block_sparse_attention(attention); }),
            ErrorKind::kInvalidArgument);
}

TEST(Robustness, UnreadableInputsAndUnwritableFoldersAreNamedAsSuch) {
  const test_files::ScratchFolder folder("xattn-robust-io-");
  std::string message;
  EXPECT_EQ(kind_of([&] { io::check_readable_file(folder.file("none.h5"), "--stats"); }, &message),
            ErrorKind::kIo);
  EXPECT_TRUE(has(message, "--stats") && has(message, "no such file")) << message;
  EXPECT_EQ(kind_of([&] { io::check_readable_file(folder.path(), "profile"); }, &message),
            ErrorKind::kIo);
  EXPECT_TRUE(has(message, "is a folder")) << message;
  EXPECT_EQ(kind_of([&] { io::check_writable("/proc/xattn-test.h5", true); }, &message),
            ErrorKind::kIo);
  EXPECT_TRUE(has(message, "does not accept new files")) << message;
  EXPECT_EQ(kind_of([&] { io::check_writable(folder.file("no/such/a.h5"), true); }, &message),
            ErrorKind::kIo);
  EXPECT_TRUE(has(message, "does not exist")) << message;
  io::check_writable(folder.file("fine.h5"), false);
  EXPECT_EQ(folder.entry_count(), 0);  // the probe file is gone
}

TEST(Robustness, TemporaryFilesAreRecordedUntilMovedOrDiscarded) {
  const test_files::ScratchFolder folder("xattn-robust-temp-");
  const std::string kept = io::temporary_path_for(folder.file("kept.h5"));
  const std::string dropped = io::temporary_path_for(folder.file("dropped.h5"));
  const std::string moved = io::temporary_path_for(folder.file("moved.h5"));
  for (const std::string& temp : {kept, dropped, moved}) std::ofstream(temp) << "partial";
  io::move_into_place(moved, folder.file("moved.h5"), false);
  io::discard_temporary(dropped);
  EXPECT_EQ(folder.entry_count(), 2);  // moved.h5 and the one temporary still recorded
  io::remove_temporaries();            // what the CLI's SIGINT / SIGTERM handler runs
  EXPECT_FALSE(io::path_exists(kept));
  EXPECT_TRUE(io::path_exists(folder.file("moved.h5")));
  EXPECT_EQ(folder.entry_count(), 1);
}

// Projected errors "not measured", where Statistics has them (format 1.2).
template <typename S>
auto mark_projected_unmeasured(S& s, int) -> decltype(s.projected_error, void()) {
  s.projected_error.assign(s.output_error.size(), std::numeric_limits<float>::quiet_NaN());
}
template <typename S>
void mark_projected_unmeasured(S&, long) {}

calibrate::Statistics small_statistics() {
  calibrate::Statistics s;
  s.settings.taus = {0.5, 1.0};
  s.model_name = "test";
  s.model_signature = "llama layers=1 heads_q=2 heads_kv=1 head_dim=16 config= weights=";
  s.heads_q = 2;
  s.heads_kv = 1;
  s.head_dim = 16;
  s.layers = {0};
  s.samples = {{64, 64, "test#0"}};
  s.density = {0.3f, 1.0f, 0.4f, 1.0f};
  s.recall_mean = {0.9f, 1.0f, 0.95f, 1.0f};
  s.recall_min = {0.8f, 1.0f, 0.9f, 1.0f};
  s.output_error = {0.1f, 0.0f, 0.05f, 0.0f};
  mark_projected_unmeasured(s, 0);
  return s;
}

TEST(Robustness, ImplausibleStatisticsAreBadInput) {
  calibrate::check_statistics_values(small_statistics(), "s.h5");
  std::string message;
  calibrate::Statistics negative = small_statistics();
  negative.output_error[2] = -0.2f;
  EXPECT_EQ(kind_of([&] { calibrate::check_statistics_values(negative, "s.h5"); }, &message),
            ErrorKind::kBadInput);
  EXPECT_TRUE(has(message, "output_error") && has(message, "head 1") && has(message, "-0.2"))
      << message;
  calibrate::Statistics infinite = small_statistics();
  infinite.output_error[0] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(kind_of([&] { calibrate::check_statistics_values(infinite, "s.h5"); }),
            ErrorKind::kBadInput);
  calibrate::Statistics nan_density = small_statistics();
  nan_density.density[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(kind_of([&] { calibrate::check_statistics_values(nan_density, "s.h5"); }),
            ErrorKind::kBadInput);
  calibrate::Statistics negative_layer = small_statistics();
  negative_layer.layers = {-1};
  EXPECT_EQ(kind_of([&] { calibrate::check_statistics_values(negative_layer, "s.h5"); }, &message),
            ErrorKind::kBadInput);
  EXPECT_TRUE(has(message, "layer index -1")) << message;
}

// Found by fuzz_statistics: `calibrate --stats` made the profile's threshold table from the
// signature's layer count, so a file whose signature named no layers (or fewer than its layer
// indices) wrote past the table, and a malformed number escaped as std::invalid_argument.
TEST(Robustness, StatisticsMustNameTheirModelToBeCalibratedAlone) {
  calibrate::check_statistics_signature(small_statistics(), "s.h5");
  std::string message;
  auto refused = [&](const std::string& signature, const std::vector<int64_t>& layers,
                     const std::string& words) {
    calibrate::Statistics s = small_statistics();
    s.model_signature = signature;
    s.layers = layers;
    EXPECT_EQ(kind_of([&] { calibrate::check_statistics_signature(s, "s.h5"); }, &message),
              ErrorKind::kBadInput)
        << signature;
    EXPECT_TRUE(has(message, "s.h5") && has(message, words)) << message;
  };
  refused("seed-signature", {0}, "does not name the model");
  refused("llama layers=1 heads_q=2 heads_kv=1 head_dim=16", {2}, "layer 2 is outside");
  refused("llama layers=x heads_q=2 heads_kv=1 head_dim=16", {0}, "'layers' is 'x'");
  refused("llama layers=99999999999999999999 heads_q=2 heads_kv=1 head_dim=16", {0},
          "positive integer");
  refused("llama layers=1 heads_q=4 heads_kv=1 head_dim=16", {0}, "heads_q=4");
  refused("llama layers=1 heads_q", {0}, "not name=value");
}

// The library refuses such statistics too: run_calibration called directly (not through the CLI's
// checks) must not build a threshold table from a signature that names no model.
TEST(Robustness, RunCalibrationChecksStatisticsItself) {
  test_files::ScratchFolder scratch;
  calibrate::Statistics s = small_statistics();
  s.model_signature = "seed-signature";
  const std::string path = scratch.file("unsigned.h5");
  calibrate::write_statistics(path, s, false);
  calibrate::CalibrationConfig config;
  config.statistics_files = {path};
  std::string message;
  EXPECT_EQ(kind_of([&] { calibrate::run_calibration(config, nullptr); }, &message),
            ErrorKind::kBadInput);
  EXPECT_TRUE(has(message, "does not name the model")) << message;
}

// Parses `args` with options named and typed as `xattn calibrate`'s (calibrate/cli/
// cmd_calibrate.cpp); the checks read only the options a command has, defaults included.
boost::program_options::variables_map calibrate_options(const std::vector<std::string>& args) {
  namespace po = boost::program_options;
  po::options_description options;
  options.add_options()
      ("model", po::value<std::string>())
      ("data", po::value<std::vector<std::string>>()->multitoken())
      ("capture", po::value<std::vector<std::string>>()->multitoken())
      ("stats", po::value<std::vector<std::string>>()->multitoken())
      ("out", po::value<std::string>())("stats-out", po::value<std::string>())("force", "")
      ("device", po::value<std::string>()->default_value("cpu"))
      ("sample-len", po::value<int64_t>()->default_value(4096))
      ("samples", po::value<int64_t>()->default_value(4))
      ("stride", po::value<int64_t>()->default_value(8))
      ("block-size", po::value<int64_t>()->default_value(128))("sparse-last-block", "")
      ("taus", po::value<std::string>())
      ("metric", po::value<std::string>()->default_value("output_error"))
      ("epsilon", po::value<double>()->default_value(0.05))("cap", po::value<double>())
      ("error-aggregate", po::value<std::string>()->default_value("worst"))
      ("holdout", po::value<double>()->default_value(0.25))
      ("target-kl", po::value<double>())("target-nll-increase", po::value<double>());
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(options).run(), vm);
  po::notify(vm);
  return vm;
}

ErrorKind calibrate_check(const std::vector<std::string>& args, std::string* message = nullptr) {
  return kind_of([&] { cli::check_calibrate_arguments(calibrate_options(args)); }, message);
}

TEST(Robustness, CalibrateArgumentsAreCheckedBeforeAnyWork) {
  cli::check_calibrate_arguments(calibrate_options({}));
  std::string message;
  EXPECT_EQ(calibrate_check({"--epsilon", "nan"}, &message), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(has(message, "--epsilon nan") && has(message, "finite")) << message;
  EXPECT_EQ(calibrate_check({"--samples", "-1"}), ErrorKind::kInvalidArgument);
  EXPECT_EQ(calibrate_check({"--sample-len", "0"}), ErrorKind::kInvalidArgument);
  EXPECT_EQ(calibrate_check({"--block-size", "0"}), ErrorKind::kInvalidArgument);
  EXPECT_EQ(calibrate_check({"--stride", "3"}, &message), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(has(message, "--stride 3")) << message;
  EXPECT_EQ(calibrate_check({"--taus", "0.5,nan"}), ErrorKind::kInvalidArgument);
  EXPECT_EQ(calibrate_check({"--holdout", "1"}), ErrorKind::kInvalidArgument);
  EXPECT_EQ(calibrate_check({"--device", "foo"}, &message), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(has(message, "--device 'foo'")) << message;
  if (!at::hasCUDA()) {
    EXPECT_EQ(calibrate_check({"--device", "cuda"}, &message), ErrorKind::kCuda);
    EXPECT_TRUE(has(message, "--device cpu")) << message;
  }
  const test_files::ScratchFolder folder("xattn-robust-calibrate-");
  EXPECT_EQ(calibrate_check({"--stats", folder.path()}, &message), ErrorKind::kIo);
  EXPECT_TRUE(has(message, "is a folder")) << message;
  EXPECT_EQ(calibrate_check({"--capture", folder.file("none.h5")}), ErrorKind::kIo);
}

TEST(Robustness, StatisticsMeasuredAtOtherSettingsOrImplausibleAreRefused) {
  const test_files::ScratchFolder folder("xattn-robust-stats-");
  const std::string stats = folder.file("stats.h5");
  calibrate::write_statistics(stats, small_statistics(), false);  // stride 8, block 128, dense
  cli::check_calibrate_arguments(calibrate_options({"--stats", stats}));
  std::string message;
  EXPECT_EQ(calibrate_check({"--stats", stats, "--stride", "16", "--block-size", "64"}, &message),
            ErrorKind::kInvalidArgument);
  EXPECT_TRUE(has(message, "stride 8, block size 128") && has(message, "stride 16") &&
              has(message, "block size 64"))
      << message;
  EXPECT_EQ(calibrate_check({"--stats", stats, "--sparse-last-block"}, &message),
            ErrorKind::kInvalidArgument);
  EXPECT_TRUE(has(message, "--sparse-last-block")) << message;

  calibrate::Statistics negative = small_statistics();
  negative.output_error[0] = -0.5f;
  const std::string bad = folder.file("negative.h5");
  calibrate::write_statistics(bad, negative, false);
  EXPECT_EQ(calibrate_check({"--stats", bad}, &message), ErrorKind::kBadInput);
  EXPECT_TRUE(has(message, "-0.5")) << message;

  // Outputs: distinct, not an input, in a folder that exists.
  auto outputs = [&](const std::vector<std::string>& args, const std::string& out,
                     const std::string& stats_out) {
    return kind_of([&] { cli::check_calibrate_outputs(calibrate_options(args), out, stats_out); },
                   &message);
  };
  EXPECT_EQ(outputs({"--stats", stats, "--force"}, stats, ""), ErrorKind::kInvalidArgument);
  EXPECT_TRUE(has(message, "is also an input")) << message;
  EXPECT_EQ(outputs({}, folder.file("p.h5"), folder.path() + "/./p.h5"),
            ErrorKind::kInvalidArgument);
  EXPECT_TRUE(has(message, "--out and --stats-out name the same file")) << message;
  EXPECT_EQ(outputs({}, folder.file("missing/p.h5"), ""), ErrorKind::kIo);
  EXPECT_TRUE(has(message, "does not exist")) << message;
  cli::check_calibrate_outputs(calibrate_options({}), folder.file("p.h5"), folder.file("s.h5"));
}

}  // namespace
}  // namespace xattn
