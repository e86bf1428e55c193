// `xattn estimate`: antidiagonal scoring + block selection on every layer of a capture, printed as
// a per-layer / per-head density table; the masks can be written to an HDF5 estimate file.
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli_util.h"
#include "commands.h"
#include "xattn/calibrate/statistics.h"
#include "xattn/error.h"
#include "xattn/io/capture.h"
#include "xattn/io/estimate_file.h"
#include "xattn/ops.h"

namespace xattn::cli {
namespace {

namespace po = boost::program_options;

}  // namespace

int run_estimate(const Args& args) {
  po::options_description options(
      "usage: xattn estimate --capture FILE [options]\n\n"
      "Antidiagonal scoring and block selection on every layer of a capture; prints the share of\n"
      "allowed blocks each head keeps.\n\noptions");
  options.add_options()
      ("help,h", "this help")
      ("capture", po::value<std::string>(), "capture file (docs/capture-format.md)")
      ("stride", po::value<int64_t>()->default_value(8), "antidiagonal stride S (divides the block size)")
      ("block-size", po::value<int64_t>()->default_value(128), "block size (64, 128, 256)")
      ("sparse-last-block", "select the last query block like the others (the published method); by default it keeps every block, so the first generated token sees all keys")
      ("selection-rule", po::value<std::string>()->default_value("smallest"),
       "smallest: sink and diagonal plus the fewest blocks reaching tau; published: what the published code keeps (causal: one block more per row; non-causal: no forced blocks), docs/selection-rules.md")
      ("threshold", po::value<std::string>()->default_value("0.9"),
       "tau for every head, or one per query head, comma-separated")
      ("causal", po::value<std::string>()->default_value("auto"), "auto (from the capture), true or false")
      ("scale", po::value<double>(), "scoring scale (default 1/(sqrt(head_dim)*S))")
      ("layers", po::value<std::string>(), "layer indices to process, comma-separated (default all)")
      ("out", po::value<std::string>(), "write block scores and masks to this HDF5 file")
      ("masks-only", "with --out: leave the block scores out (smaller file)")
      ("force", "overwrite an existing --out");
  po::variables_map vm;
  if (parse_or_help(args, options, vm)) return 0;
  XATTN_CHECK_ARG(vm.count("capture"), "give the capture: xattn estimate --capture FILE");
  // Every option before any work (issue 11: --block-size 0 divided by zero).
  runtime::EstimateOptions estimate;
  estimate.stride = vm["stride"].as<int64_t>();
  estimate.block_size = vm["block-size"].as<int64_t>();
  check_block_settings(estimate.stride, estimate.block_size);
  std::vector<double> taus = parse_number_list(vm["threshold"].as<std::string>(), "--threshold");
  check_thresholds(taus, "--threshold");
  const std::string rule = vm["selection-rule"].as<std::string>();
  XATTN_CHECK_ARG(rule == "smallest" || rule == "published", "--selection-rule must be smallest "
                  "or published, got '", rule, "'");
  estimate.selection_rule =
      rule == "published" ? kernels::SelectionRule::kPublished : kernels::SelectionRule::kSmallestSet;
  if (vm.count("scale"))
    XATTN_CHECK_ARG(std::isfinite(vm["scale"].as<double>()) && vm["scale"].as<double>() > 0,
                    "--scale ", vm["scale"].as<double>(), " must be a finite positive number");
  const std::string out_path = vm.count("out") ? vm["out"].as<std::string>() : "";
  check_outputs({{"--out", out_path}}, {{"--capture", vm["capture"].as<std::string>()}},
                vm.count("force") > 0);

  const auto start = std::chrono::steady_clock::now();
  const io::CaptureReader reader(vm["capture"].as<std::string>());
  const io::CaptureInfo& info = reader.info();
  estimate.dense_last_query_block = !vm.count("sparse-last-block");
  const std::string causal = vm["causal"].as<std::string>();
  XATTN_CHECK_ARG(causal == "auto" || causal == "true" || causal == "false",
                  "--causal must be auto, true or false");
  estimate.causal = causal == "auto" ? info.causal : causal == "true";
  // The published code forces no block in non-causal mode.
  if (estimate.selection_rule == kernels::SelectionRule::kPublished && !estimate.causal)
    estimate.keep_sink = estimate.keep_diagonal = false;
  if (vm.count("scale")) estimate.scale = vm["scale"].as<double>();

  if (taus.size() == 1) taus.assign(size_t(info.heads_q), taus[0]);
  XATTN_CHECK_ARG(int64_t(taus.size()) == info.heads_q, "--threshold has ", taus.size(),
                  " values; give one, or one per query head (", info.heads_q, ")");
  const at::Tensor thresholds = at::tensor(std::vector<float>(taus.begin(), taus.end()));

  std::vector<int64_t> layers = reader.layer_indices();
  if (vm.count("layers")) {
    layers.clear();
    for (double x : parse_number_list(vm["layers"].as<std::string>(), "--layers")) {
      XATTN_CHECK_ARG(reader.has_layer(int64_t(x)), "--layers: the capture holds no layer ",
                      int64_t(x));
      layers.push_back(int64_t(x));
    }
  }

  std::unique_ptr<io::EstimateWriter> writer;
  const int64_t nqb = (info.padded_len_q + estimate.block_size - 1) / estimate.block_size;
  const int64_t nkb = (info.padded_len_k + estimate.block_size - 1) / estimate.block_size;
  if (vm.count("out")) {
    io::EstimateFileInfo out_info;
    out_info.source_capture = reader.path();
    out_info.model_name = info.model_name;
    out_info.source = info.source;
    out_info.description = info.description;
    out_info.heads_q = info.heads_q;
    out_info.stride = estimate.stride;
    out_info.block_size = estimate.block_size;
    out_info.causal = estimate.causal;
    out_info.scale = estimate.scale;
    out_info.len_q = info.len_q;
    out_info.len_k = info.len_k;
    out_info.has_block_scores = vm.count("masks-only") == 0;
    out_info.selection_rule = kernels::selection_rule_name(estimate.selection_rule);
    io::OutputOptions output;
    output.overwrite = vm.count("force") > 0;
    writer = std::make_unique<io::EstimateWriter>(vm["out"].as<std::string>(), out_info, output);
  }

  const bool synthetic = info.source == "synthetic";
  std::cout << "capture   " << reader.path() << (synthetic ? "  [SYNTHETIC DATA]" : "") << "\n"
            << "model     " << info.model_name << " (source: " << info.source << ")\n"
            << "shape     batch " << info.batch() << ", heads " << info.heads_q << "/"
            << info.heads_kv << ", head_dim " << info.head_dim << ", len_q up to "
            << info.padded_len_q << ", len_k up to " << info.padded_len_k << "\n"
            << "settings  stride " << estimate.stride << ", block " << estimate.block_size
            << ", " << (estimate.causal ? "causal" : "non-causal") << ", tau "
            << (std::adjacent_find(taus.begin(), taus.end(), std::not_equal_to<>()) == taus.end()
                    ? std::to_string(taus[0]).substr(0, 5)
                    : std::string("per head"))
            << ", selection " << kernels::selection_rule_name(estimate.selection_rule) << "\n\n";
  std::cout << "density (kept / allowed blocks, %)\nlayer ";
  for (int64_t h = 0; h < info.heads_q; ++h) std::cout << std::setw(6) << ("h" + std::to_string(h));
  std::cout << "    mean\n";

  double overall = 0;
  for (int64_t layer : layers) {
    const io::CaptureLayer tensors = reader.read_layer(layer);
    at::Tensor scores_all = at::zeros({info.batch(), info.heads_q, nqb, nkb}, at::kFloat);
    at::Tensor mask_all = at::zeros({info.batch(), info.heads_q, nqb, nkb}, at::kBool);
    at::Tensor kept = at::zeros({info.heads_q}, at::kDouble);
    double allowed_total = 0;
    for (int64_t b = 0; b < info.batch(); ++b) {
      const int64_t lq = info.len_q[b], lk = info.len_k[b];
      const at::Tensor q = tensors.q.slice(0, b, b + 1).slice(2, 0, lq);
      const at::Tensor k = tensors.k.slice(0, b, b + 1).slice(2, 0, lk);
      const at::Tensor scores = runtime::antidiagonal_scores(q, k, estimate);
      auto [mask, count, index] = runtime::select_blocks(scores, thresholds, lq, lk, estimate);
      const int64_t qb = scores.size(2), kb = scores.size(3);
      scores_all.slice(0, b, b + 1).slice(2, 0, qb).slice(3, 0, kb).copy_(scores);
      mask_all.slice(0, b, b + 1).slice(2, 0, qb).slice(3, 0, kb).copy_(mask);
      // Weight each item by its allowed blocks, so the density is over all blocks of the layer.
      const at::Tensor density =
          runtime::head_density(count, lq, lk, estimate.block_size, estimate.causal);
      const double item_allowed =
          calibrate::allowed_blocks(lq, lk, estimate.block_size, estimate.causal);
      kept += density * item_allowed;
      allowed_total += item_allowed;
    }
    const at::Tensor density = kept / allowed_total;
    std::cout << std::setw(5) << layer << " ";
    for (int64_t h = 0; h < info.heads_q; ++h)
      std::cout << std::setw(6) << std::fixed << std::setprecision(1)
                << 100.0 * density[h].item<double>();
    const double mean = density.mean().item<double>();
    overall += mean / double(layers.size());
    std::cout << "  " << std::setw(6) << 100.0 * mean << "\n";
    if (writer) {
      io::EstimateLayer out;
      if (vm.count("masks-only") == 0) out.block_scores = scores_all;
      out.mask = mask_all;
      out.thresholds = thresholds.to(at::kDouble);
      out.density = density;
      writer->write_layer(layer, out);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "\nmean density " << std::setprecision(1) << 100.0 * overall << "% over "
            << layers.size() << " layers; " << std::setprecision(2) << seconds << " s\n";
  if (writer) {
    writer->commit();
    std::cout << "wrote " << vm["out"].as<std::string>() << "\n";
  }
  if (synthetic)
    std::cout << "note: this capture is synthetic (planted structures, not a real model)\n";
  return 0;
}

}  // namespace xattn::cli
