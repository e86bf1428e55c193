// Checkpoint signature and profile -> engine; see xattn/model/load_engine.h.
#include "xattn/model/load_engine.h"

#include <algorithm>
#include <vector>

#include "xattn/engine_profile.h"
#include "xattn/error.h"
#include "xattn/model/config.h"
#include "xattn/model/safetensors.h"
#include "xattn/model/tokens.h"

namespace xattn::model {

io::ModelSignature model_signature_of(const std::string& model_dir) {
  const ModelConfig config = load_model_config(model_dir);
  io::ModelSignature s;
  s.architecture = model_type_name(config.architecture);
  s.num_layers = config.num_layers;
  s.heads_q = config.num_heads;
  s.heads_kv = config.num_kv_heads;
  s.head_dim = config.head_dim;
  s.config_hash = io::fnv1a64(read_text_file(model_dir + "/config.json"));
  const Checkpoint checkpoint(model_dir);
  std::vector<std::string> names = checkpoint.names();
  std::sort(names.begin(), names.end());
  std::string shapes;
  for (const auto& name : names) shapes += name + shape_string(checkpoint.info(name).shape) + "\n";
  s.weight_shapes_hash = io::fnv1a64(shapes);
  return s;
}

runtime::Engine load_engine(const std::string& profile_path, const std::string& model_dir,
                            const runtime::DensePolicy& policy) {
  const io::Profile profile = io::read_profile(profile_path);
  try {
    return runtime::make_engine(profile, model_signature_of(model_dir), policy);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kBadInput) throw;
    throw Error(e.kind(), "profile '" + profile_path + "' cannot be used with model '" + model_dir +
                              "': " + e.what());
  }
}

}  // namespace xattn::model
