// A checkpoint folder's signature, and a calibration profile checked against it and turned into a
// runtime::Engine: the model runner's side of runtime::make_engine (xattn/engine_profile.h).
//
//   runtime::Engine engine = model::load_engine("profiles/xattn-byte.h5",
//                                                "examples/models/xattn-byte");
#pragma once

#include <string>

#include "xattn/engine.h"
#include "xattn/io/profile.h"

namespace xattn::model {

// The signature of a checkpoint folder: model type, shapes, and hashes (io::fnv1a64) of
// config.json and of the weight names and shapes (what a profile is checked against before use).
io::ModelSignature model_signature_of(const std::string& model_dir);

// Reads PROFILE_PATH (io::read_profile), checks it against the checkpoint folder MODEL_DIR
// (model_signature_of) and builds the engine (runtime::make_engine). Throws xattn::Error: kIo
// when a file cannot be read, kBadInput when the profile is malformed or belongs to another model
// (every difference listed).
runtime::Engine load_engine(const std::string& profile_path, const std::string& model_dir,
                            const runtime::DensePolicy& policy = {});

}  // namespace xattn::model
