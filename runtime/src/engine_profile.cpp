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
  settings.layer_windows = profile.kernel.layer_windows;  // empty before format 1.5: none
  try {
    settings.scoring_scale = parse_scoring_scale(profile.kernel.scale_rule);
  } catch (const Error& e) {
    XATTN_CHECK_INPUT(false, "the profile's kernel scale rule is not supported: ", e.what());
  }
  return settings;
}

DensityModel density_model_of(const io::Profile& profile) {
  DensityModel model;
  const int64_t layers = profile.model.num_layers, heads = profile.model.heads_q;
  if (!profile.density_fit.empty()) {
    model.reference_len = profile.density_fit.reference_len;
    model.density = profile.density_fit.density;
    model.exponent = profile.density_fit.exponent;
    model.fitted = true;
    return model;
  }
  for (int64_t l = 0; l < layers; ++l) {
    double sum = 0;
    for (int64_t h = 0; h < heads; ++h) sum += profile.predicted_density[size_t(l * heads + h)];
    model.density.push_back(sum / double(heads));
  }
  model.exponent.assign(size_t(layers), 0.0);
  return model;
}

Engine make_engine(const io::Profile& profile, const io::ModelSignature& model,
                   const DensePolicy& policy) {
  io::validate_profile(profile);
  io::check_profile_matches(profile, model);
  const int64_t layers = profile.model.num_layers, heads = profile.model.heads_q;
  const at::Tensor thresholds =
      at::tensor(profile.thresholds, at::TensorOptions().dtype(at::kFloat)).view({layers, heads});
  Engine engine(thresholds, engine_settings_of(profile), policy);
  engine.set_density_model(density_model_of(profile));
  return engine;
}

}  // namespace xattn::runtime
