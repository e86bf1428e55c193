// Subcommands of the `xattn` executable. Each takes the arguments after its name and returns the
// process exit code; errors are thrown as xattn::Error and reported by main.
#pragma once

#include <string>
#include <vector>

namespace xattn::cli {

using Args = std::vector<std::string>;

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const Args& args);
};

// The registry; each command's file defines its entry.
const std::vector<Command>& commands();

int run_calibrate(const Args& args);
int run_estimate(const Args& args);
int run_synth(const Args& args);
int run_profile(const Args& args);
int run_generate(const Args& args);
int run_eval(const Args& args);
int run_capture(const Args& args);
int run_report(const Args& args);

}  // namespace xattn::cli
