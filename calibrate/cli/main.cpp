// `xattn`: one executable, one subcommand per job. Errors end as one line on stderr and an exit
// code by category (2 usage, 3 bad input, 4 I/O, 5 CUDA, 6 internal).
#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <exception>
#include <iostream>

#include "commands.h"
#include "xattn/error.h"

namespace xattn::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> list = {
      {"calibrate", "per-head threshold calibration: statistics, search, validation, profile",
       run_calibrate},
      {"estimate", "antidiagonal scoring + block selection on a capture: per-head density table",
       run_estimate},
      {"synth", "write a synthetic capture with planted attention structures", run_synth},
      {"profile", "show a calibration profile, or export it as JSON", run_profile},
      {"generate", "prefill + greedy generation: time to first token, optional per-token NLL",
       run_generate},
      {"eval", "accuracy evaluations: eval niah (passkey retrieval, dense vs XAttention)", run_eval},
      {"capture", "run a checkpoint and write post-RoPE q/k/v of its layers as a capture",
       run_capture},
      {"report", "head-sparsity report of a profile (or two): terminal summary, HTML figures",
       run_report},
  };
  return list;
}

namespace {

void print_usage(std::ostream& out) {
  out << "usage: xattn <command> [options]   (xattn <command> --help for its options)\n\n"
         "commands:\n";
  for (const auto& c : commands()) {
    out << "  " << c.name;
    for (size_t i = std::char_traits<char>::length(c.name); i < 12; ++i) out << ' ';
    out << c.summary << "\n";
  }
}

}  // namespace
}  // namespace xattn::cli

int main(int argc, char** argv) {
  using namespace xattn::cli;
  if (argc < 2) {
    print_usage(std::cerr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(std::cout);
    return 0;
  }
  for (const auto& c : commands()) {
    if (name != c.name) continue;
    Args args(argv + 2, argv + argc);
    try {
      return c.run(args);
    } catch (const xattn::Error& e) {
      std::cerr << "xattn " << name << ": error: " << e.what() << "\n";
      return static_cast<int>(e.kind());
    } catch (const boost::program_options::error& e) {
      std::cerr << "xattn " << name << ": usage error: " << e.what()
                << " (see xattn " << name << " --help)\n";
      return 2;
    } catch (const std::exception& e) {
      std::cerr << "xattn " << name << ": internal error: " << e.what() << "\n";
      return 6;
    }
  }
  std::cerr << "xattn: unknown command '" << name << "' (run xattn --help for the list)\n";
  return 2;
}
