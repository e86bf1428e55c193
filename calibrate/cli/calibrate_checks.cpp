#include "calibrate_checks.h"

#include <cmath>
#include <vector>

#include "cli_util.h"
#include "model_cli.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/calibrate/statistics_checks.h"
#include "xattn/error.h"
#include "xattn/io/paths.h"

namespace xattn::cli {
namespace {

namespace po = boost::program_options;

std::vector<std::string> paths_of(const po::variables_map& vm, const char* key) {
  return vm.count(key) ? vm[key].as<std::vector<std::string>>() : std::vector<std::string>{};
}

std::vector<PathOption> input_files(const po::variables_map& vm) {
  std::vector<PathOption> inputs;
  for (const char* key : {"data", "capture", "stats"})
    for (const std::string& path : paths_of(vm, key)) inputs.push_back({std::string("--") + key, path});
  return inputs;
}

const char* last_block_rule(bool dense) {
  return dense ? "the last query block dense" : "the last query block sparse (--sparse-last-block)";
}

}  // namespace

void check_calibrate_arguments(const po::variables_map& vm) {
  // Each option is checked where the command has it (count() includes defaults), so the command
  // may drop or add options without this function reading one that is not there.
  auto has = [&](const char* key) { return vm.count(key) > 0; };
  if (has("device")) model_cli::parse_device(vm["device"].as<std::string>());
  if (has("data-format")) {
    const std::string format = vm["data-format"].as<std::string>();
    XATTN_CHECK_ARG(format == "text" || format == "ids", "--data-format '", format,
                    "': use text (raw text through the model's tokenizer) or ids (token ids)");
  }
  if (has("sample-len"))
    XATTN_CHECK_ARG(vm["sample-len"].as<int64_t>() >= 2, "--sample-len ",
                    vm["sample-len"].as<int64_t>(), " must be at least 2 tokens");
  if (has("samples"))
    XATTN_CHECK_ARG(vm["samples"].as<int64_t>() >= 1, "--samples ", vm["samples"].as<int64_t>(),
                    " must be at least 1");
  if (has("batch"))
    XATTN_CHECK_ARG(vm["batch"].as<int64_t>() >= 1, "--batch ", vm["batch"].as<int64_t>(),
                    " must be at least 1 (samples per forward pass)");
  const int64_t stride = has("stride") ? vm["stride"].as<int64_t>() : 8;
  const int64_t block_size = has("block-size") ? vm["block-size"].as<int64_t>() : 128;
  check_block_settings(stride, block_size);
  if (has("taus")) {
    const std::vector<double> taus = parse_number_list(vm["taus"].as<std::string>(), "--taus");
    for (double tau : taus)
      XATTN_CHECK_ARG(tau > 0.0 && tau <= 1.0, "--taus: ", tau,
                      " is not a candidate threshold; give values in (0, 1]");
  }
  for (const char* key : {"epsilon", "cap", "target-kl", "target-nll-increase"})
    if (has(key)) check_finite_at_least(vm[key].as<double>(), 0.0, (std::string("--") + key).c_str());
  if (has("holdout")) {
    const double holdout = vm["holdout"].as<double>();
    XATTN_CHECK_ARG(std::isfinite(holdout) && holdout >= 0.0 && holdout < 1.0, "--holdout ",
                    holdout, " must be a share in [0, 1)");
  }
  if (has("sensitivity-samples"))
    XATTN_CHECK_ARG(vm["sensitivity-samples"].as<int64_t>() >= 1, "--sensitivity-samples must be >= 1");
  if (has("sensitivity-tokens"))
    XATTN_CHECK_ARG(vm["sensitivity-tokens"].as<int64_t>() >= 1, "--sensitivity-tokens must be >= 1");
  if (has("frontier-points"))
    XATTN_CHECK_ARG(vm["frontier-points"].as<int64_t>() >= 0, "--frontier-points must be >= 0");
  if (has("metric")) calibrate::parse_error_metric(vm["metric"].as<std::string>());
  if (has("error-aggregate")) {
    const std::string aggregate = vm["error-aggregate"].as<std::string>();
    XATTN_CHECK_ARG(aggregate == "worst" || aggregate == "mean",
                    "--error-aggregate must be worst or mean, got '", aggregate, "'");
  }

  if (has("model")) {
    const std::string dir = vm["model"].as<std::string>();
    XATTN_CHECK(io::is_directory(dir), ErrorKind::kIo, "--model ", dir,
                io::path_exists(dir) ? " is not a folder" : ": no such folder",
                "; give the checkpoint folder (config.json + *.safetensors)");
  }
  check_inputs(input_files(vm));

  const bool sparse_last_block = has("sparse-last-block");
  for (const std::string& path : paths_of(vm, "stats")) {
    const calibrate::Statistics stats = calibrate::read_checked_statistics(path);
    calibrate::check_statistics_signature(stats, path);
    const calibrate::StatisticsSettings& measured = stats.settings;
    const bool stride_default = !has("stride") || vm["stride"].defaulted();
    const bool block_default = !has("block-size") || vm["block-size"].defaulted();
    XATTN_CHECK_ARG(
        measured.stride == stride && measured.block_size == block_size, "--stats ", path,
        " was measured at stride ", measured.stride, ", block size ", measured.block_size,
        ", but this run asks for stride ", stride, stride_default ? " (default)" : "",
        ", block size ", block_size, block_default ? " (default)" : "",
        "; the profile would label those thresholds with other settings. Pass --stride ",
        measured.stride, " --block-size ", measured.block_size, ", or measure new statistics");
    XATTN_CHECK_ARG(!sparse_last_block || !measured.dense_last_query_block, "--stats ", path,
                    " was measured with ", last_block_rule(true), ", but this run asks for ",
                    last_block_rule(false),
                    "; drop --sparse-last-block, or measure new statistics with it");
  }
}

void check_calibrate_outputs(const po::variables_map& vm, const std::string& out,
                             const std::string& stats_out) {
  check_outputs({{"--out", out}, {"--stats-out", stats_out}}, input_files(vm),
                vm.count("force") > 0);
}

}  // namespace xattn::cli
