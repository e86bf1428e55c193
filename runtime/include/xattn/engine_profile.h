// A calibration profile (xattn/io/profile.h) turned into a runtime::Engine: the profile is checked
// against the model's signature first (a profile for another model, or for other kernel settings
// than the caller asks for, is refused with every difference listed), then its thresholds
// [layers, heads_q] and kernel settings (block size, stride, scoring scale rule, causal)
// configure the engine. model::load_engine (xattn/model/load_engine.h) does the same from a
// profile file and a checkpoint folder.
#pragma once

#include "xattn/engine.h"
#include "xattn/io/profile.h"

namespace xattn::runtime {

// The engine settings a profile was calibrated with.
EngineSettings engine_settings_of(const io::Profile& profile);

// Each layer's predicted kept density against length: the profile's density fit (format 1.4), or
// for older profiles the mean predicted density of the layer's heads at every length (fitted =
// false, which the dispatch's telemetry says).
DensityModel density_model_of(const io::Profile& profile);

// Checks `profile` against `model` (io::check_profile_matches) and builds the engine, with the
// profile's density model for the cost rule (DensePolicy::cost_table).
Engine make_engine(const io::Profile& profile, const io::ModelSignature& model,
                   const DensePolicy& policy = {});

}  // namespace xattn::runtime
