// Profile -> runtime::Engine; see xattn/calibrate/engine_profile.h.
#include "xattn/calibrate/engine_profile.h"

#include <ATen/ATen.h>

#include "xattn/calibrate/calibration.h"
#include "xattn/error.h"

namespace xattn::calibrate {

runtime::EngineSettings engine_settings_of(const Profile& profile) {
  runtime::EngineSettings settings;
  settings.block_size = profile.kernel.block_size;
  settings.stride = profile.kernel.stride;
  settings.causal = profile.kernel.causal;
  settings.dense_last_query_block = profile.kernel.dense_last_query_block;
  try {
    settings.scoring_scale = runtime::parse_scoring_scale(profile.kernel.scale_rule);
  } catch (const Error& e) {
    XATTN_CHECK_INPUT(false, "the profile's kernel scale rule is not supported: ", e.what());
  }
  return settings;
}

runtime::Engine make_engine(const Profile& profile, const ModelSignature& model,
                            const runtime::DensePolicy& policy) {
  validate_profile(profile);
  check_profile_matches(profile, model);
  const int64_t layers = profile.model.num_layers, heads = profile.model.heads_q;
  const at::Tensor thresholds =
      at::tensor(profile.thresholds, at::TensorOptions().dtype(at::kFloat)).view({layers, heads});
  return runtime::Engine(thresholds, engine_settings_of(profile), policy);
}

runtime::Engine load_engine(const std::string& profile_path, const std::string& model_dir,
                            const runtime::DensePolicy& policy) {
  const Profile profile = read_profile(profile_path);
  try {
    return make_engine(profile, model_signature_of(model_dir), policy);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kBadInput) throw;
    throw Error(e.kind(), "profile '" + profile_path + "' cannot be used with model '" + model_dir +
                              "': " + e.what());
  }
}

}  // namespace xattn::calibrate
