// Profile -> runtime::Engine; see xattn/engine_profile.h.
#include "xattn/engine_profile.h"

#include <ATen/ATen.h>

#include "xattn/error.h"

namespace xattn::runtime {

EngineSettings engine_settings_of(const io::Profile& profile) {
  EngineSettings settings;
  settings.block_size = profile.kernel.block_size;
  settings.stride = profile.kernel.stride;
  settings.causal = profile.kernel.causal;
  settings.dense_last_query_block = profile.kernel.dense_last_query_block;
  try {
    settings.scoring_scale = parse_scoring_scale(profile.kernel.scale_rule);
  } catch (const Error& e) {
    XATTN_CHECK_INPUT(false, "the profile's kernel scale rule is not supported: ", e.what());
  }
  return settings;
}

Engine make_engine(const io::Profile& profile, const io::ModelSignature& model,
                   const DensePolicy& policy) {
  io::validate_profile(profile);
  io::check_profile_matches(profile, model);
  const int64_t layers = profile.model.num_layers, heads = profile.model.heads_q;
  const at::Tensor thresholds =
      at::tensor(profile.thresholds, at::TensorOptions().dtype(at::kFloat)).view({layers, heads});
  return Engine(thresholds, engine_settings_of(profile), policy);
}

}  // namespace xattn::runtime
