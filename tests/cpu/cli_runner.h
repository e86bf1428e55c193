// Runs the built `xattn` executable (XATTN_CLI_PATH) with arguments; stdout and stderr together.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace xattn::testing {

struct CliResult {
  int code = -1;    // exit code, -1 when the process did not exit normally
  std::string out;  // stdout and stderr
};

inline CliResult run_xattn(const std::string& arguments) {
  const std::string command = std::string(XATTN_CLI_PATH) + " " + arguments + " 2>&1";
  CliResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace xattn::testing
