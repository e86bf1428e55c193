// `xattn eval niah`: needle-in-a-haystack passkey accuracy per length x depth, dense attention
// against XAttention (uniform --threshold or a calibration --profile), with the mean attention
// density XAttention kept. Prompts are a function of --seed only (see xattn/model/niah.h).
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_util.h"
#include "commands.h"
#include "model_cli.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/model/model.h"
#include "xattn/model/niah.h"
#include "xattn/model/tokenizer.h"
#include "xattn/model/tokens.h"

namespace xattn::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kDefaultHaystack = "examples/data/haystack.txt";

constexpr const char* kUsage =
    "usage: xattn eval niah --model DIR [--threshold T | --profile FILE]\n"
    "                       [--lengths 1k,2k,4k,8k,16k,32k] [--depths 0,0.25,0.5,0.75,1]\n"
    "                       [--samples N] [--seed S] [--json OUT [--force]] [--device cpu|cuda]\n\n"
    "Passkey retrieval: a 5-digit key in the sentence \"The pass key is 12345. Remember it.\n"
    "12345 is the pass key.\" is placed at each depth of a haystack text; the prompt ends with\n"
    "\"What is the pass key? The pass key is \" and the model generates 5 tokens greedily.\n"
    "A sample counts as correct when all 5 digits come back. Every prompt runs with dense\n"
    "attention and with XAttention (default: --threshold 0.9 for every head). Prompts are\n"
    "built through the model folder's tokenizer; lengths are in its tokens (bytes for\n"
    "byte-level models), the BOS included. Each cell line ends with the mean time to first\n"
    "token of one prompt (dense, XAttention). --json - writes the JSON to standard output and\n"
    "the tables to standard error.\n\n";

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

struct Cell {
  int64_t length = 0;
  double depth = 0.0;
  int64_t samples = 0;
  int64_t dense_correct = 0;
  int64_t xattn_correct = 0;
  double density_sum = 0.0;
  double dense_seconds = 0.0;
  double xattn_seconds = 0.0;
  nlohmann::json details = nlohmann::json::array();
};

std::string fraction(int64_t a, int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%lld/%lld", static_cast<long long>(a), static_cast<long long>(n));
  return buf;
}

int run_niah(const Args& args) {
  po::options_description options("eval niah options");
  options.add_options()("help,h", "this help");
  model_cli::add_model_options(options);
  model_cli::add_attention_options(options);
  options.add_options()("lengths", po::value<std::string>()->default_value("1k,2k,4k,8k,16k,32k"),
                        "prompt lengths in tokens, comma-separated (1k = 1024)")(
      "depths", po::value<std::string>()->default_value("0,0.25,0.5,0.75,1"),
      "needle depths in [0, 1], comma-separated")(
      "samples", po::value<int64_t>()->default_value(5), "prompts per length x depth")(
      "seed", po::value<uint64_t>()->default_value(0), "seed of keys, windows and separators")(
      "haystack", po::value<std::string>(),
      "haystack text (default: the bundled examples/data/haystack.txt, found from any folder)")(
      "json", po::value<std::string>(), "write the results as JSON here (- for standard output)")(
      "force", "overwrite an existing --json file")(
      "skip-dense", "run XAttention only (the dense column shows -)");
  po::variables_map vm;
  if (parse_or_help(args, options, vm, kUsage)) return 0;
  const std::string dir = model_cli::require(vm, "model", "--model examples/models/xattn-byte");
  std::vector<int64_t> lengths;
  for (const auto& s : split(vm["lengths"].as<std::string>()))
    lengths.push_back(model::parse_length(s));
  const std::vector<double> depths = parse_number_list(vm["depths"].as<std::string>(), "--depths");
  for (double d : depths)
    XATTN_CHECK_ARG(d >= 0.0 && d <= 1.0, "--depths: ", d, " is not a depth in [0, 1]");
  XATTN_CHECK_ARG(!lengths.empty() && !depths.empty(), "--lengths and --depths must not be empty");
  const int64_t samples = vm["samples"].as<int64_t>();
  XATTN_CHECK_ARG(samples >= 1, "--samples must be at least 1");
  const uint64_t seed = vm["seed"].as<uint64_t>();
  const std::string haystack_path = vm.count("haystack") ? vm["haystack"].as<std::string>()
                                                         : bundled_path(kDefaultHaystack);
  XATTN_CHECK(io::path_exists(haystack_path), ErrorKind::kIo, "haystack text '", haystack_path,
              "' not found", vm.count("haystack") ? "" : " (the bundled one is missing)",
              "; pass --haystack FILE");
  const std::string haystack = model::read_text_file(haystack_path);
  const std::string json_path = vm.count("json") ? vm["json"].as<std::string>() : "";
  // Before minutes of prompts, not after (issue 11).
  check_outputs({{"--json", json_path, /*to_stdout_ok=*/true}}, {{"--haystack", haystack_path}},
                vm.count("force") > 0);
  // With --json - the JSON alone goes to standard output, the tables to standard error.
  FILE* const human = is_stdout(json_path) ? stderr : stdout;
  std::ostream& text_out = is_stdout(json_path) ? std::cerr : std::cout;
  model_cli::check_attention_options(vm);
  // Prompts go through the model folder's tokenizer (bytes for byte-level models); the haystack
  // is tokenized once.
  const std::unique_ptr<model::Tokenizer> tokenizer = model::load_tokenizer(dir);
  const std::vector<int64_t> haystack_ids = tokenizer->encode(haystack, /*add_special=*/false);

  const model::Model model(dir, model_cli::load_options(vm));
  const model::ModelConfig& c = model.config();
  const std::unique_ptr<model::XAttentionBackend> xattention =
      model_cli::make_xattention(vm, model, 0.9);
  std::string xattn_label;
  if (vm.count("profile")) {
    xattn_label = "profile " + vm["profile"].as<std::string>();
  } else {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "uniform tau %.4g",
                  xattention->thresholds().flatten()[0].item<double>());
    xattn_label = buf;
  }
  const bool run_dense = !vm.count("skip-dense");
  model::DenseBackend dense;
  text_out << model::describe(c) << "\n"
           << "device " << model.device() << ", dtype " << c10::toString(model.dtype())
           << ", XAttention: " << xattn_label << ", samples " << samples << ", seed " << seed
           << "\n";

  const int64_t key_tokens = 5;
  std::vector<Cell> cells;
  for (int64_t length : lengths) {
    for (double depth : depths) {
      Cell cell;
      cell.length = length;
      cell.depth = depth;
      for (int64_t s = 0; s < samples; ++s) {
        const model::NiahPrompt p = model::make_niah_prompt(*tokenizer, haystack_ids, length, depth,
                                                              s, seed);
        nlohmann::json detail = {{"sample", s}, {"key", p.key}, {"needle_start", p.needle_start}};
        if (run_dense) {
          const model::GenerateResult g = model.generate(p.tokens, key_tokens, dense);
          const std::string text = tokenizer->decode(g.tokens);
          const bool ok = model::passkey_correct(text, p.key);
          cell.dense_correct += ok;
          cell.dense_seconds += g.time_to_first_token;
          detail["dense"] = model_cli::escape_bytes(text);
        }
        xattention->clear_density();
        const model::GenerateResult g = model.generate(p.tokens, key_tokens, *xattention);
        const std::string text = tokenizer->decode(g.tokens);
        cell.xattn_correct += model::passkey_correct(text, p.key);
        cell.xattn_seconds += g.time_to_first_token;
        const double density = xattention->mean_density();
        cell.density_sum += density;
        detail["xattn"] = model_cli::escape_bytes(text);
        detail["density"] = density;
        cell.details.push_back(detail);
        ++cell.samples;
      }
      char dense_time[32] = "-";
      if (run_dense)
        std::snprintf(dense_time, sizeof dense_time, "%.3f s",
                      cell.dense_seconds / double(cell.samples));
      std::fprintf(human,
                   "  length %6lld depth %.2f: dense %s  xattn %s  density %.4f  time to first "
                   "token per prompt: dense %s, xattn %.3f s\n",
                   static_cast<long long>(length), depth,
                   run_dense ? fraction(cell.dense_correct, cell.samples).c_str() : "-",
                   fraction(cell.xattn_correct, cell.samples).c_str(),
                   cell.density_sum / double(cell.samples), dense_time,
                   cell.xattn_seconds / double(cell.samples));
      std::fflush(human);
      cells.push_back(std::move(cell));
    }
  }

  // Accuracy table: one row per length, one column per depth, "dense / xattn" percentages.
  std::fprintf(human, "\npasskey accuracy (dense / xattn, %%) and mean XAttention density\n%8s",
               "length");
  for (double d : depths) std::fprintf(human, "  %11.2f", d);
  std::fprintf(human, "  %11s  %8s\n", "all", "density");
  int64_t total_dense = 0, total_xattn = 0, total = 0;
  double total_density = 0.0;
  size_t k = 0;
  for (int64_t length : lengths) {
    std::fprintf(human, "%8lld", static_cast<long long>(length));
    int64_t row_dense = 0, row_xattn = 0, row_n = 0;
    double row_density = 0.0;
    for (size_t j = 0; j < depths.size(); ++j, ++k) {
      const Cell& cell = cells[k];
      char buf[32];
      if (run_dense)
        std::snprintf(buf, sizeof(buf), "%3.0f / %3.0f", 100.0 * cell.dense_correct / cell.samples,
                      100.0 * cell.xattn_correct / cell.samples);
      else
        std::snprintf(buf, sizeof(buf), "  - / %3.0f", 100.0 * cell.xattn_correct / cell.samples);
      std::fprintf(human, "  %11s", buf);
      row_dense += cell.dense_correct;
      row_xattn += cell.xattn_correct;
      row_n += cell.samples;
      row_density += cell.density_sum;
    }
    char buf[32];
    if (run_dense)
      std::snprintf(buf, sizeof(buf), "%3.0f / %3.0f", 100.0 * row_dense / row_n,
                    100.0 * row_xattn / row_n);
    else
      std::snprintf(buf, sizeof(buf), "  - / %3.0f", 100.0 * row_xattn / row_n);
    std::fprintf(human, "  %11s  %8.4f\n", buf, row_density / double(row_n));
    total_dense += row_dense;
    total_xattn += row_xattn;
    total += row_n;
    total_density += row_density;
  }
  char dense_accuracy[32] = "-";  // --skip-dense: not measured
  if (run_dense)
    std::snprintf(dense_accuracy, sizeof dense_accuracy, "%.1f%%", 100.0 * total_dense / total);
  std::fprintf(human, "overall: dense %s, xattn %.1f%%, mean density %.4f over %lld prompts\n",
               dense_accuracy, 100.0 * total_xattn / total, total_density / double(total),
               static_cast<long long>(total));

  if (!json_path.empty()) {
    nlohmann::json j;
    j["task"] = "niah-passkey";
    j["model"] = dir;
    j["config"] = model::describe(c);
    j["device"] = model.device().str();
    j["dtype"] = c10::toString(model.dtype());
    j["xattention"] = xattn_label;
    j["block_size"] = vm.count("profile") ? nlohmann::json(nullptr)
                                          : nlohmann::json(vm["block-size"].as<int64_t>());
    j["seed"] = seed;
    j["samples"] = samples;
    j["haystack"] = haystack_path;
    j["lengths"] = lengths;
    j["depths"] = depths;
    j["dense_run"] = run_dense;
    nlohmann::json out_cells = nlohmann::json::array();
    for (const Cell& cell : cells)
      out_cells.push_back({{"length", cell.length},
                           {"depth", cell.depth},
                           {"samples", cell.samples},
                           {"dense_correct", run_dense ? nlohmann::json(cell.dense_correct)
                                                       : nlohmann::json(nullptr)},
                           {"xattn_correct", cell.xattn_correct},
                           {"mean_density", cell.density_sum / double(cell.samples)},
                           {"dense_ttft_seconds",
                            run_dense ? nlohmann::json(cell.dense_seconds / double(cell.samples))
                                      : nlohmann::json(nullptr)},
                           {"xattn_ttft_seconds", cell.xattn_seconds / double(cell.samples)},
                           {"prompts", cell.details}});
    j["cells"] = out_cells;
    j["dense_accuracy"] = run_dense ? nlohmann::json(double(total_dense) / double(total))
                                    : nlohmann::json(nullptr);
    j["xattn_accuracy"] = double(total_xattn) / double(total);
    j["mean_density"] = total_density / double(total);
    std::fflush(human);
    // Paths need not be UTF-8: such bytes become U+FFFD (answers are escaped already).
    write_text_output(json_path,
                      j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                      vm.count("force") > 0);
    if (!is_stdout(json_path)) std::cout << "wrote " << json_path << "\n";
  }
  return 0;
}

}  // namespace

int run_eval(const Args& args) {
  XATTN_CHECK_ARG(!args.empty(), "say which evaluation: xattn eval niah --model DIR ...");
  const std::string task = args.front();
  if (task == "--help" || task == "-h" || task == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (task == "niah") return run_niah(Args(args.begin() + 1, args.end()));
  throw Error(ErrorKind::kInvalidArgument,
              detail::concat("unknown evaluation '", task, "'; available: niah"));
}

}  // namespace xattn::cli
