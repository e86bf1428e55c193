// Passkey prompts; see xattn/model/niah.h.
#include "xattn/model/niah.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "xattn/error.h"
#include "xattn/model/tokenizer.h"
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


Rng prompt_rng(int64_t length, double depth, int64_t sample, uint64_t seed) {
  XATTN_CHECK_ARG(depth >= 0.0 && depth <= 1.0, "needle depth must lie in [0, 1], got ", depth);
  Rng rng{seed ^ (static_cast<uint64_t>(length) * 0x100000001B3ull) ^
          (static_cast<uint64_t>(std::llround(depth * 1e6)) << 20) ^
          (static_cast<uint64_t>(sample) * 0xD6E8FEB86659FD93ull)};
  for (int i = 0; i < 4; ++i) rng.next();
  return rng;
}

// The random parts of a prompt (key, needle, separators, question), drawn in one order for both
// prompt builders; fills p's identity and key.
struct PromptParts {
  std::string needle, before, after, tail;
};

PromptParts draw_prompt_parts(Rng& rng, int64_t length, double depth, int64_t sample,
                              NiahPrompt& p) {
  p.length = length;
  p.depth = depth;
  p.sample = sample;
  p.key = std::to_string(10000 + rng.below(90000));
  PromptParts parts;
  parts.needle = "The pass key is " + p.key + ". Remember it. " + p.key + " is the pass key.";
  parts.before = kSeparators[rng.below(3)];
  parts.after = kSeparators[rng.below(3)];
  parts.tail = std::string(kSeparators[rng.below(3)]) + kPassKeyQuestion;
  return parts;
}

// Token boundary i of `ids` (between ids[i - 1] and ids[i]) follows a sentence end: the text
// before it ends with . ? or ! and whitespace comes next, either at the end of that text or at
// the start of the next token's. Decoded over a few tokens on each side.
bool is_token_sentence_end(const Tokenizer& tok, const std::vector<int64_t>& ids, size_t i) {
  if (i == 0 || i >= ids.size()) return false;
  const size_t from = i >= 4 ? i - 4 : 0;
  const std::string before = tok.decode(std::vector<int64_t>(ids.begin() + long(from),
                                                             ids.begin() + long(i)));
  const std::string with_next = tok.decode(std::vector<int64_t>(ids.begin() + long(from),
                                                                ids.begin() + long(i) + 1));
  auto space = [](char c) { return c == ' ' || c == '\n'; };
  auto end = [](char c) { return c == '.' || c == '?' || c == '!'; };
  if (before.size() >= 2 && space(before.back()) && end(before[before.size() - 2])) return true;
  return !before.empty() && end(before.back()) && with_next.size() > before.size() &&
         with_next.compare(0, before.size(), before) == 0 && space(with_next[before.size()]);
}

}  // namespace

NiahPrompt make_niah_prompt(const std::string& haystack, int64_t length, double depth,
                            int64_t sample, uint64_t seed) {
  Rng rng = prompt_rng(length, depth, sample, seed);
  NiahPrompt p;
  const PromptParts parts = draw_prompt_parts(rng, length, depth, sample, p);
  const std::string& needle = parts.needle;
  const std::string& before = parts.before;
  const std::string& after = parts.after;
  const std::string& tail = parts.tail;
  const int64_t fixed = 1 + static_cast<int64_t>(before.size() + needle.size() + after.size() +
                                                 tail.size());
  const int64_t hay_len = length - fixed;
  XATTN_CHECK_ARG(hay_len >= 16, "prompt length ", length, " is too short: the needle and the "
                  "question alone take ", fixed, " tokens");
  XATTN_CHECK_INPUT(static_cast<int64_t>(haystack.size()) > hay_len, "the haystack text has ",
                    haystack.size(), " bytes; a prompt of ", length, " tokens needs more than ",
                    hay_len, " (use a longer haystack text or shorter prompts)");
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

NiahPrompt make_niah_prompt(const Tokenizer& tok, const std::vector<int64_t>& haystack_ids,
                            int64_t length, double depth, int64_t sample, uint64_t seed) {
  if (tok.byte_level) return make_niah_prompt(byte_decode(haystack_ids), length, depth, sample,
                                              seed);
  Rng rng = prompt_rng(length, depth, sample, seed);
  NiahPrompt p;
  const PromptParts parts = draw_prompt_parts(rng, length, depth, sample, p);
  const std::string& needle = parts.needle;
  const std::string& before = parts.before;
  const std::string& after = parts.after;
  const std::string& tail = parts.tail;
  const std::vector<int64_t> needle_ids = tok.encode(before + needle + after, false);
  const std::vector<int64_t> tail_ids = tok.encode(tail, false);
  const bool bos = tok.add_bos && tok.bos_id.has_value();
  const int64_t fixed = (bos ? 1 : 0) + int64_t(needle_ids.size() + tail_ids.size());
  const int64_t hay_len = length - fixed;
  XATTN_CHECK_ARG(hay_len >= 16, "prompt length ", length, " is too short: the needle and the "
                  "question alone take ", fixed, " tokens");
  XATTN_CHECK_INPUT(int64_t(haystack_ids.size()) > hay_len, "the haystack text has ",
                    haystack_ids.size(), " tokens; a prompt of ", length,
                    " tokens needs more than ", hay_len,
                    " (use a longer haystack text or shorter prompts)");
  const size_t start = size_t(rng.below(haystack_ids.size() - size_t(hay_len)));
  const std::vector<int64_t> hay(haystack_ids.begin() + long(start),
                                 haystack_ids.begin() + long(start) + hay_len);
  // The sentence end nearest to the target token; the window's ends count as boundaries.
  const size_t target = size_t(std::llround(depth * double(hay_len)));
  size_t cut = target;
  if (target > 0 && target < hay.size()) {
    for (size_t delta = 0; delta <= hay.size(); ++delta) {
      if (target >= delta && is_token_sentence_end(tok, hay, target - delta)) {
        cut = target - delta;
        break;
      }
      if (target + delta < hay.size() && is_token_sentence_end(tok, hay, target + delta)) {
        cut = target + delta;
        break;
      }
      if (target < delta && target + delta >= hay.size()) break;
    }
  }
  if (bos) p.tokens.push_back(*tok.bos_id);
  p.tokens.insert(p.tokens.end(), hay.begin(), hay.begin() + long(cut));
  p.needle_start = int64_t(p.tokens.size());
  p.tokens.insert(p.tokens.end(), needle_ids.begin(), needle_ids.end());
  p.tokens.insert(p.tokens.end(), hay.begin() + long(cut), hay.end());
  p.tokens.insert(p.tokens.end(), tail_ids.begin(), tail_ids.end());
  XATTN_CHECK(int64_t(p.tokens.size()) == length, ErrorKind::kInternal, "niah prompt has ",
              p.tokens.size(), " tokens, expected ", length);
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
