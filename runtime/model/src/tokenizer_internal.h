// Shared between the tokenizer kinds (internal).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "xattn/model/tokenizer.h"

namespace xattn::model {

// tokenizer_config.json's "bos_token", "eos_token", "add_bos_token" and "add_eos_token" applied
// over what the tokenizer file says; `lookup` turns a token's text into its id.
void apply_tokenizer_config_to(
    Tokenizer& tok, const std::string& config_text, const std::string& source,
    const std::function<std::optional<int64_t>(const std::string&)>& lookup);

}  // namespace xattn::model
