// The `xattn` executable against what the docs and its own help say (issue 14): --version, help
// texts (defaults as written, positionals in the usage line), `-` as standard output where an
// output is text and refused where it is HDF5, the bundled haystack found from any folder, error
// messages that name only options the commands have.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "scratch.h"
#include "xattn/calibrate/version.h"

namespace xattn {
namespace {

using testing::CliResult;
using testing::run_xattn;

const std::string kSource = XATTN_SOURCE_DIR;
const std::string kSample = kSource + "/examples/data/sample_capture.h5";
const std::string kProfile = kSource + "/profiles/xattn-byte.h5";
const std::string kModel = kSource + "/examples/models/xattn-byte";

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Runs `xattn ARGUMENTS` in `folder`; stdout and stderr apart.
struct SplitResult {
  int code = -1;
  std::string out;
  std::string err;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

SplitResult run_in(const std::string& folder, const std::string& arguments) {
  const std::string err_path = folder + "/.stderr";
  const std::string command = "cd '" + folder + "' && " + std::string(XATTN_CLI_PATH) + " " +
                              arguments + " 2> '" + err_path + "'";
  SplitResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = read_file(err_path);
  std::remove(err_path.c_str());
  return result;
}

TEST(CliDocs, VersionPrintsTheToolVersion) {
  for (const char* flag : {"--version", "version"}) {
    const CliResult r = run_xattn(flag);
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, std::string("xattn ") + tool_version() + "\n");
  }
  EXPECT_TRUE(has(run_xattn("--help").out, "--version"));
}

const std::vector<std::string> kHelpCommands = {
    "calibrate", "estimate", "synth", "generate", "capture",
    "report",    "eval niah", "profile show", "profile export"};

TEST(CliDocs, HelpShowsDefaultsAsWrittenAndPositionalsInTheUsageLine) {
  // A default printed from its binary value: 0.050000000000000003, 0.25000000000000001.
  const std::regex long_number("\\(=[-0-9.e]*[0-9]{9,}[0-9.e]*\\)");
  for (const std::string& command : kHelpCommands) {
    SCOPED_TRACE(command);
    const CliResult r = run_xattn(command + " --help");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_TRUE(has(r.out, "usage: xattn " + command.substr(0, command.find(' ')))) << r.out;
    EXPECT_FALSE(std::regex_search(r.out, long_number)) << r.out;
  }
  const CliResult calibrate = run_xattn("calibrate --help");
  EXPECT_TRUE(has(calibrate.out, "(=0.25)")) << calibrate.out;
  const CliResult report = run_xattn("report --help");
  EXPECT_FALSE(has(report.out, "--profiles")) << report.out;
  EXPECT_TRUE(has(report.out, "xattn report PROFILE_A PROFILE_B")) << report.out;
}

TEST(CliDocs, DashIsStandardOutputForTextOutputs) {
  const test_files::ScratchFolder folder("xattn-cli-stdout-");
  // profile export --json -: the JSON alone, no file named '-'.
  const SplitResult json = run_in(folder.path(), "profile export --json - " + kProfile);
  ASSERT_EQ(json.code, 0) << json.err;
  const nlohmann::json parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["format"], "xattn-profile");
  EXPECT_FALSE(io::path_exists(folder.file("-")));
  // ./- is a file named '-'.
  const SplitResult named = run_in(folder.path(), "profile export --json ./- " + kProfile);
  ASSERT_EQ(named.code, 0) << named.err;
  EXPECT_TRUE(io::path_exists(folder.file("-")));

  // report --html -: the page on stdout, the summary on stderr.
  const SplitResult html = run_in(folder.path(), "report " + kProfile + " --no-stats --html -");
  ASSERT_EQ(html.code, 0) << html.err;
  EXPECT_EQ(html.out.rfind("<!DOCTYPE html>", 0), 0u) << html.out.substr(0, 200);
  EXPECT_TRUE(has(html.err, "xattn report  ")) << html.err;
  EXPECT_EQ(folder.entry_count(), 1);  // only ./-
}

TEST(CliDocs, DashIsRefusedForBinaryOutputs) {
  const test_files::ScratchFolder folder("xattn-cli-dash-");
  for (const std::string& arguments :
       {"calibrate --capture " + kSample + " --out -",
        "calibrate --capture " + kSample + " --out p.h5 --stats-out -",
        "estimate --capture " + kSample + " --out -", std::string("synth --out -")}) {
    SCOPED_TRACE(arguments);
    const SplitResult r = run_in(folder.path(), arguments);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_TRUE(has(r.err, "cannot go to standard output")) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  EXPECT_EQ(folder.entry_count(), 0);
}

TEST(CliDocs, AnOutputFolderIsRefusedWithAndWithoutForce) {
  const test_files::ScratchFolder folder("xattn-cli-html-folder-");
  for (const std::string force : {"", " --force"}) {
    const CliResult r = run_xattn("report " + kProfile + " --no-stats --html " + folder.path() + force);
    EXPECT_EQ(r.code, 4) << r.out;
    EXPECT_TRUE(has(r.out, "it is a folder; give a file name")) << r.out;
    EXPECT_FALSE(has(r.out, "pass --force")) << r.out;
  }
}

TEST(CliDocs, EvalFindsTheBundledHaystackFromAnyFolderAndLabelsItsTimes) {
  if (!io::path_exists(kModel + "/config.json")) GTEST_SKIP() << "no bundled model";
  const test_files::ScratchFolder folder("xattn-cli-eval-");
  const SplitResult r = run_in(folder.path(), "eval niah --model " + kModel +
                                                  " --lengths 256 --depths 0.5 --samples 1 "
                                                  "--json -");
  ASSERT_EQ(r.code, 0) << r.err;
  // The JSON alone on stdout, the tables on stderr, each cell's times with their unit.
  const nlohmann::json parsed = nlohmann::json::parse(r.out);
  EXPECT_EQ(parsed["task"], "niah-passkey");
  EXPECT_TRUE(has(parsed["haystack"].get<std::string>(), "examples/data/haystack.txt"));
  EXPECT_TRUE(std::regex_search(
      r.err, std::regex("time to first token per prompt: dense [0-9.]+ s, xattn [0-9.]+ s")))
      << r.err;
  EXPECT_EQ(folder.entry_count(), 0);
}

TEST(CliDocs, TokenIdErrorsNameTheOptionOfTheCommand) {
  if (!io::path_exists(kModel + "/config.json")) GTEST_SKIP() << "no bundled model";
  const test_files::ScratchFolder folder("xattn-cli-ids-");
  std::ofstream(folder.file("words.txt")) << "these are words, not token ids\n";
  const CliResult r = run_xattn("calibrate --model " + kModel + " --data " +
                                folder.file("words.txt") + " --data-format ids --out " +
                                folder.file("p.h5"));
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_TRUE(has(r.out, "--data-format text in calibrate")) << r.out;
}

// Every `--option` quoted in a message of the command-line tool or the libraries it reports for
// is an option of some xattn command (a message must not recommend an option that is gone).
TEST(CliDocs, MessagesNameOnlyExistingOptions) {
  std::set<std::string> known;
  const std::regex option("--[a-z][a-z0-9-]+");
  for (const std::string& command : kHelpCommands) {
    const std::string help = run_xattn(command + " --help").out;
    for (std::sregex_iterator it(help.begin(), help.end(), option), end; it != end; ++it)
      known.insert(it->str());
  }
  known.insert("--help");
  known.insert("--version");
  std::vector<std::string> files;
  for (const std::string folder : {"calibrate/cli", "calibrate/src", "runtime/src",
                                   "runtime/src/model", "runtime/io/src", "runtime/model/src"}) {
    const std::string path = kSource + "/" + folder;
    if (!io::is_directory(path)) continue;
    for (const std::string& name : io::folder_entries(path)) {
      const std::string ext = io::extension(name);
      if (ext == ".cpp" || ext == ".h") files.push_back(path + "/" + name);
    }
  }
  ASSERT_GT(files.size(), 10u);
  const std::regex quoted("\"([^\"\\\\]|\\\\.)*\"");
  for (const std::string& file : files) {
    std::istringstream lines(read_file(file));
    std::string line;
    int number = 0;
    while (std::getline(lines, line)) {
      ++number;
      if (line.find("//") != std::string::npos &&
          line.find("//") < line.find('"'))  // a comment, not a message
        continue;
      for (std::sregex_iterator q(line.begin(), line.end(), quoted), end; q != end; ++q) {
        const std::string literal = q->str();
        for (std::sregex_iterator it(literal.begin(), literal.end(), option), stop; it != stop;
             ++it)
          EXPECT_TRUE(known.count(it->str()))
              << file << ":" << number << " names " << it->str()
              << ", which no xattn command has: " << line;
      }
    }
  }
}

}  // namespace
}  // namespace xattn
