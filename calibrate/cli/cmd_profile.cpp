// `xattn profile show FILE` and `xattn profile export --json OUT FILE [--force]`: read a
// calibration profile, print its summary, or write a JSON copy for frameworks without HDF5.
#include <boost/program_options.hpp>
#include <iostream>
#include <string>

#include "cli_util.h"
#include "commands.h"
#include "xattn/error.h"
#include "xattn/io/profile.h"

namespace xattn::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "usage: xattn profile show FILE\n"
    "       xattn profile export --json OUT FILE [--force]\n\n"
    "  show     print the model, kernel settings, budget, predictions, validation results and a\n"
    "           per-layer table of mean / min / max τ, density and predicted error\n"
    "  export   write the profile as JSON to OUT (atomically; an existing OUT is kept unless\n"
    "           --force); OUT - writes it to standard output\n";

po::variables_map parse(const Args& args, const po::options_description& options) {
  po::positional_options_description positional;
  positional.add("file", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
  po::notify(vm);
  return vm;
}

int run_show(const Args& args) {
  po::options_description options("show options");
  options.add_options()("help,h", "this help")("file", po::value<std::string>(), "profile (.h5)");
  const po::variables_map vm = parse(args, options);
  if (vm.count("help")) {
    std::cout << kUsage;
    return 0;
  }
  XATTN_CHECK_ARG(vm.count("file"), "give the profile to show: xattn profile show FILE");
  const std::string file = vm["file"].as<std::string>();
  const io::Profile profile = io::read_profile(file);  // errors before any output
  std::cout << file << "\n" << io::format_profile_summary(profile);
  return 0;
}

int run_export(const Args& args) {
  po::options_description options("export options");
  options.add_options()("help,h", "this help")("json", po::value<std::string>(), "output JSON file")(
      "force", "overwrite an existing output")("file", po::value<std::string>(), "profile (.h5)");
  const po::variables_map vm = parse(args, options);
  if (vm.count("help")) {
    std::cout << kUsage;
    return 0;
  }
  XATTN_CHECK_ARG(vm.count("json"), "give the output: xattn profile export --json OUT FILE");
  XATTN_CHECK_ARG(vm.count("file"), "give the profile to export: xattn profile export --json OUT FILE");
  const std::string out = vm["json"].as<std::string>();
  const std::string file = vm["file"].as<std::string>();
  check_outputs({{"--json", out, /*to_stdout_ok=*/true}}, {{"FILE", file}}, vm.count("force") > 0);
  const std::string json = io::profile_to_json(io::read_profile(file));
  write_text_output(out, json, vm.count("force") > 0);
  if (!is_stdout(out)) std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace

int run_profile(const Args& args) {
  XATTN_CHECK_ARG(!args.empty(), "say what to do: xattn profile show FILE, or xattn profile ",
                  "export --json OUT FILE");
  const std::string action = args.front();
  const Args rest(args.begin() + 1, args.end());
  if (action == "--help" || action == "-h" || action == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (action == "show") return run_show(rest);
  if (action == "export") return run_export(rest);
  throw Error(ErrorKind::kInvalidArgument,
              detail::concat("unknown profile action '", action, "'; use show or export"));
}

}  // namespace xattn::cli
