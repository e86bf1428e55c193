// C++ inference with a calibration profile: loads a checkpoint and a profile (checked against the
// checkpoint), prefills a needle-in-a-haystack passkey prompt with XAttention through the
// runtime::Engine and with dense attention, generates the answer greedily after each, and prints
// the time to first token and the attention density against dense.
//
//   build/examples/cpp_inference/xattn_cpp_inference [--profile FILE] [--length 4096]
#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "xattn/engine.h"
#include "xattn/error.h"
#include "xattn/model/attention.h"
#include "xattn/model/load_engine.h"
#include "xattn/model/model.h"
#include "xattn/model/niah.h"
#include "xattn/model/tokens.h"

namespace {

using namespace xattn;

constexpr const char* kUsage =
    "usage: xattn_cpp_inference [--profile FILE] [--model DIR] [--length N] [--depth D]\n"
    "                           [--tokens N] [--seed S] [--sample I] [--device cpu|cuda]\n"
    "                           [--crossover N] [--threshold T] [--haystack FILE]\n"
    "                           [--force-sparse] [--cost-table FILE] [--density D]\n"
    "                           [--time-attention] [--repeat N]\n\n"
    "Prefills a passkey prompt of N tokens (default 4096) with XAttention (the profile's\n"
    "thresholds, through runtime::Engine) and with dense attention, generates the answer\n"
    "greedily after each, and prints the time to first token and the density against dense.\n"
    "--crossover N: prefills over fewer than N keys run dense (default: 0 on CPU, 8192 on CUDA).\n"
    "--threshold T: one τ for every head instead of the profile's (its kernel settings kept).\n"
    "Each layer runs sparse or dense by the cost model (predicted density at this length, the\n"
    "device's cost table); --force-sparse turns that rule off, --cost-table FILE replaces the\n"
    "built-in table (xattn_cost_table writes one). With --threshold the profile's densities do\n"
    "not apply: the rule is off unless --density D gives the kept density to assume.\n"
    "--repeat N: N prefills of each kind in back-to-back pairs (the order alternating between\n"
    "  pairs), the median time to first token and the median of the pairs' ratios.\n"
    "--time-attention: a third, untimed prefill of each kind that synchronises around every\n"
    "attention call and prints the attention-only time.\n"
    "Defaults: --profile profiles/xattn-byte.h5, --model and --haystack the bundled ones,\n"
    "--depth 0.5, --tokens 5.\n";

// The runner's attention hook on top of the engine: one plan per prefill shape, reused by every
// layer; records each layer's path and mean density.
class EngineBackend : public model::AttentionBackend {
 public:
  explicit EngineBackend(runtime::Engine& engine) : engine_(engine) {}

  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override {
    const runtime::ProblemShape shape = runtime::ProblemShape::of(q, k);
    if (!plan_ || plan_->shape() != shape) plan_ = engine_.plan(shape);
    at::Tensor out = engine_.run(*plan_, layer, q, k, v);
    const runtime::RunInfo& info = engine_.last_run();
    if (q.size(2) > 1) layer_decision_[layer] = info.decision;
    // Kept on the device: reading it here would make every layer wait for the GPU. A dense
    // call's density is 1: no tensor op for it (a short prefill is bound by the host).
    if (info.path == runtime::AttentionPath::kDense) {
      layer_density_[layer] = at::Tensor();
    } else {
      layer_density_[layer] = info.head_density.mean();
    }
    layer_path_[layer] = info.path == runtime::AttentionPath::kDense
                             ? std::string("dense (") + runtime::to_string(info.reason) + ")"
                             : runtime::to_string(info.path);
    return out;
  }

  double mean_density() const {
    double sum = 0;
    for (const auto& [layer, d] : layer_density_) sum += d.defined() ? d.item<double>() : 1.0;
    return layer_density_.empty() ? 1.0 : sum / double(layer_density_.size());
  }
  std::map<int, double> layer_density() const {
    std::map<int, double> density;
    for (const auto& [layer, d] : layer_density_)
      density[layer] = d.defined() ? d.item<double>() : 1.0;
    return density;
  }
  const std::map<int, std::string>& layer_path() const { return layer_path_; }
  const std::map<int, std::string>& layer_decision() const { return layer_decision_; }

 private:
  runtime::Engine& engine_;
  std::optional<runtime::Plan> plan_;
  std::map<int, at::Tensor> layer_density_;
  std::map<int, std::string> layer_path_;
  std::map<int, std::string> layer_decision_;
};

// Times every prefill attention call of another backend (synchronising the GPU around it).
class TimedBackend : public model::AttentionBackend {
 public:
  explicit TimedBackend(model::AttentionBackend& inner) : inner_(inner) {}
  at::Tensor attend(int layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override {
    if (q.is_cuda()) torch::cuda::synchronize();
    const auto start = std::chrono::steady_clock::now();
    at::Tensor out = inner_.attend(layer, q, k, v);
    if (q.is_cuda()) torch::cuda::synchronize();
    if (q.size(2) > 1)
      seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return out;
  }
  double seconds() const { return seconds_; }

 private:
  model::AttentionBackend& inner_;
  double seconds_ = 0;
};

std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) out += (c >= 32 && c < 127) ? char(c) : '?';
  return out;
}

int run(int argc, char** argv) {
  const std::string source_dir = XATTN_SOURCE_DIR;
  std::map<std::string, std::string> opt = {
      {"profile", source_dir + "/profiles/xattn-byte.h5"},
      {"model", source_dir + "/examples/models/xattn-byte"},
      {"haystack", source_dir + "/examples/data/haystack.txt"},
      {"length", "4096"},
      {"depth", "0.5"},
      {"tokens", "5"},
      {"seed", "1"},
      {"sample", "0"},
      {"device", "cpu"}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf("%s", kUsage);
      return 0;
    }
    if (arg == "--force-sparse" || arg == "--time-attention") {
      opt[arg.substr(2)] = "1";
      continue;
    }
    XATTN_CHECK_ARG(arg.rfind("--", 0) == 0 && i + 1 < argc, "unexpected argument '", arg, "'\n",
                    kUsage);
    opt[arg.substr(2)] = argv[++i];
  }

  model::LoadOptions load;
  load.device = at::Device(opt["device"]);
  const model::Model model(opt["model"], load);
  runtime::DensePolicy policy;
  if (opt.count("crossover")) policy.crossover_len = std::stoll(opt["crossover"]);
  policy.force_sparse = opt.count("force-sparse") > 0;
  if (opt.count("cost-table")) policy.cost_table = runtime::read_cost_table(opt["cost-table"]);
  runtime::Engine engine = model::load_engine(opt["profile"], opt["model"], policy);
  if (opt.count("threshold")) {  // the profile's kernel settings, one τ for every head
    engine = runtime::Engine(at::full_like(engine.thresholds(), std::stod(opt["threshold"])),
                             engine.settings(), policy);
  }
  if (opt.count("density")) {
    const double density = std::stod(opt["density"]);
    XATTN_CHECK_ARG(density > 0 && density <= 1, "--density ", density,
                    " must be in (0, 1] (the kept fraction of the causal blocks)");
    runtime::DensityModel model;
    model.density.assign(size_t(engine.num_layers()), density);
    engine.set_density_model(model);
  }

  const std::string haystack = model::read_text_file(opt["haystack"]);
  const model::NiahPrompt prompt =
      model::make_niah_prompt(haystack, model::parse_length(opt["length"]), std::stod(opt["depth"]),
                              std::stoll(opt["sample"]), std::stoull(opt["seed"]));
  const int64_t new_tokens = std::stoll(opt["tokens"]);
  std::printf("model %s (%lld layers, %lld/%lld heads), %s %s\n", opt["model"].c_str(),
              (long long)model.config().num_layers, (long long)model.config().num_heads,
              (long long)model.config().num_kv_heads, model.device().str().c_str(),
              c10::toString(model.dtype()));
  std::printf("profile %s: block %lld, stride %lld, mean tau %.3f\n", opt["profile"].c_str(),
              (long long)engine.settings().block_size, (long long)engine.settings().stride,
              engine.thresholds().mean().item<double>());
  std::printf("prompt %lld tokens, pass key %s at depth %.2f\n", (long long)prompt.length,
              prompt.key.c_str(), prompt.depth);

  EngineBackend xattention(engine);
  model::DenseBackend dense;
  if (model.device().is_cuda()) {  // first-call costs (kernel loading, autotuning) untimed
    model.generate(prompt.tokens, 1, xattention);
    model.generate(prompt.tokens, 1, dense);
  }
  const model::GenerateResult sparse_result = model.generate(prompt.tokens, new_tokens, xattention);
  const model::GenerateResult dense_result = model.generate(prompt.tokens, new_tokens, dense);

  std::string paths;
  for (const auto& [layer, path] : xattention.layer_path()) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "%s%d: %s %.3f", paths.empty() ? "" : ", ", layer, path.c_str(),
                  xattention.layer_density().at(layer));
    paths += buf;
  }
  for (const auto& [name, result] :
       {std::pair{"XAttention", &sparse_result}, std::pair{"dense     ", &dense_result}}) {
    const std::string answer = model::byte_decode(result->tokens);
    std::printf("%s: answer \"%s\" (%s), time to first token %.3f s\n", name,
                printable(answer).c_str(),
                model::passkey_correct(answer, prompt.key) ? "correct" : "wrong",
                result->time_to_first_token);
  }
  std::printf("layers (path, density): %s\n", paths.c_str());
  const int64_t repeat = opt.count("repeat") ? std::stoll(opt["repeat"]) : 1;
  XATTN_CHECK_ARG(repeat >= 1, "--repeat ", repeat, " must be >= 1");
  if (repeat > 1) {
    std::vector<double> sparse_s = {sparse_result.time_to_first_token},
                        dense_s = {dense_result.time_to_first_token};
    for (int64_t i = 1; i < repeat; ++i) {
      // The order alternates between pairs, so that neither side always runs first.
      if (i % 2 == 1) dense_s.push_back(model.generate(prompt.tokens, 1, dense).time_to_first_token);
      sparse_s.push_back(model.generate(prompt.tokens, 1, xattention).time_to_first_token);
      if (i % 2 == 0) dense_s.push_back(model.generate(prompt.tokens, 1, dense).time_to_first_token);
    }
    // Each pair ran back to back, so its ratio cancels the drift of the GPU's and host's speed
    // between pairs (the dense time alone moved up to 2x between runs of the same harness).
    std::vector<double> pair_ratio;
    for (size_t i = 0; i < sparse_s.size(); ++i) pair_ratio.push_back(dense_s[i] / sparse_s[i]);
    std::sort(pair_ratio.begin(), pair_ratio.end());
    std::sort(sparse_s.begin(), sparse_s.end());
    std::sort(dense_s.begin(), dense_s.end());
    const double ms = sparse_s[sparse_s.size() / 2], md = dense_s[dense_s.size() / 2];
    std::printf("median time to first token over %lld: XAttention %.4f s, dense %.4f s (%.3fx)\n",
                (long long)repeat, ms, md, md / ms);
    std::printf("median of %lld paired ratios (dense / XAttention): %.3fx\n", (long long)repeat,
                pair_ratio[pair_ratio.size() / 2]);
  }
  for (const auto& [layer, decision] : xattention.layer_decision()) {
    if (!decision.empty()) std::printf("layer %d dispatch: %s\n", layer, decision.c_str());
  }
  if (opt.count("time-attention")) {
    TimedBackend timed_sparse(xattention), timed_dense(dense);
    model.generate(prompt.tokens, 1, timed_sparse);
    model.generate(prompt.tokens, 1, timed_dense);
    std::printf("attention only: XAttention %.4f s, dense %.4f s (%.2fx)\n",
                timed_sparse.seconds(), timed_dense.seconds(),
                timed_dense.seconds() / timed_sparse.seconds());
  }
  std::printf(
      "density %.3f of the causal blocks (dense 1.000); first token %.2fx faster than "
      "dense\n",
      xattention.mean_density(),
      dense_result.time_to_first_token / sparse_result.time_to_first_token);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const xattn::Error& e) {
    std::fprintf(stderr, "xattn_cpp_inference: %s\n", e.what());
    return int(e.kind());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xattn_cpp_inference: %s\n", e.what());
    return 1;
  }
}
