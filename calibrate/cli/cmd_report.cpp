// `xattn report PROFILE [--stats FILE] [--html OUT] [--force]` and
// `xattn report PROFILE_A PROFILE_B [--html OUT] [--force]`: the head-sparsity summary of one
// profile (with its statistics when given or found beside it), or the differences of two.
#include <boost/program_options.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "cli_util.h"
#include "commands.h"
#include "xattn/calibrate/report.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/calibrate/statistics_checks.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"

namespace xattn::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "usage: xattn report PROFILE [--stats FILE] [--capture FILE [--capture-item N]]\n"
    "                    [--html OUT.html] [--force]\n"
    "       xattn report PROFILE_A PROFILE_B [--html OUT.html] [--force]\n\n"
    "One profile: per layer mean τ, density, predicted and held-out error; the sparsest and\n"
    "densest heads; the uniform-τ comparison. The statistics (default: stats-<name> beside the\n"
    "profile, as xattn calibrate writes them) add held-out figures and error curves.\n"
    "A capture of one sample (default: the capture the statistics name, if any) adds block\n"
    "maps: which key blocks the sparsest and densest heads keep.\n"
    "Two profiles: per-layer differences of τ and density, and the heads whose τ changed most.\n"
    "--html writes a self-contained page with the figures (atomically; an existing file is kept\n"
    "unless --force); --html - writes the page to standard output and the summary to standard\n"
    "error.\n\n";

// stats-<name> beside the profile, where xattn calibrate puts it by default; empty if absent.
std::string statistics_beside(const std::string& profile) {
  const size_t slash = profile.find_last_of('/');
  const std::string folder = slash == std::string::npos ? "" : profile.substr(0, slash + 1);
  const std::string name = slash == std::string::npos ? profile : profile.substr(slash + 1);
  const std::string candidate = folder + "stats-" + name;
  return io::path_exists(candidate) ? candidate : "";
}

// The capture of the sample the block maps show: the first held-out sample of the statistics
// (else sample 0) when it came from a capture that is still there (as given, or beside the
// statistics). Empty path and a note saying why otherwise.
std::pair<std::string, int64_t> capture_for_block_maps(const calibrate::Statistics& statistics,
                                                       const calibrate::ProfileMeasurements& m,
                                                       const std::string& statistics_path,
                                                       std::string* why_not) {
  const int64_t sample = m.holdout_samples.empty() ? 0 : m.holdout_samples.front();
  const auto capture = calibrate::capture_of_sample(statistics, sample);
  if (!capture) {
    // A model run on text: sources are FILE@OFFSET; the first sample is the text's start.
    const calibrate::SampleInfo& first = statistics.samples.front();
    const std::string text = first.source.substr(0, first.source.find_last_of('@'));
    *why_not =
        "Block maps need q and k of one sample, and these statistics come from a model "
        "run on text (" +
        first.source +
        ", ...). Capture its first sample with xattn "
        "capture --model DIR --text " +
        text + " --max-len " + std::to_string(first.len_k) +
        " --out sample.h5 and give --capture sample.h5.";
    return {"", 0};
  }
  const size_t slash = statistics_path.find_last_of('/');
  const std::string beside =
      slash == std::string::npos ? "" : statistics_path.substr(0, slash + 1) + capture->first;
  for (const std::string& path : {capture->first, beside})
    if (!path.empty() && io::path_exists(path)) return {path, capture->second};
  *why_not = "Block maps need q and k of one sample; the statistics name " + capture->first +
             ", which is not there any more. Give --capture FILE.";
  return {"", 0};
}

}  // namespace

int run_report(const Args& args) {
  po::options_description options("options");
  options.add_options()("help,h", "this help")(
      "stats", po::value<std::string>(),
      "statistics the profile was calibrated on (default: stats-<name> beside it, if present)")(
      "no-stats", "do not look for statistics beside the profile")(
      "capture", po::value<std::string>(),
      "capture (xattn capture) of one sample of the profile's model, for block maps (default: "
      "the capture the statistics name)")("capture-item", po::value<int64_t>(),
                                          "which item of --capture (default 0)")(
      "html", po::value<std::string>(), "write the HTML report here (- for standard output)")(
      "force", "overwrite an existing HTML file");
  // PROFILE [PROFILE_B]: positional, shown in the usage lines rather than among the options.
  po::options_description hidden;
  hidden.add_options()("profiles", po::value<std::vector<std::string>>(), "one or two profiles");
  po::positional_options_description positional;
  positional.add("profiles", -1);
  po::variables_map vm;
  if (parse_or_help(args, options, vm, kUsage, &hidden, &positional)) return 0;
  const std::vector<std::string> profiles = vm.count("profiles")
                                                ? vm["profiles"].as<std::vector<std::string>>()
                                                : std::vector<std::string>{};
  XATTN_CHECK_ARG(profiles.size() == 1 || profiles.size() == 2,
                  "give one profile to report on, or two to compare (got ", profiles.size(),
                  "): xattn report PROFILE [--stats FILE] [--html OUT.html]");
  const std::string html_path = vm.count("html") ? vm["html"].as<std::string>() : "";
  const bool force = vm.count("force") > 0;
  XATTN_CHECK_ARG(profiles.size() == 1 || !vm.count("stats"),
                  "--stats applies to one profile; compare two profiles without it");
  XATTN_CHECK_ARG(profiles.size() == 1 || !vm.count("capture"),
                  "--capture applies to one profile; compare two profiles without it");
  XATTN_CHECK_ARG(vm.count("capture") || !vm.count("capture-item"),
                  "--capture-item needs --capture FILE");
  // Refuse before the work, not after it (write_report_html checks again when writing).
  std::vector<PathOption> inputs;
  for (const std::string& profile : profiles) inputs.push_back({"PROFILE", profile});
  if (vm.count("stats")) inputs.push_back({"--stats", vm["stats"].as<std::string>()});
  if (vm.count("capture")) inputs.push_back({"--capture", vm["capture"].as<std::string>()});
  check_inputs(inputs);
  check_outputs({{"--html", html_path, /*to_stdout_ok=*/true}}, inputs, force);
  // With --html - the page alone goes to standard output and the summary to standard error.
  std::ostream& summary = is_stdout(html_path) ? std::cerr : std::cout;

  std::string text, html;
  if (profiles.size() == 2) {
    calibrate::ProfileComparison comparison{profiles[0], profiles[1],
                                            io::read_profile(profiles[0]),
                                            io::read_profile(profiles[1])};
    text = calibrate::format_comparison_text(comparison);
    if (!html_path.empty()) html = calibrate::format_comparison_html(comparison);
  } else {
    calibrate::ProfileReport report;
    report.profile_name = profiles[0];
    report.profile = io::read_profile(profiles[0]);
    if (vm.count("stats")) {
      report.statistics_name = vm["stats"].as<std::string>();
    } else if (!vm.count("no-stats")) {
      report.statistics_name = statistics_beside(profiles[0]);
    }
    if (!report.statistics_name.empty()) {
      const calibrate::Statistics statistics =
          calibrate::read_checked_statistics(report.statistics_name);
      report.measured = calibrate::measure_profile(report.profile, statistics);
      if (!vm.count("capture") && !html_path.empty()) {
        const auto [capture, item] = capture_for_block_maps(
            statistics, *report.measured, report.statistics_name, &report.block_maps_note);
        if (!capture.empty()) {
          try {
            report.block_maps = calibrate::compute_block_maps(report.profile, capture, item);
          } catch (const Error& e) {
            report.block_maps_note = std::string("No block maps: ") + e.what();
          }
        }
      }
    }
    if (vm.count("capture") && !html_path.empty()) {
      report.block_maps = calibrate::compute_block_maps(
          report.profile, vm["capture"].as<std::string>(),
          vm.count("capture-item") ? vm["capture-item"].as<int64_t>() : 0);
    }
    text = calibrate::format_report_text(report);
    if (!html_path.empty()) html = calibrate::format_report_html(report);
  }
  summary << text;
  if (is_stdout(html_path)) {
    write_text_output(html_path, html, force);
  } else if (!html_path.empty()) {
    calibrate::write_report_html(html_path, html, force);
    std::cout << "\nwrote " << html_path << "\n";
  }
  return 0;
}

}  // namespace xattn::cli
