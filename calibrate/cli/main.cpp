// `xattn`: one executable, one subcommand per job. Errors end as one line on stderr and an exit
// code by category (docs/cli-errors.md: 2 usage, 3 bad input, 4 I/O, 5 CUDA, 6 internal; 130 and
// 143 after SIGINT and SIGTERM).
#include <c10/util/Exception.h>
#include <signal.h>
#include <unistd.h>

#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <malloc.h>

#include <iostream>

#include "cli_util.h"
#include "commands.h"
#include "xattn/calibrate/version.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"

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
  out << "usage: xattn <command> [options]   (xattn <command> --help for its options)\n"
         "       xattn --version\n\n"
         "commands:\n";
  for (const auto& c : commands()) {
    out << "  " << c.name;
    for (size_t i = std::char_traits<char>::length(c.name); i < 12; ++i) out << ' ';
    out << c.summary << "\n";
  }
}

bool stderr_is_terminal = false;

// SIGINT / SIGTERM: remove the temporary files of the writes in flight (outputs are only ever
// renamed into place, so existing ones stay untouched), say so in one line, exit 128 + signal.
// Only async-signal-safe calls here.
void on_stop_signal(int signal_number) {
  io::remove_temporaries();
  const char* text = signal_number == SIGINT
                         ? "xattn: interrupted (SIGINT); temporary files removed, existing "
                           "outputs untouched\n"
                         : "xattn: terminated (SIGTERM); temporary files removed, existing "
                           "outputs untouched\n";
  if (stderr_is_terminal) (void)!::write(2, "\n", 1);  // end a progress bar's line
  (void)!::write(2, text, std::strlen(text));
  ::_exit(128 + signal_number);
}

void install_stop_handlers() {
  stderr_is_terminal = ::isatty(2) == 1;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, SIGINT);
  sigaddset(&action.sa_mask, SIGTERM);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

}  // namespace
}  // namespace xattn::cli

int main(int argc, char** argv) {
  using namespace xattn::cli;
  // Keep freed memory for reuse instead of returning it to the kernel: calibration allocates and
  // frees tensors of tens of MB per step, and fresh pages cost millions of page faults (a third of
  // the main job's time on the 2-core machine).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);   // glibc's largest accepted value
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 256 << 20);
  if (argc < 2) {
    print_usage(std::cerr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(std::cout);
    return 0;
  }
  if (name == "--version" || name == "version") {
    std::cout << "xattn " << xattn::tool_version() << "\n";
    return 0;
  }
  for (const auto& c : commands()) {
    if (name != c.name) continue;
    Args args(argv + 2, argv + argc);
    install_stop_handlers();
    try {
      return c.run(args);
    } catch (const xattn::Error& e) {
      std::cerr << "xattn " << name << ": error: " << one_line(e.what()) << "\n";
      // Leave without exit handlers: after a damaged HDF5 file, the HDF5 library's own clean-up
      // at exit can crash or loop (found by fuzzing); every output is already complete or
      // removed, so there is nothing left for them to do.
      std::cout.flush();
      std::cerr.flush();
      std::fflush(nullptr);
      std::_Exit(static_cast<int>(e.kind()));
    } catch (const boost::program_options::error& e) {
      std::cerr << "xattn " << name << ": usage error: " << one_line(e.what())
                << " (see xattn " << name << " --help)\n";
      return 2;
    } catch (const c10::Error& e) {
      // LibTorch's own errors: the message's first line, without LibTorch's backtrace.
      const std::string message = e.what_without_backtrace();
      std::cerr << "xattn " << name << ": internal error: "
                << one_line(message.substr(0, message.find('\n'))) << "\n";
      return 6;
    } catch (const std::exception& e) {
      std::cerr << "xattn " << name << ": internal error: " << one_line(e.what()) << "\n";
      return 6;
    }
  }
  std::cerr << "xattn: unknown command '" << name << "' (run xattn --help for the list)\n";
  return 2;
}
