// `xattn synth`: write a synthetic capture whose attention has planted structures (sink, local
// band, vertical stripes, diagonal slashes, retrieval, diffuse), labelled synthetic throughout.
#include <boost/program_options.hpp>
#include <iostream>

#include "cli_util.h"
#include "commands.h"
#include "xattn/error.h"
#include "xattn/io/paths.h"
#include "xattn/synthetic.h"

namespace xattn::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "usage: xattn synth --out FILE [--layers N] [--heads-q H] [--heads-kv H] [--head-dim D]\n"
    "                   [--len L] [--batch B] [--seed S] [--dtype float16|bfloat16|float32]\n"
    "                   [--no-v] [--deflate 0-9] [--force]\n\n"
    "Writes a SYNTHETIC capture (docs/capture-format.md): q, k, v built so that exact causal\n"
    "attention shows one planted structure per query head (sink, local band, vertical stripes,\n"
    "diagonal slash, retrieval of an early needle, diffuse) plus a weaker sink. Deterministic in\n"
    "--seed. The file says source = synthetic, model_name = synthetic-structured, and its\n"
    "description lists each head's structure. It stands in for captures of a real model.\n\n";

}  // namespace

int run_synth(const Args& args) {
  runtime::SyntheticOptions o;
  po::options_description options("synth options");
  options.add_options()("help,h", "this help")("out", po::value<std::string>(),
                                               "output capture file (.h5)")(
      "layers", po::value<int64_t>(&o.num_layers)->default_value(o.num_layers), "layers")(
      "heads-q", po::value<int64_t>(&o.heads_q)->default_value(o.heads_q), "query heads")(
      "heads-kv", po::value<int64_t>(&o.heads_kv)->default_value(o.heads_kv),
      "key/value heads (heads-q must be a multiple)")(
      "head-dim", po::value<int64_t>(&o.head_dim)->default_value(o.head_dim),
      "head dimension (even, >= 32)")("len", po::value<int64_t>(&o.len)->default_value(o.len),
                                      "tokens per item (>= 64)")(
      "batch", po::value<int64_t>(&o.batch)->default_value(o.batch), "batch items")(
      "seed", po::value<uint64_t>(&o.seed)->default_value(o.seed), "random seed")(
      "dtype", po::value<std::string>()->default_value("float16"),
      "stored dtype: float16, bfloat16 or float32")("no-v", "do not store v")(
      "deflate", po::value<int>()->default_value(0),
      "gzip level 0-9 (0: uncompressed; any HDF5 reader decompresses); as in xattn capture")(
      "compress", po::value<int>(), "old name of --deflate")(
      "force", "overwrite an existing output file");
  po::variables_map vm;
  if (parse_or_help(args, options, vm, kUsage)) return 0;
  XATTN_CHECK_ARG(vm.count("out"), "--out FILE is required (e.g. --out sample_capture.h5)");
  const std::string out = vm["out"].as<std::string>();
  check_outputs({{"--out", out}}, {}, vm.count("force") > 0);
  o.dtype = io::capture_dtype_from_name(vm["dtype"].as<std::string>());
  o.with_v = !vm.count("no-v");
  io::OutputOptions output;
  output.overwrite = vm.count("force") > 0;
  XATTN_CHECK_ARG(!(vm.count("compress") && !vm["deflate"].defaulted()),
                  "--compress is the old name of --deflate: give only --deflate");
  output.deflate_level = vm.count("compress") ? vm["compress"].as<int>() : vm["deflate"].as<int>();
  XATTN_CHECK_ARG(output.deflate_level >= 0 && output.deflate_level <= 9,
                  "--deflate must lie in 0..9, got ", output.deflate_level);

  runtime::write_synthetic_capture(out, o, output);

  const runtime::SyntheticLayout layout = runtime::synthetic_layout(o);
  const int64_t bytes = io::file_size(out);
  std::cout << "wrote " << out << " (" << std::max<int64_t>(bytes, 0)
            << " bytes): SYNTHETIC capture, " << o.num_layers << " layers, heads_q " << o.heads_q
            << ", heads_kv " << o.heads_kv << ", head_dim " << o.head_dim << ", len " << o.len
            << ", batch " << o.batch << ", " << io::capture_dtype_name(o.dtype)
            << (o.with_v ? ", with v" : "") << ", seed " << o.seed << "\n";
  for (int64_t l = 0; l < o.num_layers; ++l) {
    std::cout << "  layer " << l << ":";
    for (int64_t h = 0; h < o.heads_q; ++h) {
      std::cout << " h" << h << "=" << runtime::structure_name(layout.structure[l][h]);
    }
    std::cout << "\n";
  }
  return 0;
}

}  // namespace xattn::cli
