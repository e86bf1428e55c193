// Options shared by the commands that run a model (generate, capture, eval): which model, on
// which device and dtype, and where the input tokens come from.
#pragma once

#include <ATen/ATen.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli_util.h"
#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/io/profile.h"
#include "xattn/engine_profile.h"
#include "xattn/model/load_engine.h"
#include "xattn/model/model.h"
#include "xattn/model/tokenizer.h"
#include "xattn/model/tokens.h"

namespace xattn::cli {

namespace model_cli {

namespace po = boost::program_options;

inline void add_model_options(po::options_description& o) {
  o.add_options()("model", po::value<std::string>(),
                  "checkpoint folder: config.json + *.safetensors (Llama, Mistral, Qwen2, Qwen3, "
                  "Phi-3: docs/runner.md, What loads)")(
      "device", po::value<std::string>()->default_value("cpu"), "cpu, cuda or cuda:N")(
      "dtype", po::value<std::string>()->default_value("auto"),
      "float32, bfloat16, float16 or auto (float32 on CPU, the stored dtype on CUDA)");
}

inline void add_input_options(po::options_description& o) {
  o.add_options()("input", po::value<std::string>(),
                  "token ids: text file of integers, or HDF5 (*.h5) dataset")(
      "dataset", po::value<std::string>()->default_value(""),
      "HDF5 dataset of --input (default: input_ids, tokens or ids)")(
      "text", po::value<std::string>(),
      "raw text file, tokenized with the model folder's tokenizer (its BOS prepended)")(
      "prompt", po::value<std::string>(), "raw text given inline, tokenized like --text")(
      "max-len", po::value<int64_t>(), "keep only the first N tokens of the input");
}

inline at::Device parse_device(const std::string& text) {
  if (text == "cpu") return at::Device(at::kCPU);
  if (text == "cuda" || text.rfind("cuda:", 0) == 0) {
    std::optional<at::Device> device;
    try {
      device = at::Device(text);
    } catch (const c10::Error&) {
    }
    XATTN_CHECK_ARG(device.has_value(), "--device '", text, "': use cpu, cuda or cuda:N");
    XATTN_CHECK(at::hasCUDA(), ErrorKind::kCuda, "--device ", text,
                ": this build's LibTorch has no CUDA or no GPU is visible; use --device cpu");
    return *device;
  }
  throw Error(ErrorKind::kInvalidArgument,
              detail::concat("--device '", text, "': use cpu, cuda or cuda:N"));
}

inline std::optional<at::ScalarType> parse_dtype(const std::string& text) {
  if (text == "auto") return std::nullopt;
  if (text == "float32" || text == "fp32") return at::kFloat;
  if (text == "bfloat16" || text == "bf16") return at::kBFloat16;
  if (text == "float16" || text == "fp16") return at::kHalf;
  throw Error(ErrorKind::kInvalidArgument,
              detail::concat("--dtype '", text, "': use float32, bfloat16, float16 or auto"));
}

inline std::string require(const po::variables_map& vm, const char* key, const char* example) {
  XATTN_CHECK_ARG(vm.count(key), "missing --", key, " (", example, ")");
  return vm[key].as<std::string>();
}

inline model::LoadOptions load_options(const po::variables_map& vm) {
  model::LoadOptions o;
  o.device = parse_device(vm["device"].as<std::string>());
  o.dtype = parse_dtype(vm["dtype"].as<std::string>());
  return o;
}

// The input tokens from --input / --text / --prompt (exactly one), cut to --max-len. Text goes
// through the model folder's tokenizer (xattn/model/tokenizer.h) with its BOS.
inline std::vector<int64_t> read_input(const po::variables_map& vm, const std::string& model_dir) {
  const int given = int(vm.count("input")) + int(vm.count("text")) + int(vm.count("prompt"));
  XATTN_CHECK_ARG(given == 1, "give exactly one input: --input IDS_FILE, --text FILE or --prompt "
                  "STRING");
  std::vector<int64_t> ids;
  if (vm.count("input")) {
    ids = model::read_token_ids(vm["input"].as<std::string>(), vm["dataset"].as<std::string>());
  } else {
    const std::unique_ptr<model::Tokenizer> tokenizer = model::load_tokenizer(model_dir);
    const std::string text = vm.count("text") ? model::read_text_file(vm["text"].as<std::string>())
                                              : vm["prompt"].as<std::string>();
    ids = tokenizer->encode(text, /*add_special=*/true);
  }
  if (vm.count("max-len")) {
    const int64_t n = vm["max-len"].as<int64_t>();
    XATTN_CHECK_ARG(n > 0, "--max-len must be positive");
    if (static_cast<int64_t>(ids.size()) > n) ids.resize(static_cast<size_t>(n));
  }
  XATTN_CHECK_INPUT(!ids.empty(), "the input has no tokens");
  return ids;
}

inline void add_attention_options(po::options_description& o) {
  o.add_options()("threshold", po::value<double>(),
                  "XAttention with this tau for every head")(
      "profile", po::value<std::string>(),
      "XAttention with the per-head thresholds (and block size, stride) of a calibration profile")(
      "stride", po::value<int64_t>()->default_value(8), "XAttention scoring stride S (--threshold)")(
      "block-size", po::value<int64_t>()->default_value(128), "XAttention block size (--threshold)")(
      "sparse-last-block", "--threshold: select the last query block like the others (the published method); by default it keeps every block, so the first generated token sees all keys")(
      "cost-table", po::value<std::string>(),
      "--profile on CUDA: the dispatch's cost table (JSON from xattn_cost_table) instead of the device's built-in one")(
      "force-sparse",
      "--profile on CUDA: run every prefill call sparse; by default a layer runs sparse only where the cost model predicts it faster than dense at the profile's density for that length");
}

// The attention options checked before the model loads: not both --profile and --threshold,
// --threshold in [0, 1], --stride / --block-size as the kernels take them, the profile readable.
inline void check_attention_options(const po::variables_map& vm) {
  XATTN_CHECK_ARG(!(vm.count("profile") && vm.count("threshold")),
                  "give --profile or --threshold, not both");
  if (vm.count("threshold")) check_thresholds({vm["threshold"].as<double>()}, "--threshold");
  check_block_settings(vm["stride"].as<int64_t>(), vm["block-size"].as<int64_t>());
  if (vm.count("profile")) io::check_readable_file(vm["profile"].as<std::string>(), "--profile");
  if (vm.count("cost-table")) {
    XATTN_CHECK_ARG(vm.count("profile") && !vm.count("force-sparse"),
                    "--cost-table drives the dispatch of a --profile run; drop it (or "
                    "--force-sparse)");
    io::check_readable_file(vm["cost-table"].as<std::string>(), "--cost-table");
  }
}

// XAttention from --profile or --threshold; with neither, one τ = default_tau for every head,
// or null when no default is given.
inline std::unique_ptr<model::XAttentionBackend> make_xattention(
    const po::variables_map& vm, const model::Model& m,
    std::optional<double> default_tau = std::nullopt) {
  XATTN_CHECK_ARG(!(vm.count("profile") && vm.count("threshold")),
                  "give --profile or --threshold, not both");
  const model::ModelConfig& c = m.config();
  runtime::EstimateOptions options;
  if (vm.count("profile")) {
    const std::string path = vm["profile"].as<std::string>();
    const io::Profile profile = io::read_profile(path);
    io::check_profile_matches(profile, model::model_signature_of(m.dir()));
    XATTN_CHECK_INPUT(profile.kernel.causal, "profile '", path,
                      "' was calibrated for non-causal attention; the model runner is causal");
    options.block_size = profile.kernel.block_size;
    options.stride = profile.kernel.stride;
    options.dense_last_query_block = profile.kernel.dense_last_query_block;
    const at::Tensor tau =
        at::tensor(profile.thresholds, at::TensorOptions().dtype(at::kFloat))
            .view({c.num_layers, c.num_heads});
    auto backend = std::make_unique<model::XAttentionBackend>(tau.clone(), options);
    // As runtime::Engine on CUDA: dense where the profile's density at this length cannot pay
    // for the estimate (CPU runs stay sparse: the reference path is what they test).
    if (m.device().is_cuda() && !vm.count("force-sparse")) {
      backend->set_dispatch(vm.count("cost-table")
                                ? runtime::read_cost_table(vm["cost-table"].as<std::string>())
                                : runtime::cuda_device_cost_table(m.device().index()),
                            runtime::density_model_of(profile));
    }
    return backend;
  }
  if (!vm.count("threshold") && !default_tau) return nullptr;
  const double tau = vm.count("threshold") ? vm["threshold"].as<double>() : *default_tau;
  options.block_size = vm["block-size"].as<int64_t>();
  options.stride = vm["stride"].as<int64_t>();
  options.dense_last_query_block = !vm.count("sparse-last-block");
  return std::make_unique<model::XAttentionBackend>(
      model::XAttentionBackend::uniform(c.num_layers, c.num_heads, tau, options));
}

// Bytes shown readably: printable ASCII as is, other bytes escaped.
inline std::string escape_bytes(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c >= 32 && c < 127) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace model_cli
}  // namespace xattn::cli
