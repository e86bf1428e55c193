// `xattn capture`: run a checkpoint on one input with dense attention and write every chosen
// layer's post-RoPE q, k, v in the capture format (xattn/capture.h).
#include <boost/program_options.hpp>
#include <iostream>
#include <set>
#include <sstream>

#include "cli_util.h"
#include "commands.h"
#include "model_cli.h"
#include "xattn/error.h"
#include "xattn/io/capture.h"
#include "xattn/io/file_io.h"
#include "xattn/model/model.h"

namespace xattn::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "usage: xattn capture --model DIR (--input IDS | --text FILE | --prompt STRING)\n"
    "                     --out capture.h5 [--layers 0,2,5] [--max-len N] [--force]\n"
    "                     [--store-dtype float16|bfloat16|float32] [--no-v] [--deflate 0-9]\n\n"
    "Runs the model once (dense attention) and writes the post-RoPE q, k (and v) of the chosen\n"
    "layers (default: all) in the xattn capture format (docs/capture-format.md).\n\n";

std::set<int64_t> parse_layers(const std::string& text, int64_t num_layers) {
  std::set<int64_t> layers;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    long long value = -1;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    XATTN_CHECK_ARG(used == item.size() && value >= 0 && value < num_layers, "--layers: '", item,
                    "' is not a layer index of this model (0 .. ", num_layers - 1, ")");
    layers.insert(value);
  }
  XATTN_CHECK_ARG(!layers.empty(), "--layers names no layer");
  return layers;
}

}  // namespace

int run_capture(const Args& args) {
  po::options_description options("capture options");
  options.add_options()("help,h", "this help");
  model_cli::add_model_options(options);
  model_cli::add_input_options(options);
  options.add_options()("out", po::value<std::string>(), "capture file to write (.h5)")(
      "layers", po::value<std::string>(), "comma-separated layer indices (default: all)")(
      "force", "overwrite an existing --out")(
      "store-dtype", po::value<std::string>()->default_value("float16"),
      "element type in the file: float16, bfloat16 or float32")(
      "no-v", "leave v out (scoring and selection need only q and k)")(
      "deflate", po::value<int>()->default_value(0), "gzip level 0-9 (0: uncompressed)");
  po::variables_map vm;
  if (parse_or_help(args, options, vm, kUsage)) return 0;
  const std::string dir = model_cli::require(vm, "model", "--model examples/models/xattn-byte");
  const std::string out = model_cli::require(vm, "out", "--out capture.h5");
  const bool force = vm.count("force") > 0;
  const std::vector<PathOption> inputs = {
      {"--input", vm.count("input") ? vm["input"].as<std::string>() : ""},
      {"--text", vm.count("text") ? vm["text"].as<std::string>() : ""}};
  check_inputs(inputs);
  check_outputs({{"--out", out}}, inputs, force);
  const at::ScalarType store = io::capture_dtype_from_name(vm["store-dtype"].as<std::string>());
  const int deflate = vm["deflate"].as<int>();
  XATTN_CHECK_ARG(deflate >= 0 && deflate <= 9, "--deflate must lie in 0..9");

  const model::Model model(dir, model_cli::load_options(vm));
  const model::ModelConfig& c = model.config();
  const std::vector<int64_t> tokens = model_cli::read_input(vm, dir);
  std::set<int64_t> layers;
  if (vm.count("layers")) {
    layers = parse_layers(vm["layers"].as<std::string>(), c.num_layers);
  } else {
    for (int64_t i = 0; i < c.num_layers; ++i) layers.insert(i);
  }

  io::CaptureInfo info;
  info.model_name = io::file_name(dir);  // "models/llama/" -> "llama"
  info.source = "model";
  std::ostringstream description;
  description << model::describe(c) << "; input ";
  if (vm.count("input")) description << vm["input"].as<std::string>();
  else if (vm.count("text")) description << vm["text"].as<std::string>();
  else description << "--prompt";
  description << ", " << tokens.size() << " tokens, layers";
  for (int64_t l : layers) description << " " << l;
  info.description = description.str();
  info.dtype = store;
  info.num_layers = c.num_layers;
  info.heads_q = c.num_heads;
  info.heads_kv = c.num_kv_heads;
  info.head_dim = c.head_dim;
  info.causal = true;
  info.has_v = !vm.count("no-v");
  info.len_q = {static_cast<int64_t>(tokens.size())};
  info.len_k = {static_cast<int64_t>(tokens.size())};
  io::OutputOptions output;
  output.overwrite = force;
  output.deflate_level = deflate;
  io::CaptureWriter writer(out, info, output);

  model::DenseBackend dense;
  model::CaptureBackend capture(dense, [&](int layer, const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v) {
    if (!layers.count(layer)) return;
    writer.write_layer(layer, q.to(store), k.to(store),
                       info.has_v ? v.to(store) : at::Tensor());
  });
  const model::ForwardResult r = model.forward(tokens, capture);
  writer.commit();
  std::cout << model::describe(c) << "\n"
            << "captured " << layers.size() << " layer(s) of " << tokens.size()
            << " tokens in " << r.seconds << " s -> " << out << "\n";
  return 0;
}

}  // namespace xattn::cli
