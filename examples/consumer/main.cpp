// Uses an installed xattn through find_package(xattn): one XAttention prefill with the plan/run
// engine on random CPU tensors, checked against dense attention at τ = 1; with a profile path as
// argument, also reads the profile (xattn/io/profile.h) and runs its engine, all with
// xattn::runtime alone (no calibration library).
#include <ATen/ATen.h>

#include <cstdio>

#include "xattn/engine.h"
#include "xattn/engine_profile.h"
#include "xattn/error.h"
#include "xattn/io/profile.h"
#include "xattn/ops.h"

namespace {

// The engine of a calibration profile, run once on random tensors of its model's shape.
void run_profile(const char* path) {
  const xattn::io::Profile profile = xattn::io::read_profile(path);
  xattn::runtime::Engine engine = xattn::runtime::make_engine(profile, profile.model);
  const int64_t len = 2 * profile.kernel.block_size, d = profile.model.head_dim;
  const at::Tensor q = at::randn({1, profile.model.heads_q, len, d});
  const at::Tensor k = at::randn({1, profile.model.heads_kv, len, d});
  const at::Tensor v = at::randn({1, profile.model.heads_kv, len, d});
  const xattn::runtime::Plan plan = engine.plan(xattn::runtime::ProblemShape::of(q, k));
  engine.run(plan, profile.model.num_layers - 1, q, k, v);
  std::printf("xattn consumer: profile %s for %s, %lld layers; last layer path %s\n", path,
              profile.model.architecture.c_str(),
              static_cast<long long>(profile.model.num_layers),
              xattn::runtime::to_string(engine.last_run().path));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1) run_profile(argv[1]);
    const int64_t layers = 2, heads_q = 4, heads_kv = 2, len = 512, head_dim = 64;
    at::manual_seed(0);
    // Keys aligned with a shared direction by a random amount, so attention is uneven.
    const at::Tensor direction = at::randn({1, 1, 1, head_dim});
    const at::Tensor q = at::randn({1, heads_q, len, head_dim}) + 3.0 * direction;
    const at::Tensor k =
        at::randn({1, heads_kv, len, head_dim}) + 3.0 * direction * at::rand({1, heads_kv, len, 1});
    const at::Tensor v = at::randn({1, heads_kv, len, head_dim});

    // Layer 0 keeps every block (τ = 1), layer 1 keeps 90 % of the estimated mass.
    at::Tensor thresholds = at::full({layers, heads_q}, 0.9f);
    thresholds[0].fill_(1.0f);
    xattn::runtime::EngineSettings settings;
    settings.block_size = 64;
    xattn::runtime::Engine engine(thresholds, settings);
    const xattn::runtime::Plan plan = engine.plan(xattn::runtime::ProblemShape::of(q, k));

    const at::Tensor dense = std::get<0>(xattn::runtime::dense_attention(q, k, v, true, {}));
    const double error = (engine.run(plan, 0, q, k, v) - dense).abs().max().item<double>();
    engine.run(plan, 1, q, k, v);
    std::printf(
        "xattn consumer: CUDA kernels built in: %s; tau 1 vs dense max error %.2e; "
        "tau 0.9 path %s, density %.3f\n",
        XATTN_CONSUMER_WITH_CUDA, error, xattn::runtime::to_string(engine.last_run().path),
        engine.last_head_density().mean().item<double>());
    return error < 1e-4 ? 0 : 1;
  } catch (const xattn::Error& e) {
    std::fprintf(stderr, "xattn consumer: %s\n", e.what());
    return 1;
  }
}
