#include "cli_util.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/io/paths.h"

namespace xattn::cli {

Progress::Progress(std::string title)
    : title_(std::move(title)), terminal_(::isatty(2) == 1), start_(std::chrono::steady_clock::now()) {}

std::string format_duration(double seconds) {
  const int64_t s = int64_t(std::llround(std::max(0.0, seconds)));
  char text[32];
  if (s >= 3600)
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", (long long)(s / 3600),
                  (long long)(s / 60 % 60), (long long)(s % 60));
  else
    std::snprintf(text, sizeof text, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return text;
}

void Progress::update(int64_t done, int64_t total, const std::string& what) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double fraction = total > 0 ? double(done) / double(total) : 1.0;
  const std::string eta =
      done > 0 ? format_duration(elapsed / fraction - elapsed) : std::string("?");
  if (terminal_) {
    constexpr int kWidth = 30;
    const int filled = int(fraction * kWidth);
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r%s [%s] %3d%%  %lld/%lld  ETA %s  %-28s", title_.c_str(), bar.c_str(),
                 int(fraction * 100), (long long)done, (long long)total, eta.c_str(),
                 what.c_str());
    std::fflush(stderr);
    drawn_ = true;
  } else {
    const int64_t decile = int64_t(fraction * 10);
    if (decile == last_decile_) return;
    last_decile_ = decile;
    std::fprintf(stderr, "%s: %3d%% (%lld/%lld) elapsed %s, ETA %s, %s\n", title_.c_str(),
                 int(fraction * 100), (long long)done, (long long)total,
                 format_duration(elapsed).c_str(), eta.c_str(), what.c_str());
  }
}

void Progress::finish() {
  if (terminal_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

std::string bundled_path(const std::string& relative) {
  if (io::path_exists(relative)) return relative;
  const std::string from_source = std::string(XATTN_SOURCE_DIR) + "/" + relative;
  return io::path_exists(from_source) ? from_source : relative;
}

bool parse_or_help(const std::vector<std::string>& args,
                   const boost::program_options::options_description& options,
                   boost::program_options::variables_map& vm, const char* usage,
                   const boost::program_options::options_description* positional_options,
                   const boost::program_options::positional_options_description* positional) {
  namespace po = boost::program_options;
  po::options_description all;
  all.add(options);
  if (positional_options) all.add(*positional_options);
  po::command_line_parser parser(args);
  parser.options(all);
  if (positional) parser.positional(*positional);
  po::store(parser.run(), vm);
  po::notify(vm);
  if (!vm.count("help")) return false;
  std::cout << usage << options << "\n";
  return true;
}

void write_text_output(const std::string& path, const std::string& text, bool overwrite) {
  if (is_stdout(path)) {
    std::cout << text;
    std::cout.flush();
    XATTN_CHECK(std::cout.good(), ErrorKind::kIo, "cannot write to standard output");
    return;
  }
  io::write_file_atomically(path, overwrite, [&](const std::string& temp) {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    XATTN_CHECK(out.good(), ErrorKind::kIo, "cannot create ", temp);
    out << text;
    out.flush();
    XATTN_CHECK(out.good(), ErrorKind::kIo, "cannot write ", temp, " (disk full?)");
  });
}

std::vector<double> parse_number_list(const std::string& text, const char* option) {
  std::vector<double> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    XATTN_CHECK_ARG(!item.empty() && used == item.size(), option, ": '", item,
                    "' is not a number (give a comma-separated list, e.g. 0.5,0.9,1)");
    XATTN_CHECK_ARG(std::isfinite(value), option, ": '", item, "' is not a finite number");
    values.push_back(value);
  }
  XATTN_CHECK_ARG(!values.empty(), option, ": empty list");
  return values;
}

void check_block_settings(int64_t stride, int64_t block_size) {
  XATTN_CHECK_ARG(block_size >= 1 && block_size <= (int64_t(1) << 20) &&
                      (block_size & (block_size - 1)) == 0,
                  "--block-size ", block_size, " must be a power of two (64, 128 or 256)");
  XATTN_CHECK_ARG(stride >= 1 && block_size % stride == 0, "--stride ", stride,
                  " must be a positive divisor of --block-size ", block_size, " (e.g. 8 or 16)");
}

void check_thresholds(const std::vector<double>& taus, const char* option) {
  for (double tau : taus)
    XATTN_CHECK_ARG(std::isfinite(tau) && tau >= 0.0 && tau <= 1.0, option, ": ", tau,
                    " is not a threshold; τ lies in [0, 1] (1 keeps every block)");
}

void check_finite_at_least(double value, double minimum, const char* option) {
  XATTN_CHECK_ARG(std::isfinite(value) && value >= minimum, option, " ", value,
                  " must be a finite number >= ", minimum);
}

namespace {

// The file a path names, for comparing two paths: the real path of an existing file, else the
// real path of its folder plus its name (the same file whatever the spelling: ./a, a, dir/../a).
std::string identity(const std::string& path) {
  if (char* real = ::realpath(path.c_str(), nullptr)) {
    std::string out = real;
    std::free(real);
    return out;
  }
  const std::string folder = io::parent_folder(path);
  if (char* real = ::realpath(folder.c_str(), nullptr)) {
    std::string out = io::join_path(real, io::file_name(path));
    std::free(real);
    return out;
  }
  return path;
}

}  // namespace

void check_outputs(const std::vector<PathOption>& outputs, const std::vector<PathOption>& inputs,
                   bool force) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    const PathOption& out = outputs[i];
    if (out.path.empty()) continue;
    if (is_stdout(out.path)) {
      XATTN_CHECK_ARG(out.to_stdout_ok, out.option, " -: this output is a binary file and cannot ",
                      "go to standard output; give a file name (./- for a file named -)");
      continue;
    }
    for (const PathOption& in : inputs) {
      if (in.path.empty() || identity(in.path) != identity(out.path)) continue;
      XATTN_CHECK_ARG(false, out.option, " ", out.path, " is also an input (", in.option, " ",
                      in.path, "); writing it would destroy the input: choose another ",
                      out.option);
    }
    for (size_t j = 0; j < i; ++j) {
      if (outputs[j].path.empty() || identity(outputs[j].path) != identity(out.path)) continue;
      XATTN_CHECK_ARG(false, outputs[j].option, " and ", out.option, " name the same file ",
                      out.path, "; give two different paths");
    }
    io::check_writable(out.path, force);
  }
}

void check_inputs(const std::vector<PathOption>& inputs) {
  for (const PathOption& in : inputs)
    if (!in.path.empty()) io::check_readable_file(in.path, in.option);
}

// One line, no control bytes: a message quoting a file's bytes must not drive the terminal.
std::string one_line(const std::string& message) {
  std::string out;
  for (unsigned char c : message) {
    if (c == '\n' || c == '\r' || c == '\t') {
      out.push_back(' ');
    } else if (c < 32 || c == 127) {
      out.push_back('?');
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

}  // namespace xattn::cli
