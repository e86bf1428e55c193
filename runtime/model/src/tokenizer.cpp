// Hugging Face tokenizer.json (BPE) and the choice of a model folder's tokenizer; see
// xattn/model/tokenizer.h. The pipeline follows the tokenizers library: added tokens are split out
// first (those with "normalized": false on the raw text, the others after normalization), the
// normalizers run on each remaining segment, the pre-tokenizers cut it into words, BPE turns each
// word into ids, and the post-processor's template adds BOS/EOS.
#include "xattn/model/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "tokenizer_internal.h"
#include "tokenizer_text.h"
#include "xattn/error.h"
#include "xattn/model/tokens.h"

namespace xattn::model {

namespace {

using json = nlohmann::json;

constexpr int64_t kMaxTokenId = int64_t(1) << 22;

// ---------------------------------------------------------------------------------------------
// Reading JSON fields with one-line errors naming the file and the field.

struct Fields {
  std::string source;

  [[noreturn]] void refuse(const std::string& field, const std::string& what) const {
    throw Error(ErrorKind::kBadInput, detail::concat(source, ": ", field, ": ", what));
  }
  const json& object(const json& j, const std::string& field) const {
    if (!j.is_object()) refuse(field, "expected an object");
    return j;
  }
  std::string string(const json& j, const char* key, const std::string& field) const {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_string()) refuse(field + "." + key, "missing or not a string");
    return it->get<std::string>();
  }
  std::string string_or(const json& j, const char* key, const std::string& fallback,
                        const std::string& field) const {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_string()) refuse(field + "." + key, "not a string");
    return it->get<std::string>();
  }
  bool boolean_or(const json& j, const char* key, bool fallback, const std::string& field) const {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) refuse(field + "." + key, "not true or false");
    return it->get<bool>();
  }
  int64_t id(const json& j, const std::string& field) const {
    // Real vocabularies hold a few hundred thousand tokens; ids are kept in a dense table.
    if (!j.is_number_integer() || j.get<int64_t>() < 0 || j.get<int64_t>() >= kMaxTokenId)
      refuse(field, detail::concat("not a token id (an integer in [0, ", kMaxTokenId, "))"));
    return j.get<int64_t>();
  }
  std::string type(const json& j, const std::string& field) const {
    object(j, field);
    return string(j, "type", field);
  }
};

std::string shown_bytes(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 32 && c < 127 && c != '\\') {
      out.push_back(char(c));
    } else {
      char code[8];
      std::snprintf(code, sizeof code, "\\x%02X", c);
      out += code;
    }
  }
  if (s.size() > 40) out += "...";
  return out;
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte <-> character map of the ByteLevel pre-tokenizer and decoder: printable bytes
// (33-126, 161-172, 174-255) stand for themselves, the others for U+0100 onwards in byte order.

struct ByteMap {
  std::array<std::string, 256> to_char;
  std::unordered_map<char32_t, uint8_t> to_byte;
  ByteMap() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      const char32_t c = printable ? char32_t(b) : next++;
      text::append_utf8(to_char[size_t(b)], c);
      to_byte[c] = uint8_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// ---------------------------------------------------------------------------------------------
// Normalizers.

struct NormStep {
  enum Kind { kPrepend, kReplace, kReplaceRegex, kNfc, kStrip } kind;
  std::string a, b;  // prepend: a; replace: pattern a -> b
  std::shared_ptr<text::Regex> regex;
  bool left = false, right = false;
};

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t i = 0;
  while (true) {
    const size_t j = s.find(from, i);
    if (j == std::string::npos) break;
    out.append(s, i, j - i);
    out += to;
    i = j + from.size();
  }
  out.append(s, i, std::string::npos);
  return out;
}

std::string replace_regex(const std::string& s, const text::Regex& re, const std::string& to) {
  const std::vector<char32_t> cps = text::decode_utf8(s);
  std::string out;
  size_t i = 0;
  while (i <= cps.size()) {
    const auto m = re.find(cps, i);
    if (m.first == text::Regex::npos) break;
    out += text::encode_utf8(cps, i, m.first);
    out += to;
    if (m.second == m.first) {
      if (m.first < cps.size()) text::append_utf8(out, cps[m.first]);
      i = m.first + 1;
    } else {
      i = m.second;
    }
  }
  if (i < cps.size()) out += text::encode_utf8(cps, i, cps.size());
  return out;
}

std::string normalize(const std::vector<NormStep>& steps, std::string s) {
  for (const NormStep& n : steps) {
    switch (n.kind) {
      case NormStep::kPrepend:
        if (!s.empty()) s = n.a + s;
        break;
      case NormStep::kReplace:
        s = replace_all(s, n.a, n.b);
        break;
      case NormStep::kReplaceRegex:
        s = replace_regex(s, *n.regex, n.b);
        break;
      case NormStep::kNfc:
        s = text::nfc(s);
        break;
      case NormStep::kStrip: {
        const std::vector<char32_t> cps = text::decode_utf8(s);
        size_t b = 0, e = cps.size();
        if (n.left)
          while (b < e && text::is_white_space(cps[b])) ++b;
        if (n.right)
          while (e > b && text::is_white_space(cps[e - 1])) --e;
        s = text::encode_utf8(cps, b, e);
        break;
      }
    }
  }
  return s;
}

// A "pattern" of Replace and Split: {"String": s} or {"Regex": r}.
struct Pattern {
  std::string literal;
  std::shared_ptr<text::Regex> regex;
};

Pattern parse_pattern(const Fields& f, const json& j, const std::string& field) {
  f.object(j, field);
  Pattern p;
  if (j.contains("String") && j["String"].is_string()) {
    p.literal = j["String"].get<std::string>();
    return p;
  }
  if (j.contains("Regex") && j["Regex"].is_string()) {
    try {
      p.regex = std::make_shared<text::Regex>(j["Regex"].get<std::string>());
    } catch (const std::invalid_argument& e) {
      f.refuse(field + ".Regex", detail::concat("unsupported pattern: ", e.what()));
    }
    return p;
  }
  f.refuse(field, "expected {\"String\": ...} or {\"Regex\": ...}");
}

void parse_normalizer(const Fields& f, const json& j, const std::string& field,
                      std::vector<NormStep>& out, int depth) {
  if (j.is_null()) return;
  if (depth > 8) f.refuse(field, "normalizers nested too deep");
  const std::string type = f.type(j, field);
  NormStep n{};
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      f.refuse(field + ".normalizers", "missing or not an array");
    for (size_t i = 0; i < j["normalizers"].size(); ++i)
      parse_normalizer(f, j["normalizers"][i], field + ".normalizers[" + std::to_string(i) + "]",
                       out, depth + 1);
    return;
  } else if (type == "Prepend") {
    n.kind = NormStep::kPrepend;
    n.a = f.string(j, "prepend", field);
  } else if (type == "Replace") {
    if (!j.contains("pattern")) f.refuse(field + ".pattern", "missing");
    const Pattern p = parse_pattern(f, j["pattern"], field + ".pattern");
    n.b = f.string(j, "content", field);
    if (p.regex) {
      n.kind = NormStep::kReplaceRegex;
      n.regex = p.regex;
    } else {
      n.kind = NormStep::kReplace;
      n.a = p.literal;
      if (n.a.empty()) f.refuse(field + ".pattern", "an empty string pattern");
    }
  } else if (type == "NFC") {
    n.kind = NormStep::kNfc;
  } else if (type == "Strip") {
    n.kind = NormStep::kStrip;
    n.left = f.boolean_or(j, "strip_left", false, field);
    n.right = f.boolean_or(j, "strip_right", false, field);
  } else {
    f.refuse(field + ".type", detail::concat("normalizer '", type,
                                             "' is not supported (supported: Sequence, Prepend, "
                                             "Replace, NFC, Strip)"));
  }
  out.push_back(std::move(n));
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers: each turns a list of words into a finer one.

struct Word {
  std::string text;
  bool at_start = false;  // begins at byte 0 of the input (Metaspace's prepend_scheme "first")
};

struct PreStep {
  enum Kind { kSplit, kByteLevel, kMetaspace } kind;
  std::shared_ptr<text::Regex> regex;  // split pattern (ByteLevel: GPT-2's when use_regex)
  std::string literal;                 // split pattern given as a string
  bool remove = false;                 // Split behavior "Removed" (else "Isolated")
  bool add_prefix_space = false;       // ByteLevel
  std::string replacement;             // Metaspace
  enum Prepend { kAlways, kFirst, kNever } prepend = kAlways;
  bool split = true;  // Metaspace
};

constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Cuts `w` at the matches of a pattern; the matches become words ("Isolated") or are dropped
// ("Removed"); the text between them stays as words.
void split_word(const PreStep& s, const Word& w, std::vector<Word>& out) {
  auto emit = [&](std::string t, bool first) {
    if (!t.empty()) out.push_back({std::move(t), w.at_start && first});
  };
  if (!s.regex) {
    size_t i = 0;
    bool first = true;
    while (true) {
      const size_t j = w.text.find(s.literal, i);
      if (j == std::string::npos || s.literal.empty()) break;
      emit(w.text.substr(i, j - i), first && i == 0);
      if (!s.remove) emit(s.literal, j == 0);
      first = false;
      i = j + s.literal.size();
    }
    emit(w.text.substr(i), i == 0);
    return;
  }
  const std::vector<char32_t> cps = text::decode_utf8(w.text);
  size_t i = 0, pos = 0;
  while (pos <= cps.size()) {
    const auto m = s.regex->find(cps, pos);
    if (m.first == text::Regex::npos) break;
    if (m.second == m.first) {  // empty matches split nothing
      pos = m.first + 1;
      continue;
    }
    emit(text::encode_utf8(cps, i, m.first), i == 0);
    if (!s.remove) emit(text::encode_utf8(cps, m.first, m.second), m.first == 0);
    i = pos = m.second;
  }
  emit(text::encode_utf8(cps, i, cps.size()), i == 0);
}

void pre_tokenize_step(const PreStep& s, std::vector<Word>& words) {
  std::vector<Word> out;
  for (Word& w : words) {
    switch (s.kind) {
      case PreStep::kSplit:
        split_word(s, w, out);
        break;
      case PreStep::kByteLevel: {
        if (s.add_prefix_space && w.text[0] != ' ') w.text = " " + w.text;
        std::vector<Word> parts;
        if (s.regex) {
          split_word(s, w, parts);
        } else {
          parts.push_back(w);
        }
        const ByteMap& map = byte_map();
        for (Word& p : parts) {
          std::string mapped;
          for (unsigned char c : p.text) mapped += map.to_char[c];
          out.push_back({std::move(mapped), p.at_start});
        }
        break;
      }
      case PreStep::kMetaspace: {
        std::string t = replace_all(w.text, " ", s.replacement);
        const bool prepend =
            s.prepend == PreStep::kAlways || (s.prepend == PreStep::kFirst && w.at_start);
        if (prepend && t.compare(0, s.replacement.size(), s.replacement) != 0)
          t = s.replacement + t;
        if (!s.split) {
          out.push_back({std::move(t), w.at_start});
          break;
        }
        // Each replacement character starts a new word.
        size_t start = 0;
        while (start < t.size()) {
          size_t next = t.find(s.replacement, start + 1);
          if (next == std::string::npos) next = t.size();
          out.push_back({t.substr(start, next - start), w.at_start && start == 0});
          start = next;
        }
        break;
      }
    }
  }
  words = std::move(out);
}

PreStep::Prepend parse_prepend_scheme(const Fields& f, const json& j, const std::string& field) {
  const std::string scheme = f.string_or(j, "prepend_scheme", "", field);
  if (scheme.empty())
    return f.boolean_or(j, "add_prefix_space", true, field) ? PreStep::kAlways : PreStep::kNever;
  if (scheme == "always") return PreStep::kAlways;
  if (scheme == "first") return PreStep::kFirst;
  if (scheme == "never") return PreStep::kNever;
  f.refuse(field + ".prepend_scheme", "'" + scheme + "' (expected always, first or never)");
}

std::string metaspace_replacement(const Fields& f, const json& j, const std::string& field) {
  const std::string r = f.string_or(j, "replacement", "\xE2\x96\x81", field);
  if (text::decode_utf8(r).size() != 1) f.refuse(field + ".replacement", "not one character");
  return r;
}

void parse_pre_tokenizer(const Fields& f, const json& j, const std::string& field,
                         std::vector<PreStep>& out, int depth) {
  if (j.is_null()) return;
  if (depth > 8) f.refuse(field, "pre-tokenizers nested too deep");
  const std::string type = f.type(j, field);
  PreStep s{};
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      f.refuse(field + ".pretokenizers", "missing or not an array");
    for (size_t i = 0; i < j["pretokenizers"].size(); ++i)
      parse_pre_tokenizer(f, j["pretokenizers"][i],
                          field + ".pretokenizers[" + std::to_string(i) + "]", out, depth + 1);
    return;
  } else if (type == "Split") {
    s.kind = PreStep::kSplit;
    if (!j.contains("pattern")) f.refuse(field + ".pattern", "missing");
    const Pattern p = parse_pattern(f, j["pattern"], field + ".pattern");
    s.regex = p.regex;
    s.literal = p.literal;
    if (!s.regex && s.literal.empty()) f.refuse(field + ".pattern", "an empty string pattern");
    const std::string behavior = f.string(j, "behavior", field);
    if (behavior == "Removed") {
      s.remove = true;
    } else if (behavior != "Isolated") {
      f.refuse(field + ".behavior",
               detail::concat("'", behavior, "' is not supported (Isolated, Removed)"));
    }
    if (f.boolean_or(j, "invert", false, field))
      f.refuse(field + ".invert", "true is not supported");
  } else if (type == "ByteLevel") {
    s.kind = PreStep::kByteLevel;
    s.add_prefix_space = f.boolean_or(j, "add_prefix_space", true, field);
    if (f.boolean_or(j, "use_regex", true, field))
      s.regex = std::make_shared<text::Regex>(kGpt2Pattern);
  } else if (type == "Metaspace") {
    s.kind = PreStep::kMetaspace;
    s.replacement = metaspace_replacement(f, j, field);
    s.prepend = parse_prepend_scheme(f, j, field);
    s.split = f.boolean_or(j, "split", true, field);
  } else {
    f.refuse(field + ".type", detail::concat("pre-tokenizer '", type,
                                             "' is not supported (supported: Sequence, Split, "
                                             "ByteLevel, Metaspace)"));
  }
  out.push_back(std::move(s));
}

// ---------------------------------------------------------------------------------------------
// Decoders: token strings -> text, applied in order as in the tokenizers library.

struct DecodeStep {
  enum Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip } kind;
  std::string a, b;               // replace a -> b; metaspace replacement a; strip content a
  bool strip_first_space = true;  // Metaspace: prepend_scheme other than never
  int64_t start = 0, stop = 0;    // Strip
};

// "<0xNN>" -> NN, else -1.
int byte_token_value(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    const char h = t[size_t(k)];
    int d = -1;
    if (h >= '0' && h <= '9') d = h - '0';
    if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

// Bytes as text; invalid UTF-8 becomes U+FFFD per bad byte.
std::string lossy_utf8(const std::string& bytes) {
  return text::encode_utf8(text::decode_utf8(bytes), 0, text::decode_utf8(bytes).size());
}

void decode_step(const DecodeStep& d, std::vector<std::string>& tokens) {
  switch (d.kind) {
    case DecodeStep::kByteLevel: {
      std::string bytes;
      for (const std::string& t : tokens) {
        for (char32_t c : text::decode_utf8(t)) {
          const auto it = byte_map().to_byte.find(c);
          if (it != byte_map().to_byte.end()) {
            bytes.push_back(char(it->second));
          } else {
            text::append_utf8(bytes, c);
          }
        }
      }
      tokens = {lossy_utf8(bytes)};
      break;
    }
    case DecodeStep::kMetaspace:
      for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = replace_all(tokens[i], d.a, " ");
        if (i == 0 && d.strip_first_space && !tokens[i].empty() && tokens[i][0] == ' ')
          tokens[i].erase(0, 1);
      }
      break;
    case DecodeStep::kReplace:
      for (std::string& t : tokens) t = replace_all(t, d.a, d.b);
      break;
    case DecodeStep::kByteFallback: {
      std::vector<std::string> out;
      std::string pending;
      bool have = false;
      auto flush = [&] {
        if (!have) return;
        if (text::is_valid_utf8(pending)) {
          out.push_back(pending);
        } else {
          for (size_t k = 0; k < pending.size(); ++k) out.push_back("\xEF\xBF\xBD");
        }
        pending.clear();
        have = false;
      };
      for (const std::string& t : tokens) {
        const int v = byte_token_value(t);
        if (v >= 0) {
          pending.push_back(char(v));
          have = true;
        } else {
          flush();
          out.push_back(t);
        }
      }
      flush();
      tokens = std::move(out);
      break;
    }
    case DecodeStep::kFuse: {
      std::string all;
      for (const std::string& t : tokens) all += t;
      tokens = {all};
      break;
    }
    case DecodeStep::kStrip:
      for (std::string& t : tokens) {
        std::vector<char32_t> cps = text::decode_utf8(t);
        const std::vector<char32_t> content = text::decode_utf8(d.a);
        if (content.size() != 1) break;
        size_t b = 0, e = cps.size();
        for (int64_t k = 0; k < d.start && b < e && cps[b] == content[0]; ++k) ++b;
        for (int64_t k = 0; k < d.stop && e > b && cps[e - 1] == content[0]; ++k) --e;
        t = text::encode_utf8(cps, b, e);
      }
      break;
  }
}

void parse_decoder(const Fields& f, const json& j, const std::string& field,
                   std::vector<DecodeStep>& out, int depth) {
  if (j.is_null()) return;
  if (depth > 8) f.refuse(field, "decoders nested too deep");
  const std::string type = f.type(j, field);
  DecodeStep d{};
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array())
      f.refuse(field + ".decoders", "missing or not an array");
    for (size_t i = 0; i < j["decoders"].size(); ++i)
      parse_decoder(f, j["decoders"][i], field + ".decoders[" + std::to_string(i) + "]", out,
                    depth + 1);
    return;
  } else if (type == "ByteLevel") {
    d.kind = DecodeStep::kByteLevel;
  } else if (type == "Metaspace") {
    d.kind = DecodeStep::kMetaspace;
    d.a = metaspace_replacement(f, j, field);
    d.strip_first_space = parse_prepend_scheme(f, j, field) != PreStep::kNever;
  } else if (type == "Replace") {
    d.kind = DecodeStep::kReplace;
    if (!j.contains("pattern")) f.refuse(field + ".pattern", "missing");
    const Pattern p = parse_pattern(f, j["pattern"], field + ".pattern");
    if (p.regex || p.literal.empty())
      f.refuse(field + ".pattern", "only a non-empty String pattern is supported in decoders");
    d.a = p.literal;
    d.b = f.string(j, "content", field);
  } else if (type == "ByteFallback") {
    d.kind = DecodeStep::kByteFallback;
  } else if (type == "Fuse") {
    d.kind = DecodeStep::kFuse;
  } else if (type == "Strip") {
    d.kind = DecodeStep::kStrip;
    d.a = f.string(j, "content", field);
    if (text::decode_utf8(d.a).size() != 1) f.refuse(field + ".content", "not one character");
    const auto count = [&](const char* key) {
      const auto it = j.find(key);
      if (it == j.end()) return int64_t(0);
      if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 1000000)
        f.refuse(field + "." + key, "not a small non-negative integer");
      return it->get<int64_t>();
    };
    d.start = count("start");
    d.stop = count("stop");
  } else {
    f.refuse(field + ".type", detail::concat("decoder '", type,
                                             "' is not supported (supported: Sequence, "
                                             "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, "
                                             "Strip)"));
  }
  out.push_back(std::move(d));
}

// ---------------------------------------------------------------------------------------------
// The BPE model.

struct Bpe {
  std::unordered_map<std::string, int64_t> vocab;
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int64_t>> merges;
  std::optional<int64_t> unk;
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;
  std::array<int64_t, 256> byte_ids{};

  static uint64_t key(int64_t a, int64_t b) { return (uint64_t(a) << 32) | uint64_t(b); }

  struct Symbol {
    int64_t id;
    int prev, next;
    bool alive;
  };

  void encode(const std::string& word, std::vector<int64_t>& out) const {
    if (ignore_merges) {
      const auto it = vocab.find(word);
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<Symbol> sym;
    const std::vector<char32_t> cps = text::decode_utf8(word);
    std::string ch;
    bool last_unk = false;
    for (char32_t c : cps) {
      ch.clear();
      text::append_utf8(ch, c);
      const auto it = vocab.find(ch);
      if (it != vocab.end()) {
        sym.push_back({it->second, 0, 0, true});
        last_unk = false;
        continue;
      }
      if (byte_fallback && std::all_of(ch.begin(), ch.end(), [&](char b) {
            return byte_ids[static_cast<unsigned char>(b)] >= 0;
          })) {
        for (char b : ch) sym.push_back({byte_ids[static_cast<unsigned char>(b)], 0, 0, true});
        last_unk = false;
        continue;
      }
      if (!unk) continue;  // no unknown token: the character is dropped, as in tokenizers
      if (!(fuse_unk && last_unk)) sym.push_back({*unk, 0, 0, true});
      last_unk = true;
    }
    const int n = int(sym.size());
    for (int i = 0; i < n; ++i) {
      sym[size_t(i)].prev = i - 1;
      sym[size_t(i)].next = i + 1 < n ? i + 1 : -1;
    }
    // Lowest rank first, leftmost among equal ranks.
    struct Candidate {
      int32_t rank;
      int pos;
      int64_t merged;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    auto consider = [&](int pos) {
      if (pos < 0 || sym[size_t(pos)].next < 0) return;
      const auto it = merges.find(key(sym[size_t(pos)].id, sym[size_t(sym[size_t(pos)].next)].id));
      if (it != merges.end()) queue.push({it->second.first, pos, it->second.second});
    };
    for (int i = 0; i + 1 < n; ++i) consider(i);
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = sym[size_t(top.pos)];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = sym[size_t(left.next)];
      const auto it = merges.find(key(left.id, right.id));
      if (it == merges.end() || it->second.second != top.merged) continue;
      left.id = top.merged;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) sym[size_t(right.next)].prev = top.pos;
      consider(left.prev);
      consider(top.pos);
    }
    for (const Symbol& s : sym)
      if (s.alive) out.push_back(s.id);
  }
};

Bpe parse_bpe(const Fields& f, const json& m) {
  Bpe bpe;
  if (f.string_or(m, "type", "BPE", "model") != "BPE")
    f.refuse("model.type", detail::concat("'", m["type"].get<std::string>(),
                                          "' is not supported (supported: BPE; SentencePiece "
                                          "unigram models load from tokenizer.model)"));
  if (m.contains("dropout") && !m["dropout"].is_null() &&
      !(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0))
    f.refuse("model.dropout", "BPE dropout is not supported (use null)");
  if (!f.string_or(m, "continuing_subword_prefix", "", "model").empty())
    f.refuse("model.continuing_subword_prefix", "not supported (use null)");
  if (!f.string_or(m, "end_of_word_suffix", "", "model").empty())
    f.refuse("model.end_of_word_suffix", "not supported (use null)");
  bpe.byte_fallback = f.boolean_or(m, "byte_fallback", false, "model");
  bpe.fuse_unk = f.boolean_or(m, "fuse_unk", false, "model");
  bpe.ignore_merges = f.boolean_or(m, "ignore_merges", false, "model");
  if (!m.contains("vocab") || !m["vocab"].is_object())
    f.refuse("model.vocab", "missing or not an object of token -> id");
  for (const auto& [token, id] : m["vocab"].items())
    bpe.vocab[token] = f.id(id, "model.vocab[\"" + shown_bytes(token) + "\"]");
  const std::string unk = f.string_or(m, "unk_token", "", "model");
  if (!unk.empty()) {
    const auto it = bpe.vocab.find(unk);
    if (it == bpe.vocab.end())
      f.refuse("model.unk_token", "'" + shown_bytes(unk) + "' is not in the vocabulary");
    bpe.unk = it->second;
  }
  bpe.byte_ids.fill(-1);
  if (bpe.byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      const auto it = bpe.vocab.find(name);
      if (it != bpe.vocab.end()) bpe.byte_ids[size_t(b)] = it->second;
    }
  }
  if (!m.contains("merges") || !m["merges"].is_array())
    f.refuse("model.merges", "missing or not an array");
  const json& merges = m["merges"];
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string field = "model.merges[" + std::to_string(i) + "]";
    std::string a, b;
    if (merges[i].is_string()) {
      const std::string s = merges[i].get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        f.refuse(field, "expected \"left right\" (two tokens separated by one space)");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (merges[i].is_array() && merges[i].size() == 2 && merges[i][0].is_string() &&
               merges[i][1].is_string()) {
      a = merges[i][0].get<std::string>();
      b = merges[i][1].get<std::string>();
    } else {
      f.refuse(field, "expected \"left right\" or [\"left\", \"right\"]");
    }
    const auto ia = bpe.vocab.find(a), ib = bpe.vocab.find(b), im = bpe.vocab.find(a + b);
    if (ia == bpe.vocab.end() || ib == bpe.vocab.end() || im == bpe.vocab.end())
      f.refuse(field, detail::concat("'", shown_bytes(a), "' + '", shown_bytes(b),
                                     "': a part or the merged token is not in the vocabulary"));
    bpe.merges.emplace(Bpe::key(ia->second, ib->second),
                       std::make_pair(int32_t(std::min<size_t>(i, INT32_MAX)), im->second));
  }
  return bpe;
}

// ---------------------------------------------------------------------------------------------
// The tokenizer.json tokenizer.

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false;
  bool normalized = false;
  bool lstrip = false, rstrip = false;
};

// A piece of input: text still to tokenize, or an added token already recognised.
struct Segment {
  std::string text;
  int64_t id = -1;  // >= 0: an added token
  bool at_start = false;
};

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(std::vector<AddedToken> added, std::vector<NormStep> norm, std::vector<PreStep> pre,
              Bpe bpe, std::vector<DecodeStep> dec, std::string kind)
      : added_(std::move(added)),
        norm_(std::move(norm)),
        pre_(std::move(pre)),
        bpe_(std::move(bpe)),
        dec_(std::move(dec)),
        kind_(std::move(kind)) {
    for (const auto& [token, id] : bpe_.vocab) {
      if (size_t(id) >= id_to_token_.size()) id_to_token_.resize(size_t(id) + 1);
      id_to_token_[size_t(id)] = token;
    }
    for (const AddedToken& a : added_) {
      if (size_t(a.id) >= id_to_token_.size()) id_to_token_.resize(size_t(a.id) + 1);
      id_to_token_[size_t(a.id)] = a.content;
      if (a.special) special_ids_.push_back(a.id);
    }
    std::sort(special_ids_.begin(), special_ids_.end());
  }

  std::vector<int64_t> encode(const std::string& input, bool add_special) const override {
    std::vector<int64_t> ids;
    if (add_special) ids = prefix;
    std::vector<Segment> raw = split_added({{input, -1, true}}, /*normalized=*/false);
    for (const Segment& s : raw) {
      if (s.id >= 0) {
        ids.push_back(s.id);
        continue;
      }
      const std::vector<Segment> parts =
          split_added({{normalize(norm_, s.text), -1, s.at_start}}, /*normalized=*/true);
      for (const Segment& p : parts) {
        if (p.id >= 0) {
          ids.push_back(p.id);
          continue;
        }
        if (p.text.empty()) continue;
        std::vector<Word> words{{p.text, p.at_start}};
        for (const PreStep& step : pre_) pre_tokenize_step(step, words);
        for (const Word& w : words)
          if (!w.text.empty()) bpe_.encode(w.text, ids);
      }
    }
    if (add_special) ids.insert(ids.end(), suffix.begin(), suffix.end());
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<std::string> tokens;
    for (int64_t id : ids) {
      if (id < 0 || size_t(id) >= id_to_token_.size() || id_to_token_[size_t(id)].empty()) continue;
      if (std::binary_search(special_ids_.begin(), special_ids_.end(), id)) continue;
      tokens.push_back(id_to_token_[size_t(id)]);
    }
    for (const DecodeStep& d : dec_) decode_step(d, tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }

  int64_t vocab_size() const override { return int64_t(id_to_token_.size()); }
  std::string describe() const override {
    return detail::concat("tokenizer.json ", kind_, ", ", vocab_size(), " tokens");
  }

  std::optional<int64_t> token_id(const std::string& token) const {
    for (const AddedToken& a : added_)
      if (a.content == token) return a.id;
    const auto it = bpe_.vocab.find(token);
    if (it != bpe_.vocab.end()) return it->second;
    return std::nullopt;
  }

  bool known(int64_t id) const {
    return id >= 0 && size_t(id) < id_to_token_.size() && !id_to_token_[size_t(id)].empty();
  }

  std::vector<int64_t> prefix, suffix;  // what add_special puts around the ids

 private:
  // Splits text segments at the added tokens whose "normalized" flag equals `normalized`:
  // leftmost match first, the longest token at that position.
  std::vector<Segment> split_added(std::vector<Segment> in, bool normalized) const {
    std::vector<const AddedToken*> tokens;
    for (const AddedToken& a : added_)
      if (a.normalized == normalized) tokens.push_back(&a);
    if (tokens.empty()) return in;
    std::array<bool, 256> first{};
    for (const AddedToken* a : tokens) first[static_cast<unsigned char>(a->content[0])] = true;
    std::vector<Segment> out;
    for (Segment& seg : in) {
      if (seg.id >= 0) {
        out.push_back(std::move(seg));
        continue;
      }
      const std::string& t = seg.text;
      size_t from = 0;  // start of the text not yet emitted
      size_t i = 0;
      while (i < t.size()) {
        if (!first[static_cast<unsigned char>(t[i])]) {
          ++i;
          continue;
        }
        const AddedToken* best = nullptr;
        for (const AddedToken* a : tokens)
          if (a->content.size() > (best ? best->content.size() : 0) &&
              t.compare(i, a->content.size(), a->content) == 0)
            best = a;
        if (!best) {
          ++i;
          continue;
        }
        size_t begin = i, end = i + best->content.size();
        if (best->lstrip)
          while (begin > from && std::isspace(static_cast<unsigned char>(t[begin - 1]))) --begin;
        if (best->rstrip)
          while (end < t.size() && std::isspace(static_cast<unsigned char>(t[end]))) ++end;
        if (begin > from)
          out.push_back({t.substr(from, begin - from), -1, seg.at_start && from == 0});
        out.push_back({"", best->id, false});
        from = i = end;
      }
      if (from < t.size()) out.push_back({t.substr(from), -1, seg.at_start && from == 0});
    }
    return out;
  }

  std::vector<AddedToken> added_;
  std::vector<NormStep> norm_;
  std::vector<PreStep> pre_;
  Bpe bpe_;
  std::vector<DecodeStep> dec_;
  std::string kind_;
  std::vector<std::string> id_to_token_;
  std::vector<int64_t> special_ids_;
};

// The special tokens a post-processor puts before and after a single sequence.
void parse_post_processor(const Fields& f, const json& j, const std::string& field,
                          const HfTokenizer& tok, std::vector<int64_t>& prefix,
                          std::vector<int64_t>& suffix, int depth) {
  if (j.is_null()) return;
  if (depth > 8) f.refuse(field, "post-processors nested too deep");
  const std::string type = f.type(j, field);
  auto token_ref = [&](const json& pair, const std::string& where) {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string())
      f.refuse(where, "expected [\"token\", id]");
    return f.id(pair[1], where + "[1]");
  };
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      f.refuse(field + ".processors", "missing or not an array");
    for (size_t i = 0; i < j["processors"].size(); ++i)
      parse_post_processor(f, j["processors"][i], field + ".processors[" + std::to_string(i) + "]",
                           tok, prefix, suffix, depth + 1);
  } else if (type == "ByteLevel") {
    // Offsets only.
  } else if (type == "TemplateProcessing") {
    if (!j.contains("single") || !j["single"].is_array())
      f.refuse(field + ".single", "missing or not an array");
    const json* specials = j.contains("special_tokens") ? &j["special_tokens"] : nullptr;
    bool seen_sequence = false;
    for (size_t i = 0; i < j["single"].size(); ++i) {
      const json& item = j["single"][i];
      const std::string where = field + ".single[" + std::to_string(i) + "]";
      if (item.is_object() && item.contains("Sequence")) {
        if (seen_sequence) f.refuse(where, "a second sequence in a single template");
        seen_sequence = true;
        continue;
      }
      if (!item.is_object() || !item.contains("SpecialToken") || !item["SpecialToken"].is_object())
        f.refuse(where, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      const std::string name = f.string(item["SpecialToken"], "id", where + ".SpecialToken");
      std::vector<int64_t> ids;
      if (specials && specials->is_object() && specials->contains(name) &&
          (*specials)[name].is_object() && (*specials)[name].contains("ids") &&
          (*specials)[name]["ids"].is_array()) {
        for (const json& id : (*specials)[name]["ids"])
          ids.push_back(f.id(id, field + ".special_tokens." + shown_bytes(name) + ".ids"));
      } else if (const auto id = tok.token_id(name)) {
        ids.push_back(*id);
      } else {
        f.refuse(where, "special token '" + shown_bytes(name) + "' has no id");
      }
      auto& dst = seen_sequence ? suffix : prefix;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    if (!seen_sequence) f.refuse(field + ".single", "no {\"Sequence\": ...} item");
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    if (!j.contains("cls") || !j.contains("sep")) f.refuse(field, "missing cls or sep");
    prefix.push_back(token_ref(j["cls"], field + ".cls"));
    suffix.push_back(token_ref(j["sep"], field + ".sep"));
  } else {
    f.refuse(field + ".type", detail::concat("post-processor '", type,
                                             "' is not supported (supported: Sequence, "
                                             "ByteLevel, TemplateProcessing, RobertaProcessing, "
                                             "BertProcessing)"));
  }
}

// "bos_token" in tokenizer_config.json: a string, {"content": ...}, or null.
std::optional<std::string> config_token(const Fields& f, const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  f.refuse(key, "expected a string, {\"content\": ...} or null");
}

json parse_json(const std::string& text, const std::string& source, const char* what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  XATTN_CHECK_INPUT(!j.is_discarded(), source, ": not valid JSON (", what, ")");
  return j;
}

// BOS/EOS from tokenizer_config.json, applied over what the tokenizer file says.
void apply_tokenizer_config(Tokenizer& tok, const std::string& config_text,
                            const std::string& source,
                            const std::function<std::optional<int64_t>(const std::string&)>& lookup,
                            std::vector<int64_t>* prefix, std::vector<int64_t>* suffix) {
  if (config_text.empty()) return;
  const json config = parse_json(config_text, source, "tokenizer_config.json");
  const Fields f{source};
  f.object(config, "(top level)");
  for (const char* key : {"bos_token", "eos_token"}) {
    const auto name = config_token(f, config, key);
    if (!name) continue;
    const std::optional<int64_t> id = lookup(*name);
    if (!id) f.refuse(key, "'" + shown_bytes(*name) + "' is not a token of the tokenizer");
    (std::string(key) == "bos_token" ? tok.bos_id : tok.eos_id) = id;
  }
  if (config.contains("add_bos_token")) {
    tok.add_bos = f.boolean_or(config, "add_bos_token", false, "(top level)");
    if (tok.add_bos && !tok.bos_id) f.refuse("add_bos_token", "true but there is no bos_token");
    if (prefix) *prefix = tok.add_bos ? std::vector<int64_t>{*tok.bos_id} : std::vector<int64_t>{};
  }
  if (config.contains("add_eos_token")) {
    tok.add_eos = f.boolean_or(config, "add_eos_token", false, "(top level)");
    if (tok.add_eos && !tok.eos_id) f.refuse("add_eos_token", "true but there is no eos_token");
    if (suffix) *suffix = tok.add_eos ? std::vector<int64_t>{*tok.eos_id} : std::vector<int64_t>{};
  }
}

class ByteTokenizer final : public Tokenizer {
 public:
  ByteTokenizer() {
    bos_id = kByteBos;
    eos_id = kByteEos;
    add_bos = true;
    byte_level = true;
  }
  std::vector<int64_t> encode(const std::string& t, bool add_special) const override {
    return byte_encode(t, add_special);
  }
  std::string decode(const std::vector<int64_t>& ids) const override { return byte_decode(ids); }
  int64_t vocab_size() const override { return 259; }
  std::string describe() const override { return "byte-level (xattn_byte_level)"; }
};

bool file_exists(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return in.good();
}

std::string read_if_exists(const std::string& path) {
  return file_exists(path) ? read_text_file(path) : std::string();
}

// An id from config.json / generation_config.json: an integer, or the first of a list.
std::optional<int64_t> json_id(const std::string& text, const char* key) {
  if (text.empty()) return std::nullopt;
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains(key)) return std::nullopt;
  const json& v = j[key];
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  if (v.is_array() && !v.empty() && v[0].is_number_integer() && v[0].get<int64_t>() >= 0)
    return v[0].get<int64_t>();
  return std::nullopt;
}

}  // namespace

void apply_tokenizer_config_to(
    Tokenizer& tok, const std::string& config_text, const std::string& source,
    const std::function<std::optional<int64_t>(const std::string&)>& lookup) {
  apply_tokenizer_config(tok, config_text, source, lookup, nullptr, nullptr);
}

std::unique_ptr<Tokenizer> parse_tokenizer_json(const std::string& json_text,
                                                const std::string& source,
                                                const std::string& tokenizer_config) {
  const json j = parse_json(json_text, source, "tokenizer.json");
  const Fields f{source};
  f.object(j, "(top level)");
  if (!j.contains("model")) f.refuse("model", "missing");
  f.object(j["model"], "model");
  for (const char* key : {"truncation", "padding"})
    if (j.contains(key) && !j[key].is_null())
      f.refuse(key, "not supported (the runner takes whole sequences; use null)");

  std::vector<AddedToken> added;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) f.refuse("added_tokens", "not an array");
    for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
      const json& a = j["added_tokens"][i];
      const std::string field = "added_tokens[" + std::to_string(i) + "]";
      f.object(a, field);
      AddedToken t;
      t.content = f.string(a, "content", field);
      if (t.content.empty()) f.refuse(field + ".content", "empty");
      if (!a.contains("id")) f.refuse(field + ".id", "missing");
      t.id = f.id(a["id"], field + ".id");
      t.special = f.boolean_or(a, "special", false, field);
      t.normalized = f.boolean_or(a, "normalized", !t.special, field);
      t.lstrip = f.boolean_or(a, "lstrip", false, field);
      t.rstrip = f.boolean_or(a, "rstrip", false, field);
      if (f.boolean_or(a, "single_word", false, field))
        f.refuse(field + ".single_word", "true is not supported");
      added.push_back(std::move(t));
    }
  }
  std::vector<NormStep> norm;
  if (j.contains("normalizer")) parse_normalizer(f, j["normalizer"], "normalizer", norm, 0);
  std::vector<PreStep> pre;
  if (j.contains("pre_tokenizer"))
    parse_pre_tokenizer(f, j["pre_tokenizer"], "pre_tokenizer", pre, 0);
  Bpe bpe = parse_bpe(f, j["model"]);
  std::vector<DecodeStep> dec;
  if (j.contains("decoder")) parse_decoder(f, j["decoder"], "decoder", dec, 0);

  std::string kind = "BPE";
  for (const PreStep& p : pre) {
    if (p.kind == PreStep::kByteLevel) kind += ", ByteLevel";
    if (p.kind == PreStep::kMetaspace) kind += ", Metaspace";
  }
  if (bpe.byte_fallback) kind += ", byte fallback";
  auto tok = std::make_unique<HfTokenizer>(std::move(added), std::move(norm), std::move(pre),
                                           std::move(bpe), std::move(dec), kind);
  std::vector<int64_t> prefix, suffix;
  if (j.contains("post_processor"))
    parse_post_processor(f, j["post_processor"], "post_processor", *tok, prefix, suffix, 0);
  for (const auto* ids : {&prefix, &suffix})
    for (int64_t id : *ids)
      if (!tok->known(id))
        f.refuse("post_processor", detail::concat("special token id ", id,
                                                  " is neither in the vocabulary nor added"));
  if (!prefix.empty()) tok->bos_id = prefix.front();
  if (!suffix.empty()) tok->eos_id = suffix.back();
  tok->add_bos = !prefix.empty();
  tok->add_eos = !suffix.empty();
  const HfTokenizer& lookup = *tok;
  apply_tokenizer_config(
      *tok, tokenizer_config, source + " (tokenizer_config.json)",
      [&](const std::string& t) { return lookup.token_id(t); }, &prefix, &suffix);
  tok->prefix = prefix;
  tok->suffix = suffix;
  return tok;
}

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  const std::string config = read_if_exists(dir + "/config.json");
  if (!config.empty()) {
    const json c = json::parse(config, nullptr, false);
    if (!c.is_discarded() && c.is_object() && c.contains("xattn_byte_level") &&
        c["xattn_byte_level"].is_boolean() && c["xattn_byte_level"].get<bool>())
      return make_byte_tokenizer();
  }
  const std::string tokenizer_config = read_if_exists(dir + "/tokenizer_config.json");
  std::unique_ptr<Tokenizer> tok;
  if (file_exists(dir + "/tokenizer.json")) {
    tok = parse_tokenizer_json(read_text_file(dir + "/tokenizer.json"), dir + "/tokenizer.json",
                               tokenizer_config);
  } else if (file_exists(dir + "/tokenizer.model")) {
    tok = load_sentencepiece(dir + "/tokenizer.model", tokenizer_config);
  } else {
    throw Error(ErrorKind::kBadInput,
                detail::concat("'", dir, "' has no tokenizer: expected tokenizer.json or ",
                               "tokenizer.model (or \"xattn_byte_level\": true in config.json); ",
                               "for pre-tokenized input give token ids"));
  }
  // Ids the tokenizer files leave open come from the model's configs.
  const std::string generation = read_if_exists(dir + "/generation_config.json");
  if (!tok->bos_id) tok->bos_id = json_id(generation, "bos_token_id");
  if (!tok->bos_id) tok->bos_id = json_id(config, "bos_token_id");
  if (!tok->eos_id) tok->eos_id = json_id(generation, "eos_token_id");
  if (!tok->eos_id) tok->eos_id = json_id(config, "eos_token_id");
  return tok;
}

}  // namespace xattn::model
