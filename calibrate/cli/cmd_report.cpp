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
    "usage: xattn report PROFILE [--stats FILE] [--html OUT.html] [--force]\n"
    "       xattn report PROFILE_A PROFILE_B [--html OUT.html] [--force]\n\n"
    "One profile: per layer mean τ, density, predicted and held-out error; the sparsest and\n"
    "densest heads; the uniform-τ comparison. The statistics (default: stats-<name> beside the\n"
    "profile, as xattn calibrate writes them) add held-out figures and error curves.\n"
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

}  // namespace

int run_report(const Args& args) {
  po::options_description options("options");
  options.add_options()("help,h", "this help")(
      "stats", po::value<std::string>(),
      "statistics the profile was calibrated on (default: stats-<name> beside it, if present)")(
      "no-stats", "do not look for statistics beside the profile")(
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
  // Refuse before the work, not after it (write_report_html checks again when writing).
  std::vector<PathOption> inputs;
  for (const std::string& profile : profiles) inputs.push_back({"PROFILE", profile});
  if (vm.count("stats")) inputs.push_back({"--stats", vm["stats"].as<std::string>()});
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
