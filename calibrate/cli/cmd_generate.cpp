// `xattn generate`: prefill a prompt (dense or XAttention), greedily generate N tokens, report the
// time to first token; with --nll also the per-token negative log-likelihood of the input.
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "cli_util.h"
#include "commands.h"
#include "model_cli.h"
#include "xattn/error.h"
#include "xattn/model/model.h"

namespace xattn::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "usage: xattn generate --model DIR (--input IDS | --text FILE | --prompt STRING)\n"
    "                      [--tokens N] [--threshold T | --profile FILE] [--nll]\n"
    "                      [--device cpu|cuda] [--dtype auto|float32|bfloat16|float16]\n\n"
    "Prefills the prompt layer by layer (dense attention, or XAttention with --threshold /\n"
    "--profile), then generates N tokens greedily with a KV cache and dense decode steps.\n"
    "Prints the time to first token and the tokens (and their text, through the model folder's\n"
    "tokenizer; --text and --prompt are tokenized with it). --nll\n"
    "runs one more forward pass and prints each input token's negative log-likelihood (nats)\n"
    "given its prefix, and their mean.\n\n";

}  // namespace

int run_generate(const Args& args) {
  po::options_description options("generate options");
  options.add_options()("help,h", "this help");
  model_cli::add_model_options(options);
  model_cli::add_input_options(options);
  model_cli::add_attention_options(options);
  options.add_options()("tokens", po::value<int64_t>()->default_value(16),
                        "number of tokens to generate")(
      "nll", "print the per-token negative log-likelihood of the input")(
      "no-stop", "keep generating after <eos>");
  po::variables_map vm;
  if (parse_or_help(args, options, vm, kUsage)) return 0;
  const std::string dir = model_cli::require(vm, "model", "--model examples/models/xattn-byte");
  const int64_t n_new = vm["tokens"].as<int64_t>();
  XATTN_CHECK_ARG(n_new >= 1, "--tokens must be at least 1");
  model_cli::check_attention_options(vm);
  check_inputs({{"--input", vm.count("input") ? vm["input"].as<std::string>() : ""},
                {"--text", vm.count("text") ? vm["text"].as<std::string>() : ""}});

  const model::Model model(dir, model_cli::load_options(vm));
  const model::ModelConfig& c = model.config();
  const std::vector<int64_t> prompt = model_cli::read_input(vm, dir);
  std::cout << model::describe(c) << "\n"
            << "parameters " << model.parameter_count() << ", device " << model.device()
            << ", dtype " << c10::toString(model.dtype()) << "\n"
            << "prompt " << prompt.size() << " tokens\n";

  std::unique_ptr<model::XAttentionBackend> xattention = model_cli::make_xattention(vm, model);
  model::DenseBackend dense;
  model::AttentionBackend& backend =
      xattention ? static_cast<model::AttentionBackend&>(*xattention) : dense;
  model::GenerateOptions gen;
  if (c.eos_token_id && !vm.count("no-stop")) gen.stop_token = c.eos_token_id;
  const model::GenerateResult r = model.generate(prompt, n_new, backend, gen);

  std::printf("attention %s\n", xattention ? "xattention" : "dense");
  std::printf("time to first token %.3f s (%.0f prompt tokens/s)\n", r.time_to_first_token,
              double(prompt.size()) / r.time_to_first_token);
  if (r.tokens.size() > 1)
    std::printf("decode %.3f s for %zu tokens\n", r.decode_seconds, r.tokens.size() - 1);
  if (xattention)
    std::printf("mean attention density %.4f (kept / allowed blocks, over layers and heads)\n",
                xattention->mean_density());
  std::cout << "generated ids:";
  for (int64_t t : r.tokens) std::cout << " " << t;
  std::cout << "\n";
  // The folder's tokenizer shows the text; a folder without one (token ids given) shows ids only.
  std::unique_ptr<model::Tokenizer> tokenizer;
  try {
    tokenizer = model::load_tokenizer(dir);
  } catch (const Error&) {
    if (!vm.count("input")) throw;
  }
  if (tokenizer)
    std::cout << "generated text: \"" << model_cli::escape_bytes(tokenizer->decode(r.tokens))
              << "\"\n";

  if (vm.count("nll")) {
    XATTN_CHECK_ARG(prompt.size() >= 2, "--nll needs an input of at least 2 tokens");
    model::ForwardOptions fo;
    fo.nll = true;
    if (xattention) xattention->clear_density();
    const model::ForwardResult f = model.forward(prompt, backend, fo);
    const at::Tensor nll = f.nll.to(at::kDouble);
    const double mean = nll.mean().item<double>();
    std::cout << "position token nll\n";
    for (int64_t i = 0; i < nll.size(0); ++i)
      std::printf("%lld %lld %.5f\n", static_cast<long long>(i + 1),
                  static_cast<long long>(prompt[static_cast<size_t>(i + 1)]), nll[i].item<double>());
    std::printf("mean nll %.5f nats/token (%.4f bits/token) over %lld tokens, forward %.3f s\n",
                mean, mean / std::log(2.0), static_cast<long long>(nll.size(0)), f.seconds);
  }
  return 0;
}

}  // namespace xattn::cli
