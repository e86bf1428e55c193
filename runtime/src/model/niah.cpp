// Passkey prompts; see xattn/model/niah.h.
#include "xattn/model/niah.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "xattn/error.h"
#include "xattn/model/tokens.h"

namespace xattn::model {

const char* const kPassKeyQuestion = "What is the pass key? The pass key is ";

namespace {

// splitmix64: a portable, well-mixed generator (std distributions differ between libraries).
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
};

const char* const kSeparators[] = {" ", "\n", "\n\n"};

bool is_sentence_end(const std::string& s, size_t i) {
  // Position i is just after a sentence end: punctuation then whitespace at i - 1.
  if (i < 2 || i > s.size()) return false;
  const char p = s[i - 2], w = s[i - 1];
  return (p == '.' || p == '?' || p == '!') && (w == ' ' || w == '\n');
}

// The sentence boundary closest to `target` inside [0, hay.size()] (the ends count as boundaries).
size_t nearest_sentence_boundary(const std::string& hay, size_t target) {
  if (target == 0 || target >= hay.size()) return std::min(target, hay.size());
  for (size_t delta = 0; delta <= hay.size(); ++delta) {
    if (target >= delta && is_sentence_end(hay, target - delta)) return target - delta;
    if (target + delta <= hay.size() && is_sentence_end(hay, target + delta)) return target + delta;
    if (target < delta && target + delta > hay.size()) break;
  }
  return target;
}

}  // namespace

NiahPrompt make_niah_prompt(const std::string& haystack, int64_t length, double depth,
                            int64_t sample, uint64_t seed) {
  XATTN_CHECK_ARG(depth >= 0.0 && depth <= 1.0, "needle depth must lie in [0, 1], got ", depth);
  Rng rng{seed ^ (static_cast<uint64_t>(length) * 0x100000001B3ull) ^
          (static_cast<uint64_t>(std::llround(depth * 1e6)) << 20) ^
          (static_cast<uint64_t>(sample) * 0xD6E8FEB86659FD93ull)};
  for (int i = 0; i < 4; ++i) rng.next();
  NiahPrompt p;
  p.length = length;
  p.depth = depth;
  p.sample = sample;
  p.key = std::to_string(10000 + rng.below(90000));
  const std::string needle =
      "The pass key is " + p.key + ". Remember it. " + p.key + " is the pass key.";
  const std::string before = kSeparators[rng.below(3)];
  const std::string after = kSeparators[rng.below(3)];
  const std::string tail = std::string(kSeparators[rng.below(3)]) + kPassKeyQuestion;
  const int64_t fixed = 1 + static_cast<int64_t>(before.size() + needle.size() + after.size() +
                                                 tail.size());
  const int64_t hay_len = length - fixed;
  XATTN_CHECK_ARG(hay_len >= 16, "prompt length ", length, " is too short: the needle and the "
                  "question alone take ", fixed, " tokens");
  XATTN_CHECK_INPUT(static_cast<int64_t>(haystack.size()) > hay_len, "the haystack text has ",
                    haystack.size(), " bytes; a prompt of ", length, " tokens needs more than ",
                    hay_len, " (use a longer --haystack or shorter --lengths)");
  const size_t start = static_cast<size_t>(rng.below(haystack.size() - static_cast<size_t>(hay_len)));
  const std::string hay = haystack.substr(start, static_cast<size_t>(hay_len));
  const size_t cut = nearest_sentence_boundary(
      hay, static_cast<size_t>(std::llround(depth * static_cast<double>(hay_len))));
  const std::string body = hay.substr(0, cut) + before + needle + after + hay.substr(cut) + tail;
  p.tokens = byte_encode(body, /*add_bos=*/true);
  p.needle_start = 1 + static_cast<int64_t>(cut + before.size());
  XATTN_CHECK(static_cast<int64_t>(p.tokens.size()) == length, ErrorKind::kInternal,
              "niah prompt has ", p.tokens.size(), " tokens, expected ", length);
  return p;
}

bool passkey_correct(const std::string& generated, const std::string& key) {
  size_t i = 0;
  while (i < generated.size() && generated[i] == ' ') ++i;
  return generated.compare(i, key.size(), key) == 0;
}

int64_t parse_length(const std::string& text) {
  XATTN_CHECK_ARG(!text.empty(), "empty length");
  int64_t unit = 1;
  std::string digits = text;
  const char last = static_cast<char>(std::tolower(static_cast<unsigned char>(text.back())));
  if (last == 'k') unit = 1024;
  if (last == 'm') unit = 1024 * 1024;
  if (unit != 1) digits.pop_back();
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(digits, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  XATTN_CHECK_ARG(used == digits.size() && value > 0, "'", text,
                  "' is not a length (examples: 1000, 4k, 32K)");
  return value * unit;
}

}  // namespace xattn::model
