// xattn_bench: XAttention kernels against dense attention on one GPU (bf16, batch 1, causal).
//
// In one run, per length: dense scaled_dot_product_attention through LibTorch with the flash and
// the cuDNN backends; our antidiagonal scoring + selection (S = 8 and 16, tau = 0.9); our sparse
// kernel at fixed densities of the allowed blocks (sink and diagonal always kept) with TFLOP/s on
// the blocks it computes; and the whole prefill (score + select + sparse) at tau = 0.9 on
// structured inputs. CUDA events around each call after warm-up; medians. Writes JSON and a
// markdown table.
//
//   xattn_bench [--lengths 8192,16384,...] [--heads-kv 32,8] [--json FILE] [--markdown FILE]
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "xattn/kernels/cuda.h"

namespace {

using xattn::kernels::AttentionParams;
using xattn::kernels::DType;
using xattn::kernels::Problem;
using xattn::kernels::ScoringParams;
using xattn::kernels::SelectionParams;
using xattn::kernels::Sm90ScoringLoads;
using xattn::kernels::TensorView;

constexpr int64_t kHeadsQ = 32, kHeadDim = 128, kBlock = 128;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

cudaStream_t stream() { return at::cuda::getCurrentCUDAStream().stream(); }

// Median milliseconds of `fn` over `iters` timed calls after `warmup` untimed ones.
double time_ms(const std::function<void()>& fn, int warmup, int iters) {
  for (int w = 0; w < warmup; ++w) fn();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  std::vector<double> ms;
  for (int it = 0; it < iters; ++it) {
    check(cudaEventRecord(start, stream()), "record");
    fn();
    check(cudaEventRecord(stop, stream()), "record");
    check(cudaEventSynchronize(stop), "sync");
    float t = 0;
    check(cudaEventElapsedTime(&t, start, stop), "elapsed");
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

TensorView view(const at::Tensor& t) {
  return {t.data_ptr(), DType::kBFloat16, t.stride(0), t.stride(1), t.stride(2)};
}

Problem problem(int64_t len, int64_t heads_kv) {
  Problem p;
  p.batch = 1;
  p.heads_q = kHeadsQ;
  p.heads_kv = heads_kv;
  p.head_dim = kHeadDim;
  p.max_len_q = p.max_len_k = len;
  p.causal = true;
  return p;
}

// Local attention of head-dependent width plus noise: rotary-like waves of the position in every
// pair of dimensions, amplitude 1.25 .. 2 per KV head, so that tau = 0.9 keeps a small share of
// blocks as in real long-context prefill.
at::Tensor structured(int64_t len, int64_t heads, int64_t group, uint64_t seed) {
  at::manual_seed(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  const at::Tensor position = at::arange(len, f32).unsqueeze(1);                       // [L, 1]
  const at::Tensor pair = at::arange(kHeadDim / 2, f32);                               // [D/2]
  const at::Tensor omega = at::pow(10000.0, -2.0 * pair / double(kHeadDim)).unsqueeze(0);
  const at::Tensor angle = position * omega;                                           // [L, D/2]
  const at::Tensor wave = at::stack({at::cos(angle), at::sin(angle)}, -1).reshape({len, kHeadDim});
  const at::Tensor kv_head = at::arange(heads, f32).div(double(group)).floor();
  const at::Tensor amplitude = (1.25 + 0.75 * (kv_head.remainder(4.0) / 3.0)).view({1, heads, 1, 1});
  at::Tensor x = at::randn({1, heads, len, kHeadDim}, f32) + amplitude * wave.view({1, 1, len, kHeadDim});
  return x.to(at::kBFloat16).contiguous();
}

struct Compact {
  at::Tensor count, index;
  double density;    // kept / allowed
  double flop;       // useful FLOP of the kept blocks (diagonal blocks count half)
};

double useful_flop(const at::Tensor& count, int64_t nqb) {
  const double kept = double(count.sum().item<int64_t>());
  const double diagonal = double(count.size(1) * nqb);  // every row keeps its diagonal
  return 4.0 * kHeadDim * kBlock * kBlock * (kept - 0.5 * diagonal);
}

// Random block mask of the given density over the causal blocks, sink and diagonal forced.
Compact fixed_density(int64_t len, double density, uint64_t seed) {
  const int64_t nb = (len + kBlock - 1) / kBlock;
  const auto opts = at::TensorOptions().device(at::kCUDA);
  at::manual_seed(seed);
  const at::Tensor allowed = at::ones({nb, nb}, opts.dtype(at::kBool)).tril();
  at::Tensor keep = (at::rand({1, kHeadsQ, nb, nb}, opts.dtype(at::kFloat)) < density) & allowed;
  keep = keep | at::eye(nb, opts.dtype(at::kBool));
  keep.select(3, 0).fill_(true);
  const at::Tensor count = keep.sum(-1).to(at::kInt).contiguous();
  const at::Tensor position = at::arange(nb, opts.dtype(at::kInt)).expand_as(keep);
  const at::Tensor order = std::get<0>(at::where(keep, position, position + int(nb)).sort(-1));
  const at::Tensor index = at::where(order < int(nb), order, at::full({}, -1, order.options()))
                               .to(at::kInt).contiguous();
  const double allowed_blocks = double(kHeadsQ) * double(nb * (nb + 1) / 2);
  return {count, index, double(count.sum().item<int64_t>()) / allowed_blocks, useful_flop(count, nb)};
}

// XATTN_SCORING_LOADS=gather|auto (default auto: TMA where it can) picks the sm_90a scoring
// kernel's load path, for A/B timings of one build.
Sm90ScoringLoads scoring_loads_from_env() {
  const char* v = std::getenv("XATTN_SCORING_LOADS");
  const std::string value = v ? v : "auto";
  if (value == "gather") return Sm90ScoringLoads::kGather;
  if (value != "auto") throw std::runtime_error("XATTN_SCORING_LOADS must be gather or auto");
  return Sm90ScoringLoads::kAuto;
}

struct Estimator {
  ScoringParams scoring;
  SelectionParams selection;
  at::Tensor scores, thresholds, count, index, workspace;
  size_t workspace_bytes = 0;

  Estimator(const at::Tensor& q, const at::Tensor& k, int stride, float tau) {
    const int64_t len = q.size(2), nb = (len + kBlock - 1) / kBlock;
    const auto opts = q.options();
    scores = at::empty({1, kHeadsQ, nb, nb}, opts.dtype(at::kFloat));
    thresholds = at::full({kHeadsQ}, tau, opts.dtype(at::kFloat));
    count = at::empty({1, kHeadsQ, nb}, opts.dtype(at::kInt));
    index = at::empty({1, kHeadsQ, nb, nb}, opts.dtype(at::kInt));
    scoring.problem = problem(len, k.size(1));
    scoring.q = view(q);
    scoring.k = view(k);
    scoring.stride = stride;
    scoring.block_size = kBlock;
    scoring.scale = float(1.0 / (std::sqrt(double(kHeadDim)) * stride));
    scoring.block_scores = scores.data_ptr<float>();
    scoring.sm90_loads = scoring_loads_from_env();
    workspace_bytes = xattn::kernels::cuda::antidiagonal_scores_workspace_bytes(scoring);
    workspace = at::empty({int64_t(workspace_bytes)}, opts.dtype(at::kByte));
    selection.problem = scoring.problem;
    selection.block_size = kBlock;
    selection.block_scores = scores.data_ptr<float>();
    selection.thresholds = thresholds.data_ptr<float>();
    selection.kv_block_count = count.data_ptr<int32_t>();
    selection.kv_block_index = index.data_ptr<int32_t>();
  }
  void run() {
    check(xattn::kernels::cuda::antidiagonal_scores(scoring, workspace.data_ptr(), workspace_bytes, stream()),
          "scoring");
    check(xattn::kernels::cuda::select_blocks(selection, stream()), "selection");
  }
};

void attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
            const at::Tensor* count, const at::Tensor* index) {
  AttentionParams p;
  p.problem = problem(q.size(2), k.size(1));
  p.q = view(q);
  p.k = view(k);
  p.v = view(v);
  p.scale = float(1.0 / std::sqrt(double(kHeadDim)));
  p.block_size = kBlock;
  p.kv_block_count = count ? count->data_ptr<int32_t>() : nullptr;
  p.kv_block_index = index ? index->data_ptr<int32_t>() : nullptr;
  p.out = {out.data_ptr(), DType::kBFloat16, out.stride(0), out.stride(1), out.stride(2)};
  check(xattn::kernels::cuda::block_sparse_attention(p, stream()), "attention");
}

enum class Backend { kFlash, kCudnn };

double dense_sdpa_ms(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, Backend b,
                     int warmup, int iters, std::string* error) {
  auto& ctx = at::globalContext();
  ctx.setSDPUseMath(false);
  ctx.setSDPUseMemEfficient(false);
  ctx.setSDPUseFlash(b == Backend::kFlash);
  ctx.setSDPUseCuDNN(b == Backend::kCudnn);
  try {
    return time_ms([&] { at::scaled_dot_product_attention(q, k, v, {}, 0.0, true); }, warmup, iters);
  } catch (const std::exception& e) {
    *error = e.what();
    return NAN;
  }
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoll(item));
  return out;
}

std::string fmt(double v, int digits = 2) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> lengths = {8192, 16384, 32768, 65536, 131072};
  std::vector<int64_t> heads_kv_list = {32, 8};
  std::string json_path = "bench_results.json", md_path = "bench_results.md";
  int64_t profile_len = 0;  // --profile-once L: one launch of each kernel, for ncu
  for (int a = 1; a + 1 < argc; a += 2) {
    const std::string key = argv[a], value = argv[a + 1];
    if (key == "--lengths") lengths = parse_list(value);
    else if (key == "--profile-once") profile_len = std::stoll(value);
    else if (key == "--heads-kv") heads_kv_list = parse_list(value);
    else if (key == "--json") json_path = value;
    else if (key == "--markdown") md_path = value;
    else {
      std::fprintf(stderr, "unknown option %s\n", key.c_str());
      return 2;
    }
  }
  try {
    if (profile_len > 0) {
      const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
      const at::Tensor q = at::randn({1, kHeadsQ, profile_len, kHeadDim}, opts);
      const at::Tensor k = at::randn({1, 8, profile_len, kHeadDim}, opts);
      const at::Tensor v = at::randn({1, 8, profile_len, kHeadDim}, opts);
      const at::Tensor out = at::empty_like(q);
      Estimator est(q, k, 8, 0.9f);
      est.run();
      const Compact mask = fixed_density(profile_len, 0.07, 3000);
      attend(q, k, v, out, &mask.count, &mask.index);
      check(cudaDeviceSynchronize(), "profile run");
      return 0;
    }
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "device properties");
    nlohmann::json results;
    results["device"] = prop.name;
    results["config"] = {{"dtype", "bfloat16"}, {"batch", 1},     {"heads_q", kHeadsQ},
                         {"head_dim", kHeadDim}, {"causal", true}, {"block_size", kBlock},
                         {"timing", "CUDA events, median after warm-up"}};
    std::ostringstream md;
    md << "Device: " << prop.name << "; bf16, batch 1, Hq 32, d 128, causal, block 128; median ms.\n\n";
    md << "| L | Hkv | SDPA flash | SDPA cuDNN | score+select S=8 | S=16 | sparse 5% | 10% | 20% | 50% | 100% "
          "| TFLOP/s 5/10/20/50/100% | prefill tau=0.9 (density) | vs cuDNN | vs flash "
          "| estimate S=8 + sparse 7% | vs cuDNN | vs flash | estimate S=16 + sparse 7% | vs cuDNN | vs flash |\n";
    md << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

    for (const int64_t len : lengths) {
      const int warmup = len <= 32768 ? 3 : 1, iters = len <= 32768 ? 10 : 3;
      const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
      const at::Tensor q = at::randn({1, kHeadsQ, len, kHeadDim}, opts);
      const at::Tensor k_full = at::randn({1, kHeadsQ, len, kHeadDim}, opts);
      const at::Tensor v_full = at::randn({1, kHeadsQ, len, kHeadDim}, opts);
      std::string flash_error, cudnn_error;
      // Dense baselines at Hkv = Hq: the same FLOPs as any GQA ratio.
      const double flash = dense_sdpa_ms(q, k_full, v_full, Backend::kFlash, warmup, iters, &flash_error);
      const double cudnn = dense_sdpa_ms(q, k_full, v_full, Backend::kCudnn, warmup, iters, &cudnn_error);
      const double dense_flop = 2.0 * kHeadsQ * double(len) * double(len) * kHeadDim;
      std::printf("L=%lld dense flash %.3f ms (%s TFLOP/s) cuDNN %.3f ms %s %s\n", (long long)len, flash,
                  fmt(dense_flop / flash / 1e9, 0).c_str(), cudnn, flash_error.c_str(), cudnn_error.c_str());
      std::fflush(stdout);

      for (const int64_t heads_kv : heads_kv_list) {
        nlohmann::json row;
        row["len"] = len;
        row["heads_kv"] = heads_kv;
        row["dense_flash_ms"] = flash;
        row["dense_cudnn_ms"] = cudnn;
        row["dense_flash_tflops"] = dense_flop / flash / 1e9;
        row["dense_cudnn_tflops"] = dense_flop / cudnn / 1e9;
        if (!flash_error.empty()) row["dense_flash_error"] = flash_error;
        if (!cudnn_error.empty()) row["dense_cudnn_error"] = cudnn_error;

        const at::Tensor k = k_full.narrow(1, 0, heads_kv).contiguous();
        const at::Tensor v = v_full.narrow(1, 0, heads_kv).contiguous();
        const at::Tensor out = at::empty_like(q);

        // Scoring + selection on random inputs (the cost does not depend on the values).
        double estimate_ms[2];
        for (int s = 0; s < 2; ++s) {
          const std::string tag = s == 0 ? "s8" : "s16";
          Estimator est(q, k, s == 0 ? 8 : 16, 0.9f);
          row["score_only_" + tag + "_ms"] = time_ms(
              [&] {
                check(xattn::kernels::cuda::antidiagonal_scores(est.scoring, est.workspace.data_ptr(),
                                                                est.workspace_bytes, stream()),
                      "scoring");
              },
              warmup, iters);
          estimate_ms[s] = time_ms([&] { est.run(); }, warmup, iters);
          row["score_select_" + tag + "_ms"] = estimate_ms[s];
        }

        // Sparse kernel at fixed densities.
        const double densities[] = {0.05, 0.10, 0.20, 0.50, 1.00};
        std::vector<double> sparse_ms, sparse_tflops;
        nlohmann::json sparse = nlohmann::json::array();
        for (int n = 0; n < 5; ++n) {
          const Compact mask = fixed_density(len, densities[n], 1000 + n);
          const double ms = time_ms([&] { attend(q, k, v, out, &mask.count, &mask.index); }, warmup, iters);
          sparse_ms.push_back(ms);
          sparse_tflops.push_back(mask.flop / ms / 1e9);
          sparse.push_back({{"target_density", densities[n]}, {"density", mask.density}, {"ms", ms},
                            {"tflops", mask.flop / ms / 1e9}});
        }
        row["sparse"] = sparse;
        const double dense_ours = time_ms([&] { attend(q, k, v, out, nullptr, nullptr); }, warmup, iters);
        row["dense_ours_ms"] = dense_ours;
        row["dense_ours_tflops"] = dense_flop / dense_ours / 1e9;
        // Estimate (S = 8 and 16, tau = 0.9) followed by the sparse kernel on a fixed 7 % mask:
        // the end-to-end cost at the density the target assumes.
        {
          const Compact mask = fixed_density(len, 0.07, 2000);
          for (int s = 0; s < 2; ++s) {
            Estimator est(q, k, s == 0 ? 8 : 16, 0.9f);
            const double ms = time_ms(
                [&] {
                  est.run();
                  attend(q, k, v, out, &mask.count, &mask.index);
                },
                warmup, iters);
            const std::string tag = s == 0 ? "s8" : "s16";
            row["prefill_7pct_" + tag + "_ms"] = ms;
            row["prefill_7pct_density"] = mask.density;
            row["prefill_7pct_" + tag + "_speedup_vs_cudnn"] = cudnn / ms;
            row["prefill_7pct_" + tag + "_speedup_vs_flash"] = flash / ms;
          }
        }

        // End-to-end prefill at tau = 0.9, S = 8, on structured inputs.
        const at::Tensor qs = structured(len, kHeadsQ, kHeadsQ / heads_kv, 7);
        const at::Tensor ks = structured(len, heads_kv, 1, 7);
        Estimator est(qs, ks, 8, 0.9f);
        const double prefill = time_ms(
            [&] {
              est.run();
              attend(qs, ks, v, out, &est.count, &est.index);
            },
            warmup, iters);
        const int64_t nb = (len + kBlock - 1) / kBlock;
        const double kept = double(est.count.sum().item<int64_t>());
        const double density = kept / (double(kHeadsQ) * double(nb * (nb + 1) / 2));
        row["prefill_tau09_ms"] = prefill;
        row["prefill_tau09_density"] = density;
        row["prefill_speedup_vs_cudnn"] = cudnn / prefill;
        row["prefill_speedup_vs_flash"] = flash / prefill;
        results["rows"].push_back(row);

        md << "| " << len / 1024 << "K | " << heads_kv << " | " << fmt(flash) << " | " << fmt(cudnn)
           << " | " << fmt(estimate_ms[0]) << " | " << fmt(estimate_ms[1]);
        for (double ms : sparse_ms) md << " | " << fmt(ms);
        md << " | ";
        for (int n = 0; n < 5; ++n) md << (n ? "/" : "") << fmt(sparse_tflops[n], 0);
        md << " | " << fmt(prefill) << " (" << fmt(100 * density, 1) << "%) | " << fmt(cudnn / prefill)
           << "x | " << fmt(flash / prefill) << "x | " << fmt(row["prefill_7pct_s8_ms"].get<double>())
           << " | " << fmt(cudnn / row["prefill_7pct_s8_ms"].get<double>()) << "x | "
           << fmt(flash / row["prefill_7pct_s8_ms"].get<double>()) << "x | "
           << fmt(row["prefill_7pct_s16_ms"].get<double>()) << " | "
           << fmt(cudnn / row["prefill_7pct_s16_ms"].get<double>()) << "x | "
           << fmt(flash / row["prefill_7pct_s16_ms"].get<double>()) << "x |\n";
        std::printf("%s\n", row.dump().c_str());
        std::fflush(stdout);
      }
    }
    std::ofstream(json_path) << results.dump(2) << "\n";
    std::ofstream(md_path) << md.str();
    std::printf("\n%s", md.str().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xattn_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
