// `xattn calibrate`: statistics -> per-head threshold search -> held-out validation -> profile.
// With no arguments it calibrates the bundled model on the bundled text.
#include <boost/program_options.hpp>
#include <cmath>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <fstream>
#include <iterator>
#include <optional>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/util/Exception.h>

#include "calibrate_checks.h"
#include "cli_util.h"
#include "commands.h"
#include "mpi_shard.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"
#include "xattn/io/paths.h"

namespace xattn::cli {
namespace {

namespace po = boost::program_options;

constexpr const char* kDefaultModel = "examples/models/xattn-byte";
constexpr const char* kDefaultData = "examples/data/calibration.txt";

std::string timestamp() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::ostringstream out;
  out << std::put_time(&utc, "%Y%m%d-%H%M%S");
  return out.str();
}

std::string percent(double x) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << 100.0 * x << "%";
  return out.str();
}

void print_summary(const calibrate::CalibrationConfig& config,
                   const calibrate::CalibrationResult& r, double seconds) {
  const auto& p = r.profile;
  const auto& opt = r.search.optimal;
  std::cout << io::format_profile_summary(p) << "\n";
  std::cout << std::fixed << std::setprecision(4);
  std::cout << "samples: " << r.fit_samples.size() << " fit, " << r.holdout_samples.size()
            << " held out; metric " << calibrate::error_metric_name(r.metric) << " ("
            << (r.worst_case_error ? "worst" : "mean") << " over samples), budget "
            << std::setprecision(4) << std::defaultfloat << r.epsilon_used << std::fixed << "\n";
  if (!r.statistics.layer_kl_sensitivity.empty()) {
    std::cout << "layer KL sensitivity (measured on " << r.statistics.sensitivity_samples
              << " fitting samples):";
    for (double c : r.statistics.layer_kl_sensitivity)
      std::cout << " " << std::setprecision(3) << std::defaultfloat << c;
    std::cout << std::fixed << "\n";
  }
  std::cout << "per-head thresholds: predicted density " << percent(opt.mean_density)
            << ", predicted error " << std::defaultfloat << std::setprecision(4) << opt.error
            << std::fixed;
  if (r.holdout)
    std::cout << "; held out: density " << percent(r.holdout->measured_mean_density);
  std::cout << "\n";
  if (!p.frontier.empty()) std::cout << calibrate::format_frontier(p.frontier);
  if (r.end_to_end) {
    const auto& e = *r.end_to_end;
    std::cout << std::setprecision(4) << "end to end on held-out samples (" << e.tokens
              << " tokens): density " << percent(e.density) << ", KL " << std::defaultfloat
              << std::setprecision(3) << e.kl_mean << std::fixed << std::setprecision(4)
              << ", NLL " << e.nll_dense << " -> " << e.nll_sparse << " ("
              << std::showpos << e.nll_sparse - e.nll_dense << std::noshowpos << ")\n";
    if (r.comparison) {
      // The headline: against one uniform τ at the same density, and at the same quality.
      std::cout << "per-head vs uniform tau (held out, interpolated on the uniform curve):";
      if (r.comparison->uniform_kl_at_equal_density) {
        std::cout << " at equal density uniform has KL " << std::defaultfloat
                  << std::setprecision(3) << *r.comparison->uniform_kl_at_equal_density;
        if (e.kl_mean > 0)
          std::cout << " (" << *r.comparison->uniform_kl_at_equal_density / e.kl_mean
                    << "x per-head's)";
        else
          std::cout << " (per-head's KL is 0)";
      } else {
        std::cout << " per-head density " << percent(e.density)
                  << " is outside the densities the uniform curve reaches";
      }
      if (r.comparison->uniform_density_at_equal_kl)
        std::cout << "; at equal KL uniform keeps " << percent(*r.comparison->uniform_density_at_equal_kl)
                  << " of blocks, per-head " << percent(e.density);
      std::cout << std::fixed << "\n";
    }
  }
  std::cout << std::setprecision(4) << "search: cost " << opt.cost << ", Lagrangian bound "
            << r.search.lower_bound << " (gap " << percent(r.search.relative_gap) << "), greedy "
            << r.search.greedy.cost << "\n";
  if (r.peak_weight_bytes > 0) {
    // The memory line: streaming's whole point, and what to compare without it.
    // GiB from 1 GiB up (what scripts/gpu-stream.sh reads), MiB below.
    auto gib = [](int64_t bytes) {
      std::ostringstream text;
      text << std::fixed << std::setprecision(bytes >= (int64_t(1) << 30) ? 2 : 1)
           << (bytes >= (int64_t(1) << 30) ? double(bytes) / double(int64_t(1) << 30)
                                           : double(bytes) / double(int64_t(1) << 20))
           << (bytes >= (int64_t(1) << 30) ? " GiB" : " MiB");
      return text.str();
    };
    std::cout << std::setprecision(2) << "memory: "
              << (config.stream_layers ? "layer-streamed (statistics in one layer-major sweep; "
                                         "sensitivity and validation read each layer per "
                                         "forward pass), "
                                       : "in memory, ")
              << r.peak_resident_layers << (r.peak_resident_layers == 1 ? " layer" : " layers")
              << " resident at most; weights " << gib(r.peak_weight_bytes)
              << " + statistics hidden states " << gib(r.statistics_hidden_bytes)
              << (r.hidden_on_host ? " (pinned host memory)" : "");
    if (r.peak_device_bytes >= 0)
      std::cout << "; peak device memory " << gib(r.peak_device_bytes) << " (allocator)";
    else
      std::cout << "; peak held " << gib(r.peak_weight_bytes + r.statistics_hidden_bytes)
                << " (weights + hidden states; workspaces not counted on the CPU)";
    std::cout << "\n";
    if (!r.hidden_placement.empty())
      std::cout << "hidden states: " << r.hidden_placement << "\n";
  }
  std::cout << std::setprecision(2) << "time: statistics " << r.seconds_statistics
            << " s, sensitivity " << r.seconds_sensitivity << " s, search " << r.seconds_search
            << " s, validation " << r.seconds_validation << " s, total " << seconds << " s\n";
}

// What a calibration run needs, from the command line.
struct Plan {
  calibrate::CalibrationConfig config;
  std::string out, stats_out;
  bool force = false;
};

// Parses and checks every argument (and, with check_outputs, refuses existing outputs) before any
// work; nullopt after --help.
std::optional<Plan> plan_calibration(const Args& args, bool check_outputs) {
  po::options_description options(
      "usage: xattn calibrate [options]\n\n"
      "Measures attention statistics, searches one threshold per head under an accuracy budget,\n"
      "validates on held-out samples and writes a profile. With no source options it calibrates\n"
      "the bundled model (" + std::string(kDefaultModel) + ") on " + kDefaultData + ".\n\noptions");
  options.add_options()
      ("help,h", "this help")
      ("model", po::value<std::string>(), "checkpoint folder (config.json + safetensors)")
      ("data", po::value<std::vector<std::string>>()->multitoken(), "text or token-id files to cut samples from")
      ("data-format", po::value<std::string>()->default_value("text"), "text: raw text, tokenized with the model folder's tokenizer (tokenizer.json, tokenizer.model, or bytes for byte-level models); ids: token ids (integers; *.h5 files are always ids)")
      ("capture", po::value<std::vector<std::string>>()->multitoken(), "capture files (docs/capture-format.md)")
      ("stats", po::value<std::vector<std::string>>()->multitoken(), "statistics files to merge (from --stats-out of earlier runs)")
      ("out", po::value<std::string>(), "profile to write (default out/profile-<time>.h5)")
      ("stats-out", po::value<std::string>(), "statistics file to write (default beside the profile)")
      ("force", "overwrite existing outputs")
      ("device", po::value<std::string>()->default_value("cpu"), "cpu or cuda")
      ("sample-len", po::value<int64_t>()->default_value(4096), "tokens per sample")
      ("samples", po::value<int64_t>()->default_value(4), "at most this many samples")
      ("batch", po::value<int64_t>()->default_value(1), "samples per forward pass of the statistics pass (samples of one length run together; statistics are per sample, as with 1); memory grows with it (docs/runner.md, Batches)")
      ("stream-layers", "only one layer's weights on the device at a time, read from the memory-mapped checkpoint (models larger than the device): statistics in one layer-major sweep over all samples, the passes that need logits read every layer per forward pass; same statistics as without (docs/runner.md, Layer-streamed statistics)")
      ("stride", po::value<int64_t>()->default_value(8), "antidiagonal stride S")
      ("block-size", po::value<int64_t>()->default_value(128), "block size")
      ("sparse-last-block", "select the last query block like the others (the published method); by default it keeps every block, so the first generated token sees all keys")
      ("taus", po::value<std::string>(), "candidate ladder, comma-separated (default: 0.9*0.9^m down to 0.11, then 0.95, 0.99, 0.995, 0.998, 0.999, 0.9995, 1: 28 values)")
      ("target-kl", po::value<double>(), "what you want: the end-to-end KL to dense attention (nats per position) the profile may cost; the kl objective uses it as its budget, then tightens it until fitting samples measure no more")
      ("target-nll-increase", po::value<double>(), "tighten the budget until the NLL increase on fitting samples meets this")
      ("metric", po::value<std::string>()->default_value("kl"), "objective: kl (predicted end-to-end KL: each head's error through its o_proj slice times its layer's measured sensitivity), projected_error, output_error or recall_loss")
      ("epsilon", po::value<double>(), "budget of the metric when no --target-kl is given (default: kl 0.005 nats, otherwise 0.05)")
      ("cap", po::value<double>(), "cap on any single head's error")
      ("error-aggregate", po::value<std::string>(),
       "a head's error over the samples: mean (default for kl) or worst (its worst sample; default for the proxy metrics)")
      ("holdout", po::value<double>()->default_value(0.25, "0.25"), "share of samples held out for validation")
      ("sensitivity-samples", po::value<int64_t>()->default_value(2), "fitting samples on which each layer's KL sensitivity is measured (kl metric)")
      ("sensitivity-tokens", po::value<int64_t>()->default_value(32768), "at most this many tokens in those samples together (at least one sample is always used)")
      ("frontier-points", po::value<int64_t>()->default_value(6), "uniform and per-head points of the held-out quality frontier (0: none)");
  po::variables_map vm;
  if (parse_or_help(args, options, vm)) return std::nullopt;
  check_calibrate_arguments(vm);  // every value, input and statistics setting, before any work

  Plan plan;
  calibrate::CalibrationConfig& config = plan.config;
  if (vm.count("model")) config.model_dir = vm["model"].as<std::string>();
  if (vm.count("data")) config.data_files = vm["data"].as<std::vector<std::string>>();
  config.data_format = vm["data-format"].as<std::string>();
  if (vm.count("capture")) config.capture_files = vm["capture"].as<std::vector<std::string>>();
  if (vm.count("stats")) config.statistics_files = vm["stats"].as<std::vector<std::string>>();
  const bool no_source = config.model_dir.empty() && config.capture_files.empty() &&
                         config.statistics_files.empty();
  if (no_source) {
    config.model_dir = bundled_path(kDefaultModel);
    if (config.data_files.empty()) config.data_files = {bundled_path(kDefaultData)};
    XATTN_CHECK_INPUT(io::path_exists(config.model_dir + "/config.json"),
                      "the bundled model is missing (", config.model_dir,
                      "); give --model DIR --data FILE, --capture FILE or --stats FILE");
  }
  config.device = vm["device"].as<std::string>();
  config.sample_len = vm["sample-len"].as<int64_t>();
  config.max_samples = vm["samples"].as<int64_t>();
  config.batch = vm["batch"].as<int64_t>();
  config.stream_layers = vm.count("stream-layers") > 0;
  config.settings.stride = vm["stride"].as<int64_t>();
  config.settings.block_size = vm["block-size"].as<int64_t>();
  config.settings.dense_last_query_block = !vm.count("sparse-last-block");
  if (vm.count("taus")) {
    config.settings.taus = parse_number_list(vm["taus"].as<std::string>(), "--taus");
    std::sort(config.settings.taus.begin(), config.settings.taus.end());
  }
  config.metric = calibrate::parse_error_metric(vm["metric"].as<std::string>());
  config.metric_is_default = vm["metric"].defaulted();
  XATTN_CHECK_ARG(config.metric != calibrate::ErrorMetric::kKL || config.metric_is_default ||
                      !config.model_dir.empty() || !config.statistics_files.empty(),
                  "--metric kl needs a model run (--model DIR --data FILE) to measure each "
                  "layer's KL sensitivity; captures alone have no o_proj weights: use --metric "
                  "output_error with --capture");
  config.settings.output_error = config.metric != calibrate::ErrorMetric::kRecallLoss;
  if (vm.count("epsilon")) {
    config.epsilon = vm["epsilon"].as<double>();
  }
  if (vm.count("cap")) config.per_head_cap = vm["cap"].as<double>();
  if (vm.count("error-aggregate")) {
    const std::string aggregate = vm["error-aggregate"].as<std::string>();
    XATTN_CHECK_ARG(aggregate == "worst" || aggregate == "mean",
                    "--error-aggregate must be worst or mean, got '", aggregate, "'");
    config.worst_case_error = aggregate == "worst";
  }
  config.holdout_fraction = vm["holdout"].as<double>();
  config.sensitivity_samples = vm["sensitivity-samples"].as<int64_t>();
  config.sensitivity_tokens = vm["sensitivity-tokens"].as<int64_t>();
  config.frontier_points = vm["frontier-points"].as<int64_t>();
  if (vm.count("target-kl")) config.target_kl = vm["target-kl"].as<double>();
  if (vm.count("target-nll-increase"))
    config.target_nll_increase = vm["target-nll-increase"].as<double>();

  plan.force = vm.count("force") > 0;
  const std::string stamp = timestamp();
  std::string& out = plan.out;
  std::string& stats_out = plan.stats_out;
  out = vm.count("out") ? vm["out"].as<std::string>() : "out/profile-" + stamp + ".h5";
  stats_out = vm.count("stats-out") ? vm["stats-out"].as<std::string>() : "";
  if (stats_out.empty() && config.statistics_files.empty()) {
    const size_t slash = out.find_last_of('/');  // npos + 1 == 0: no folder part
    stats_out = out.substr(0, slash + 1) + "stats-" + out.substr(slash + 1);
  }
  if (!check_outputs) return plan;
  if (!vm.count("out")) io::make_folders("out");
  check_calibrate_outputs(vm, out, stats_out);
  // Refuse before hours of work, not after.
  for (const auto& path : {out, stats_out})
    XATTN_CHECK(path.empty() || plan.force || !io::path_exists(path), ErrorKind::kIo, path,
                " already exists; pass --force to overwrite it or choose another --out");
  return plan;
}

// Runs the plan; on a shard that is not rank 0 only the statistics pass runs and nothing is
// printed or written.
void run_plan(const Plan& plan, bool prints) {
  const auto start = std::chrono::steady_clock::now();
  Progress progress("calibrate");
  calibrate::ProgressFn report;
  if (prints)
    report = [&](int64_t done, int64_t total, const std::string& what) {
      progress.update(done, total, what);
    };
  calibrate::CalibrationResult result = calibrate::run_calibration(plan.config, report);
  if (result.stopped_after_statistics) return;
  progress.finish();
  if (!plan.stats_out.empty())
    calibrate::write_statistics(plan.stats_out, result.statistics, plan.force);
  io::write_profile(plan.out, result.profile, plan.force);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  print_summary(plan.config, result, seconds);
  std::cout << "wrote " << plan.out;
  if (!plan.stats_out.empty()) std::cout << " and " << plan.stats_out;
  std::cout << "\n";
}

// --- Sharded over MPI ranks (docs/mpi.md) ---

// Another rank's failure, already agreed on by every rank.
struct RankFailed {
  mpi::Failure failure;
};

mpi::Failure failure_of(int rank, std::exception_ptr error) {
  mpi::Failure f;
  f.rank = rank;
  f.code = 6;
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    f.code = int(e.kind());
    f.message = one_line(e.what());
  } catch (const po::error& e) {
    f.code = 2;
    f.message = "usage error: " + one_line(e.what()) + " (see xattn calibrate --help)";
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    f.message = "internal error: " + one_line(message.substr(0, message.find('\n')));
  } catch (const std::exception& e) {
    f.message = "internal error: " + one_line(e.what());
  } catch (...) {
    f.message = "internal error: unknown exception";
  }
  return f;
}

// Statistics as the bytes of their HDF5 file (docs/statistics-format.md), and back.
std::string statistics_bytes(const calibrate::Statistics& statistics) {
  const std::string folder = io::make_temporary_folder("xattn-shard-");
  std::string bytes;
  try {
    const std::string path = io::join_path(folder, "statistics.h5");
    calibrate::write_statistics(path, statistics, /*overwrite=*/true);
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (...) {
    io::remove_tree(folder);
    throw;
  }
  io::remove_tree(folder);
  return bytes;
}

calibrate::Statistics statistics_from_bytes(const std::string& bytes, int rank) {
  const std::string folder = io::make_temporary_folder("xattn-shard-");
  try {
    const std::string path = io::join_path(folder, "rank-" + std::to_string(rank) + ".h5");
    {
      std::ofstream file(path, std::ios::binary | std::ios::trunc);
      file.write(bytes.data(), std::streamsize(bytes.size()));
      XATTN_CHECK(bool(file), ErrorKind::kIo, "cannot write rank ", rank, "'s statistics to ",
                  path, "; free space in the temporary folder or set TMPDIR");
    }
    calibrate::Statistics statistics = calibrate::read_statistics(path);
    io::remove_tree(folder);
    return statistics;
  } catch (...) {
    io::remove_tree(folder);
    throw;
  }
}

int run_sharded(const Args& args, const mpi::World& world) {
  // Only rank 0 prints: the others' output would repeat it (their errors reach rank 0).
  static std::ostringstream silent;  // outlives the streams' last use at exit
  if (world.rank != 0) {
    std::cout.rdbuf(silent.rdbuf());
    std::cerr.rdbuf(silent.rdbuf());
  }
  auto give_up = [&](const mpi::Failure& f) {
    if (world.rank == 0)
      std::cerr << "xattn calibrate: error: rank " << f.rank << " failed: " << f.message << "\n";
    mpi::finish();
    return f.code;
  };
  // 1. Arguments on every rank; outputs are refused on rank 0 before any work.
  std::optional<Plan> plan;
  std::optional<mpi::Failure> mine;
  try {
    plan = plan_calibration(args, /*check_outputs=*/world.rank == 0);
  } catch (...) {
    mine = failure_of(world.rank, std::current_exception());
  }
  if (auto f = mpi::agree(mine)) return give_up(*f);
  if (!plan) {  // --help
    mpi::finish();
    return 0;
  }
  // 2. Each rank measures its block of samples (and layers, with fewer samples than ranks) on its
  // own GPU; rank 0 gathers and goes on.
  calibrate::CalibrationConfig& config = plan->config;
  if (config.device == "cuda") {
    const int gpus = at::detail::getCUDAHooks().getNumGPUs();
    if (gpus > 0) config.device = "cuda:" + std::to_string(world.local_rank % gpus);
  }
  config.shard_index = world.rank;
  config.shard_count = world.size;
  bool gathered = false;
  config.gather_shards = [&](calibrate::Statistics statistics)
      -> std::optional<std::vector<calibrate::Statistics>> {
    // Test hook (tests/mpi): this rank fails after its statistics pass, before the gather.
    const char* fail_rank = std::getenv("XATTN_TEST_FAIL_RANK");
    XATTN_CHECK(!fail_rank || std::to_string(world.rank) != fail_rank, ErrorKind::kInternal,
                "XATTN_TEST_FAIL_RANK=", fail_rank, " asked this rank to fail");
    const std::string bytes =
        statistics.samples.empty() ? std::string() : statistics_bytes(statistics);
    if (auto f = mpi::agree(std::nullopt)) throw RankFailed{*f};
    gathered = true;
    const std::vector<std::string> parts = mpi::gather_to_root(bytes);
    if (world.rank != 0) return std::nullopt;
    // In rank order; a rank without work (calibrate::shard_work) sent nothing.
    std::vector<calibrate::Statistics> shards(parts.size());
    shards[0] = std::move(statistics);
    for (size_t r = 1; r < parts.size(); ++r)
      if (!parts[r].empty()) shards[r] = statistics_from_bytes(parts[r], int(r));
    return shards;
  };
  mine.reset();
  try {
    run_plan(*plan, world.rank == 0);
  } catch (const RankFailed& failed) {
    return give_up(failed.failure);
  } catch (...) {
    mine = failure_of(world.rank, std::current_exception());
  }
  // A rank that failed before the gather meets the others in the gather's agree(); after the
  // gather only rank 0 works, and the others wait for its outcome here.
  if (!gathered) {
    if (auto f = mpi::agree(mine)) return give_up(*f);
  }
  if (auto f = mpi::agree(mine)) return give_up(*f);
  mpi::finish();
  return 0;
}

}  // namespace

int run_calibrate(const Args& args) {
  const mpi::World world = mpi::start();
  if (world.size > 1) return run_sharded(args, world);
  const std::optional<Plan> plan = plan_calibration(args, /*check_outputs=*/true);
  if (plan) run_plan(*plan, /*prints=*/true);
  return 0;
}

}  // namespace xattn::cli
