// Needle-in-a-haystack passkey prompts for byte-level models, in the format the bundled model was
// trained on (scripts/train/data.py):
//   <bos> haystack[..cut] SEP "The pass key is 12345. Remember it. 12345 is the pass key." SEP
//   haystack[cut..] SEP "What is the pass key? The pass key is "
// and the model is expected to continue with the 5 digits. SEP is one of " ", "\n", "\n\n"
// (seeded). The needle goes to the sentence boundary nearest to depth x haystack length.
// Everything is a function of (seed, length, depth, sample): the same prompts on every machine.
// Other models get the same prompt through their tokenizer (the overload taking a Tokenizer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xattn::model {

struct NiahPrompt {
  int64_t length = 0;    // tokens, <bos> included
  double depth = 0.0;    // requested needle depth in [0, 1]
  int64_t sample = 0;
  std::string key;       // the 5 digits
  int64_t needle_start = 0;  // token index where the needle sentence begins
  std::vector<int64_t> tokens;
};

extern const char* const kPassKeyQuestion;  // "What is the pass key? The pass key is "

// One prompt of exactly `length` tokens. Throws when the haystack is too short or length too small.
NiahPrompt make_niah_prompt(const std::string& haystack, int64_t length, double depth,
                            int64_t sample, uint64_t seed);

class Tokenizer;

// The prompt through a model's tokenizer: the haystack given as its token ids (tokenized once by
// the caller), needle and question tokenized as text; the window, the key and the separators are
// drawn as above, lengths count tokens (the tokenizer's BOS included when it adds one), and the
// needle goes to the token boundary after a sentence end nearest to depth x window. For a
// byte-level tokenizer this is exactly the prompt above.
NiahPrompt make_niah_prompt(const Tokenizer& tokenizer, const std::vector<int64_t>& haystack_ids,
                            int64_t length, double depth, int64_t sample, uint64_t seed);

// True when the generated text starts with the key (leading spaces ignored).
bool passkey_correct(const std::string& generated, const std::string& key);

// "1k" -> 1024, "32K" -> 32768, "500" -> 500.
int64_t parse_length(const std::string& text);

}  // namespace xattn::model
