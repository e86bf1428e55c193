// A calibration profile turned into a runtime::Engine: the profile is checked against the model's
// signature first (a profile for another model, or for other kernel settings than the caller
// asks for, is refused with every difference listed), then its thresholds [layers, heads_q] and
// kernel settings (block size, stride, scoring scale rule, causal) configure the engine.
#pragma once

#include <string>

#include "xattn/calibrate/profile.h"
#include "xattn/engine.h"

namespace xattn::calibrate {

// The engine settings a profile was calibrated with.
runtime::EngineSettings engine_settings_of(const Profile& profile);

// Checks `profile` against `model` (check_profile_matches) and builds the engine.
runtime::Engine make_engine(const Profile& profile, const ModelSignature& model,
                            const runtime::DensePolicy& policy = {});

// Reads PROFILE_PATH (read_profile) and checks it against the checkpoint folder MODEL_DIR
// (model_signature_of). Throws xattn::Error: kIo when a file cannot be read, kBadInput when the
// profile is malformed or belongs to another model.
runtime::Engine load_engine(const std::string& profile_path, const std::string& model_dir,
                            const runtime::DensePolicy& policy = {});

}  // namespace xattn::calibrate
