// Text machinery of the tokenizers (internal): UTF-8, Unicode general categories, NFC, and the
// small backtracking regex engine that runs the pre-tokenizer split patterns of tokenizer.json.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace xattn::model::text {

// Unicode general categories in the order of unicode_tables.inc (Cn: unassigned).
// clang-format off
enum class Category : uint8_t {
  kCn, kLu, kLl, kLt, kLm, kLo, kMn, kMc, kMe, kNd, kNl, kNo, kPc, kPd, kPs, kPe, kPi, kPf, kPo,
  kSm, kSc, kSk, kSo, kZs, kZl, kZp, kCc, kCf, kCs, kCo
};
// clang-format on

// Code points of UTF-8 text; each invalid byte becomes U+FFFD (as Rust's from_utf8_lossy).
std::vector<char32_t> decode_utf8(const std::string& s);
void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(const std::vector<char32_t>& cps, size_t begin, size_t end);
// True when `s` is well-formed UTF-8 (no stray, overlong or surrogate sequences).
bool is_valid_utf8(const std::string& s);

Category category(char32_t cp);
// The Unicode White_Space property (what \s matches in Oniguruma and Rust's regex).
bool is_white_space(char32_t cp);
// NFC (canonical decomposition, canonical ordering, canonical composition; Hangul by rule).
std::string nfc(const std::string& s);

// One compiled pattern. Supported: literals and escapes (\r \n \t \f \v \0 \xNN \x{...} \uNNNN,
// escaped punctuation), . (any but \n), classes [...] with ranges and negation, \s \S \d \D \w \W
// \p{..} \P{..} \pL (general categories and their one-letter groups), groups ( ), (?: ), (?i: ),
// (?i) at the start, lookahead (?= ) (?! ), alternation |, quantifiers ? * + {n} {n,} {n,m}
// (greedy, or lazy with a trailing ?), anchors ^ $. Case-insensitive matching folds ASCII letters
// (and U+017F to s, U+212A to k). Anything else (possessive quantifiers, lookbehind,
// backreferences, named groups, POSIX classes, quantified empty matches) throws
// std::invalid_argument with the reason; the caller names the field.
class Regex {
 public:
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Leftmost match at or after `from` in cps: {begin, end} or {npos, npos}. Throws xattn::Error
  // (kBadInput) when the search backtracks past a step budget (hostile patterns).
  std::pair<size_t, size_t> find(const std::vector<char32_t>& cps, size_t from) const;

  static constexpr size_t npos = static_cast<size_t>(-1);

 private:
  struct Program;
  std::unique_ptr<Program> program_;
};

}  // namespace xattn::model::text
