// `xattn calibrate`: statistics -> per-head threshold search -> held-out validation -> profile.
// With no arguments it calibrates the bundled model on the bundled text.
#include <boost/program_options.hpp>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "cli_util.h"
#include "xattn/paths.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"

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
  std::cout << calibrate::format_profile_summary(p) << "\n";
  std::cout << std::fixed << std::setprecision(4);
  std::cout << "samples: " << r.fit_samples.size() << " fit, " << r.holdout_samples.size()
            << " held out; metric " << calibrate::error_metric_name(config.metric)
            << ", budget epsilon " << r.epsilon_used << "\n";
  std::cout << "per-head thresholds: density " << percent(opt.mean_density)
            << ", predicted error " << opt.error;
  if (r.holdout)
    std::cout << "; held out: density " << percent(r.holdout->measured_mean_density)
              << ", error " << r.holdout->measured_mean_error;
  std::cout << "\n";
  if (r.search.uniform) {
    const auto& u = r.search.uniform->assignment;
    std::cout << "best uniform tau " << r.search.uniform->tau << ": density "
              << percent(u.mean_density) << ", predicted error " << u.error;
    if (u.mean_density > 0)
      std::cout << "  -> per-head calibration keeps " << percent(1.0 - opt.mean_density / u.mean_density)
                << " fewer blocks";
    std::cout << "\n";
  } else {
    std::cout << "no uniform tau meets this budget\n";
  }
  if (r.end_to_end) {
    const auto& e = *r.end_to_end;
    std::cout << "end to end on held-out samples (" << e.tokens << " tokens): NLL dense "
              << e.nll_dense << ", XAttention " << e.nll_sparse << " (+" << e.nll_sparse - e.nll_dense
              << "), KL " << e.kl_mean << ", density " << percent(e.density) << "\n";
  }
  if (r.end_to_end_equal_density) {
    const auto& e = *r.end_to_end_equal_density;
    std::cout << "     uniform tau " << *r.equal_density_tau << " (equal density): NLL "
              << e.nll_sparse << " (+" << e.nll_sparse - e.nll_dense << "), KL " << e.kl_mean
              << ", density " << percent(e.density) << ", predicted error "
              << r.equal_density_predicted_error << "\n";
  }
  if (r.end_to_end_uniform) {
    const auto& e = *r.end_to_end_uniform;
    std::cout << "                     uniform tau: NLL " << e.nll_sparse << " (+"
              << e.nll_sparse - e.nll_dense << "), KL " << e.kl_mean << ", density "
              << percent(e.density) << "\n";
  }
  std::cout << "search: cost " << opt.cost << ", Lagrangian bound " << r.search.lower_bound
            << " (gap " << percent(r.search.relative_gap) << "), greedy " << r.search.greedy.cost
            << "\n";
  std::cout << std::setprecision(2) << "time: statistics " << r.seconds_statistics << " s, search "
            << r.seconds_search << " s, validation " << r.seconds_validation << " s, total "
            << seconds << " s\n";
}

}  // namespace

int run_calibrate(const Args& args) {
  po::options_description options(
      "usage: xattn calibrate [options]\n\n"
      "Measures attention statistics, searches one threshold per head under an accuracy budget,\n"
      "validates on held-out samples and writes a profile. With no source options it calibrates\n"
      "the bundled model (" + std::string(kDefaultModel) + ") on " + kDefaultData + ".\n\noptions");
  options.add_options()
      ("help,h", "this help")
      ("model", po::value<std::string>(), "checkpoint folder (config.json + safetensors)")
      ("data", po::value<std::vector<std::string>>()->multitoken(), "text or token-id files to cut samples from")
      ("capture", po::value<std::vector<std::string>>()->multitoken(), "capture files (docs/capture-format.md)")
      ("stats", po::value<std::vector<std::string>>()->multitoken(), "statistics files to merge (from --stats-out of earlier runs)")
      ("out", po::value<std::string>(), "profile to write (default out/profile-<time>.h5)")
      ("stats-out", po::value<std::string>(), "statistics file to write (default beside the profile)")
      ("force", "overwrite existing outputs")
      ("device", po::value<std::string>()->default_value("cpu"), "cpu or cuda")
      ("sample-len", po::value<int64_t>()->default_value(4096), "tokens per sample")
      ("samples", po::value<int64_t>()->default_value(4), "at most this many samples")
      ("stride", po::value<int64_t>()->default_value(8), "antidiagonal stride S")
      ("block-size", po::value<int64_t>()->default_value(128), "block size")
      ("sparse-last-block", "select the last query block like the others (the published method); by default it keeps every block, so the first generated token sees all keys")
      ("taus", po::value<std::string>(), "candidate ladder, comma-separated (default: 0.9*0.9^m, 0.95, 0.99, 1)")
      ("metric", po::value<std::string>()->default_value("output_error"), "error metric: output_error or recall_loss")
      ("epsilon", po::value<double>()->default_value(0.05), "budget on the mean per-head error")
      ("cap", po::value<double>(), "cap on any single head's error")
      ("error-aggregate", po::value<std::string>()->default_value("worst"),
       "a head's error over the samples: worst (its worst sample; protects heads that matter on few samples, such as retrieval heads) or mean")
      ("holdout", po::value<double>()->default_value(0.25), "share of samples held out for validation")
      ("target-kl", po::value<double>(), "tighten the budget until the held-out KL meets this")
      ("target-nll-increase", po::value<double>(), "tighten until the held-out NLL increase meets this");
  po::variables_map vm;
  if (parse_or_help(args, options, vm)) return 0;

  calibrate::CalibrationConfig config;
  if (vm.count("model")) config.model_dir = vm["model"].as<std::string>();
  if (vm.count("data")) config.data_files = vm["data"].as<std::vector<std::string>>();
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
  config.settings.stride = vm["stride"].as<int64_t>();
  config.settings.block_size = vm["block-size"].as<int64_t>();
  config.settings.dense_last_query_block = !vm.count("sparse-last-block");
  if (vm.count("taus")) {
    config.settings.taus = parse_number_list(vm["taus"].as<std::string>(), "--taus");
    std::sort(config.settings.taus.begin(), config.settings.taus.end());
  }
  config.metric = calibrate::parse_error_metric(vm["metric"].as<std::string>());
  config.settings.output_error = config.metric == calibrate::ErrorMetric::kOutputError;
  config.epsilon = vm["epsilon"].as<double>();
  if (vm.count("cap")) config.per_head_cap = vm["cap"].as<double>();
  const std::string aggregate = vm["error-aggregate"].as<std::string>();
  XATTN_CHECK_ARG(aggregate == "worst" || aggregate == "mean",
                  "--error-aggregate must be worst or mean, got '", aggregate, "'");
  config.worst_case_error = aggregate == "worst";
  config.holdout_fraction = vm["holdout"].as<double>();
  if (vm.count("target-kl")) config.target_kl = vm["target-kl"].as<double>();
  if (vm.count("target-nll-increase"))
    config.target_nll_increase = vm["target-nll-increase"].as<double>();

  const bool force = vm.count("force") > 0;
  const std::string stamp = timestamp();
  const std::string out =
      vm.count("out") ? vm["out"].as<std::string>() : "out/profile-" + stamp + ".h5";
  std::string stats_out = vm.count("stats-out") ? vm["stats-out"].as<std::string>() : "";
  if (stats_out.empty() && config.statistics_files.empty()) {
    const size_t slash = out.find_last_of('/');  // npos + 1 == 0: no folder part
    stats_out = out.substr(0, slash + 1) + "stats-" + out.substr(slash + 1);
  }
  if (!vm.count("out")) io::make_folders("out");
  // Refuse before hours of work, not after.
  for (const auto& path : {out, stats_out})
    XATTN_CHECK(path.empty() || force || !io::path_exists(path), ErrorKind::kIo, path,
                " already exists; pass --force to overwrite it or choose another --out");

  const auto start = std::chrono::steady_clock::now();
  Progress progress("calibrate");
  calibrate::CalibrationResult result =
      calibrate::run_calibration(config, [&](int64_t done, int64_t total, const std::string& what) {
        progress.update(done, total, what);
      });
  progress.finish();
  if (!stats_out.empty()) calibrate::write_statistics(stats_out, result.statistics, force);
  calibrate::write_profile(out, result.profile, force);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  print_summary(config, result, seconds);
  std::cout << "wrote " << out;
  if (!stats_out.empty()) std::cout << " and " << stats_out;
  std::cout << "\n";
  return 0;
}

}  // namespace xattn::cli
