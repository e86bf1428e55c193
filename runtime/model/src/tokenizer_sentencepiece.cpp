// SentencePiece tokenizer.model files, read and run by the project; see xattn/model/tokenizer.h.
//
// Why not libsentencepiece: Debian's library carries its own copy of protobuf 3.14, and LibTorch
// loads the system protobuf 3.21 into the same process; the two clash at start-up (a crash, or
// protobuf's version check aborting). The file is a small protobuf message, so it is parsed here,
// and the two encoders follow SentencePiece's rules:
//   normalization   the precompiled character map (a double-array trie of replacements, as
//                   nmt_nfkc), user-defined pieces kept as they are, extra spaces removed, a dummy
//                   "▁" prefix, spaces escaped to "▁";
//   BPE             characters merged pairwise, always the pair whose merged piece scores highest
//                   (leftmost among equal scores), unused pieces split back into their parts;
//   unigram         the best-scoring segmentation (Viterbi over float scores; an unknown
//                   character costs the lowest score minus 10; the first best path found wins);
//   byte fallback   unknown pieces become their <0xNN> byte pieces.
#include <algorithm>
#include <array>
#include <cfloat>
#include <cstring>
#include <fstream>
#include <memory>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "tokenizer_internal.h"
#include "tokenizer_text.h"
#include "xattn/error.h"
#include "xattn/io/file_io.h"
#include "xattn/model/tokens.h"

namespace xattn::model {

namespace {

constexpr const char* kSpace = "\xE2\x96\x81";  // ▁

enum PieceType {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

struct Piece {
  std::string text;
  float score = 0.f;
  int type = kNormal;
};

// ---------------------------------------------------------------------------------------------
// Protobuf wire format: just what ModelProto needs.

class Wire {
 public:
  Wire(const char* data, size_t size, const std::string& source)
      : p_(data), end_(data + size), source_(source) {}

  bool done() const { return p_ >= end_; }

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      check(p_ < end_, "a truncated number");
      const uint8_t b = uint8_t(*p_++);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("a number longer than 10 bytes");
  }

  // Next field: its number and wire type.
  std::pair<uint32_t, uint32_t> key() {
    const uint64_t k = varint();
    check((k >> 3) > 0 && (k >> 3) < (1u << 29), "a field number out of range");
    return {uint32_t(k >> 3), uint32_t(k & 7)};
  }

  std::string bytes() {
    const uint64_t n = varint();
    check(n <= uint64_t(end_ - p_), "a field longer than the file");
    std::string s(p_, size_t(n));
    p_ += n;
    return s;
  }

  float fixed32() {
    check(end_ - p_ >= 4, "a truncated float");
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= uint32_t(uint8_t(p_[i])) << (8 * i);
    p_ += 4;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }

  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        break;
      case 1:
        check(end_ - p_ >= 8, "a truncated field");
        p_ += 8;
        break;
      case 2:
        bytes();
        break;
      case 5:
        fixed32();
        break;
      default:
        fail("an unsupported protobuf wire type " + std::to_string(wire_type));
    }
  }

  void check(bool ok, const std::string& what) const {
    if (!ok) fail(what);
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(ErrorKind::kBadInput,
                detail::concat(source_, ": not a SentencePiece model (", what, ")"));
  }

 private:
  const char* p_;
  const char* end_;
  std::string source_;
};

struct NormalizerSpec {
  std::string name;
  std::string charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

struct TrainerSpec {
  int model_type = 1;  // 1 unigram, 2 BPE, 3 word, 4 char
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string bos_piece = "<s>", eos_piece = "</s>";
};

NormalizerSpec parse_normalizer(const std::string& msg, const std::string& source) {
  NormalizerSpec n;
  Wire w(msg.data(), msg.size(), source);
  while (!w.done()) {
    const auto [field, type] = w.key();
    if (field == 1 && type == 2)
      n.name = w.bytes();
    else if (field == 2 && type == 2)
      n.charsmap = w.bytes();
    else if (field == 3 && type == 0)
      n.add_dummy_prefix = w.varint() != 0;
    else if (field == 4 && type == 0)
      n.remove_extra_whitespaces = w.varint() != 0;
    else if (field == 5 && type == 0)
      n.escape_whitespaces = w.varint() != 0;
    else
      w.skip(type);
  }
  return n;
}

TrainerSpec parse_trainer(const std::string& msg, const std::string& source) {
  TrainerSpec t;
  Wire w(msg.data(), msg.size(), source);
  while (!w.done()) {
    const auto [field, type] = w.key();
    if (field == 3 && type == 0)
      t.model_type = int(w.varint() & 0xFF);
    else if (field == 24 && type == 0)
      t.treat_whitespace_as_suffix = w.varint() != 0;
    else if (field == 35 && type == 0)
      t.byte_fallback = w.varint() != 0;
    else if (field == 46 && type == 2)
      t.bos_piece = w.bytes();
    else if (field == 47 && type == 2)
      t.eos_piece = w.bytes();
    else
      w.skip(type);
  }
  return t;
}

Piece parse_piece(const std::string& msg, const std::string& source) {
  Piece p;
  Wire w(msg.data(), msg.size(), source);
  while (!w.done()) {
    const auto [field, type] = w.key();
    if (field == 1 && type == 2)
      p.text = w.bytes();
    else if (field == 2 && type == 5)
      p.score = w.fixed32();
    else if (field == 3 && type == 0)
      p.type = int(w.varint() & 0xFF);
    else
      w.skip(type);
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// The precompiled character map: uint32 trie size in bytes, a darts-clone double-array trie of
// the source strings, then the NUL-terminated replacement strings the trie's values point into.

class CharsMap {
 public:
  CharsMap() = default;
  CharsMap(const std::string& blob, const std::string& source) {
    auto fail = [&](const char* what) {
      throw Error(ErrorKind::kBadInput,
                  detail::concat(source, ": normalizer_spec.precompiled_charsmap: ", what));
    };
    if (blob.size() < 4) fail("shorter than its 4-byte header");
    uint32_t trie_bytes = 0;
    for (int i = 0; i < 4; ++i) trie_bytes |= uint32_t(uint8_t(blob[size_t(i)])) << (8 * i);
    if (trie_bytes % 4 != 0 || trie_bytes == 0 || trie_bytes > blob.size() - 4)
      fail("trie size does not fit the map");
    units_.resize(trie_bytes / 4);
    for (size_t u = 0; u < units_.size(); ++u) {
      uint32_t v = 0;
      for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(blob[4 + 4 * u + size_t(i)])) << (8 * i);
      units_[u] = v;
    }
    strings_ = blob.substr(4 + trie_bytes);
  }

  bool empty() const { return units_.empty(); }

  // Longest source string at the start of `s`: {its length, its replacement}, or {0, ""}.
  std::pair<size_t, std::string> longest(const char* s, size_t n) const {
    size_t best_len = 0;
    uint32_t best_value = 0;
    size_t pos = 0;
    if (units_.empty()) return {0, ""};
    pos ^= offset(units_[0]);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t c = uint8_t(s[i]);
      pos ^= c;
      if (pos >= units_.size()) break;
      const uint32_t unit = units_[pos];
      if (label(unit) != c) break;
      pos ^= offset(unit);
      if (pos >= units_.size()) break;
      if (has_leaf(unit)) {
        best_len = i + 1;
        best_value = units_[pos] & 0x7FFFFFFFu;
      }
    }
    if (best_len == 0 || best_value >= strings_.size()) return {0, ""};
    const size_t end = strings_.find('\0', best_value);
    return {best_len, strings_.substr(best_value, end == std::string::npos ? std::string::npos
                                                                           : end - best_value)};
  }

 private:
  static bool has_leaf(uint32_t u) { return (u >> 8) & 1; }
  static uint32_t label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
  static size_t offset(uint32_t u) { return size_t(u >> 10) << ((u & (1u << 9)) >> 6); }

  std::vector<uint32_t> units_;
  std::string strings_;
};

size_t utf8_length(unsigned char lead) {
  static const uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// ---------------------------------------------------------------------------------------------

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& bytes, const std::string& source) : source_(source) {
    Wire w(bytes.data(), bytes.size(), source);
    std::string normalizer, trainer;
    while (!w.done()) {
      const auto [field, type] = w.key();
      if (field == 1 && type == 2) {
        pieces_.push_back(parse_piece(w.bytes(), source));
        w.check(pieces_.size() <= (size_t(1) << 22), "more than 4M pieces");
      } else if (field == 2 && type == 2) {
        trainer = w.bytes();
      } else if (field == 3 && type == 2) {
        normalizer = w.bytes();
      } else {
        w.skip(type);
      }
    }
    spec_ = parse_normalizer(normalizer, source);
    trainer_ = parse_trainer(trainer, source);
    auto refuse = [&](const std::string& field, const std::string& what) {
      throw Error(ErrorKind::kBadInput, detail::concat(source, ": ", field, ": ", what));
    };
    if (pieces_.empty()) refuse("pieces", "none (not a SentencePiece model)");
    if (trainer_.model_type != 1 && trainer_.model_type != 2)
      refuse("trainer_spec.model_type", detail::concat(trainer_.model_type == 3   ? "WORD"
                                                       : trainer_.model_type == 4 ? "CHAR"
                                                                                  : "unknown",
                                                       " models are not supported (UNIGRAM, BPE)"));
    if (trainer_.treat_whitespace_as_suffix)
      refuse("trainer_spec.treat_whitespace_as_suffix", "true is not supported");
    if (!spec_.charsmap.empty()) charsmap_ = CharsMap(spec_.charsmap, source);
    min_score_ = FLT_MAX;
    max_score_ = -FLT_MAX;
    for (size_t id = 0; id < pieces_.size(); ++id) {
      const Piece& p = pieces_[id];
      if (p.text.empty()) refuse(detail::concat("pieces[", id, "]"), "an empty piece");
      // Real pieces are a few characters (SentencePiece's default limit is 16).
      if (p.text.size() > 512)
        refuse(detail::concat("pieces[", id, "]"), "a piece longer than 512 bytes");
      if (p.type < kNormal || p.type > kByte)
        refuse(detail::concat("pieces[", id, "].type"), detail::concat("unknown type ", p.type));
      if (p.type == kUnknown) {
        if (unk_ >= 0) refuse(detail::concat("pieces[", id, "]"), "a second unknown piece");
        unk_ = int64_t(id);
      }
      if (p.type == kNormal || p.type == kUserDefined || p.type == kUnused) {
        if (!lookup_.emplace(p.text, int64_t(id)).second)
          refuse(detail::concat("pieces[", id, "]"), "a piece that appears twice");
      } else {
        reserved_.emplace(p.text, int64_t(id));
      }
      if (p.type == kUserDefined) user_defined_.push_back(p.text);
      if (p.type == kNormal) {
        min_score_ = std::min(min_score_, p.score);
        max_score_ = std::max(max_score_, p.score);
      }
      if (p.type == kByte) {
        const std::string& t = p.text;
        int v = -1;
        if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>')
          v = int(std::strtol(t.substr(3, 2).c_str(), nullptr, 16));
        if (v < 0 || v > 255) refuse(detail::concat("pieces[", id, "]"), "a byte piece not <0xNN>");
        byte_ids_[size_t(v)] = int64_t(id);
      }
    }
    if (unk_ < 0) refuse("pieces", "no unknown piece");
    for (const auto& entry : lookup_)
      for (size_t len = 1; len <= entry.first.size(); ++len)
        prefixes_.insert(entry.first.substr(0, len));
    if (min_score_ > max_score_) min_score_ = max_score_ = 0.f;
    for (const auto* name : {&trainer_.bos_piece, &trainer_.eos_piece}) {
      const auto it = reserved_.find(*name);
      std::optional<int64_t> id;
      if (it != reserved_.end() && pieces_[size_t(it->second)].type == kControl) id = it->second;
      (name == &trainer_.bos_piece ? bos_id : eos_id) = id;
    }
    add_bos = bos_id.has_value();  // LlamaTokenizer's default; tokenizer_config.json may say no
  }

  std::vector<int64_t> encode(const std::string& text, bool add_special) const override {
    const std::string normalized = normalize(text);
    std::vector<std::pair<std::string, int64_t>> pieces =
        trainer_.model_type == 2 ? encode_bpe(normalized) : encode_unigram(normalized);
    std::vector<int64_t> ids;
    if (add_special && add_bos && bos_id) ids.push_back(*bos_id);
    bool last_unk = false;
    for (const auto& [piece, id] : pieces) {
      const bool unk = id == unk_;
      if (unk && trainer_.byte_fallback && std::all_of(piece.begin(), piece.end(), [&](char b) {
            return byte_ids_[static_cast<unsigned char>(b)] >= 0;
          })) {
        for (char b : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(b)]);
        last_unk = false;
        continue;
      }
      if (!(unk && last_unk)) ids.push_back(id);  // consecutive unknowns are one
      last_unk = unk;
    }
    if (add_special && add_eos && eos_id) ids.push_back(*eos_id);
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string out, bytes;
    bool at_start = true;
    auto flush = [&] {
      if (bytes.empty()) return;
      const std::vector<char32_t> cps = text::decode_utf8(bytes);
      out += text::encode_utf8(cps, 0, cps.size());
      bytes.clear();
      at_start = false;
    };
    for (int64_t id : ids) {
      if (id < 0 || size_t(id) >= pieces_.size()) continue;
      const Piece& p = pieces_[size_t(id)];
      if (p.type == kControl) continue;
      if (p.type == kByte) {
        bytes.push_back(char(std::strtol(p.text.substr(3, 2).c_str(), nullptr, 16)));
        continue;
      }
      flush();
      if (p.type == kUnknown) {
        out += " \xE2\x81\x87 ";  // " ⁇ ", SentencePiece's surface of <unk>
        at_start = false;
        continue;
      }
      std::string piece = p.text;
      if (at_start && (spec_.add_dummy_prefix || spec_.remove_extra_whitespaces) &&
          piece.compare(0, 3, kSpace) == 0)
        piece.erase(0, 3);
      for (size_t k = 0; (k = piece.find(kSpace, k)) != std::string::npos;)
        piece.replace(k, 3, " "), k += 1;
      out += piece;
      if (!out.empty()) at_start = false;
    }
    flush();
    return out;
  }

  int64_t vocab_size() const override { return int64_t(pieces_.size()); }
  std::string describe() const override {
    return detail::concat("tokenizer.model SentencePiece ",
                          trainer_.model_type == 2 ? "BPE" : "unigram", ", ", pieces_.size(),
                          " pieces");
  }

  std::optional<int64_t> token_id(const std::string& piece) const {
    auto it = reserved_.find(piece);
    if (it != reserved_.end()) return it->second;
    it = lookup_.find(piece);
    if (it != lookup_.end()) return it->second;
    return std::nullopt;
  }

 private:
  // Longest user-defined piece at the start of s (0: none).
  size_t user_defined_at(const char* s, size_t n) const {
    size_t best = 0;
    for (const std::string& u : user_defined_)
      if (u.size() > best && u.size() <= n && std::memcmp(s, u.data(), u.size()) == 0)
        best = u.size();
    return best;
  }

  // The replacement of the longest prefix of s and how many bytes it consumed.
  std::pair<std::string, size_t> normalize_prefix(const char* s, size_t n) const {
    if (const size_t u = user_defined_at(s, n)) return {std::string(s, u), u};
    if (!charsmap_.empty()) {
      auto [len, replacement] = charsmap_.longest(s, n);
      if (len > 0) return {replacement, len};
    }
    const size_t len = std::min(utf8_length(static_cast<unsigned char>(*s)), n);
    const std::string ch(s, len);
    if (text::is_valid_utf8(ch)) return {ch, len};
    return {"\xEF\xBF\xBD", 1};
  }

  std::string normalize(const std::string& input) const {
    const char* s = input.data();
    size_t n = input.size();
    if (spec_.remove_extra_whitespaces) {
      while (n > 0) {
        const auto [r, used] = normalize_prefix(s, n);
        if (r != " ") break;
        s += used;
        n -= used;
      }
    }
    std::string out;
    if (n == 0) return out;
    if (spec_.add_dummy_prefix) out += spec_.escape_whitespaces ? kSpace : " ";
    bool prev_space = spec_.remove_extra_whitespaces;
    while (n > 0) {
      const auto [r, used] = normalize_prefix(s, n);
      size_t skip = 0;
      while (prev_space && skip < r.size() && r[skip] == ' ') ++skip;
      if (skip < r.size()) {
        for (size_t k = skip; k < r.size(); ++k) {
          if (spec_.escape_whitespaces && r[k] == ' ') {
            out += kSpace;
          } else {
            out.push_back(r[k]);
          }
        }
        prev_space = r.back() == ' ';
      }
      s += used;
      n -= used;
      prev_space = prev_space && spec_.remove_extra_whitespaces;
    }
    if (spec_.remove_extra_whitespaces) {
      const std::string space = spec_.escape_whitespaces ? kSpace : " ";
      while (out.size() >= space.size() &&
             out.compare(out.size() - space.size(), space.size(), space) == 0)
        out.resize(out.size() - space.size());
    }
    return out;
  }

  int64_t piece_id(const std::string& piece) const {
    auto it = reserved_.find(piece);
    if (it != reserved_.end()) return it->second;
    it = lookup_.find(piece);
    return it != lookup_.end() ? it->second : unk_;
  }

  std::vector<std::pair<std::string, int64_t>> encode_bpe(const std::string& s) const {
    struct Symbol {
      size_t begin, size;
      int prev, next;
      bool frozen;
    };
    struct Pair {
      int left, right;
      float score;
      size_t size;
    };
    auto worse = [](const Pair& a, const Pair& b) {
      return a.score != b.score ? a.score < b.score : a.left > b.left;
    };
    std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> agenda(worse);
    std::vector<Symbol> sym;
    std::unordered_map<std::string, std::pair<std::string, std::string>> rev_merge;
    for (size_t i = 0; i < s.size();) {
      size_t len = user_defined_at(s.data() + i, s.size() - i);
      const bool frozen = len > 0;
      if (!frozen) len = std::min(utf8_length(static_cast<unsigned char>(s[i])), s.size() - i);
      const int index = int(sym.size());
      sym.push_back({i, len, index - 1, i + len < s.size() ? index + 1 : -1, frozen});
      i += len;
    }
    auto consider = [&](int left, int right) {
      if (left < 0 || right < 0 || sym[size_t(left)].frozen || sym[size_t(right)].frozen) return;
      const std::string piece =
          s.substr(sym[size_t(left)].begin, sym[size_t(left)].size + sym[size_t(right)].size);
      const auto it = lookup_.find(piece);
      if (it == lookup_.end()) return;
      const Piece& p = pieces_[size_t(it->second)];
      agenda.push({left, right, p.score, piece.size()});
      if (p.type == kUnused)
        rev_merge[piece] = {s.substr(sym[size_t(left)].begin, sym[size_t(left)].size),
                            s.substr(sym[size_t(right)].begin, sym[size_t(right)].size)};
    };
    for (size_t i = 1; i < sym.size(); ++i) consider(int(i) - 1, int(i));
    while (!agenda.empty()) {
      const Pair top = agenda.top();
      agenda.pop();
      Symbol& l = sym[size_t(top.left)];
      Symbol& r = sym[size_t(top.right)];
      if (l.size == 0 || r.size == 0 || l.size + r.size != top.size || l.next != top.right)
        continue;
      l.size += r.size;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = top.left;
      r.size = 0;
      consider(l.prev, top.left);
      consider(top.left, l.next);
    }
    std::vector<std::pair<std::string, int64_t>> out;
    std::function<void(const std::string&)> resegment = [&](const std::string& w) {
      const int64_t id = piece_id(w);
      const auto it = rev_merge.find(w);
      if (pieces_[size_t(id)].type != kUnused || it == rev_merge.end()) {
        out.emplace_back(w, id);
        return;
      }
      resegment(it->second.first);
      resegment(it->second.second);
    };
    for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[size_t(i)].next)
      resegment(s.substr(sym[size_t(i)].begin, sym[size_t(i)].size));
    return out;
  }

  std::vector<std::pair<std::string, int64_t>> encode_unigram(const std::string& s) const {
    struct Best {
      int64_t id = -1;
      float score = 0.f;
      long start = -1;
    };
    const size_t n = s.size();
    std::vector<Best> best(n + 1);
    const float unk_score = min_score_ - 10.0f;
    for (size_t start = 0; start < n;) {
      const float here = best[start].score;
      const size_t mblen = std::min(utf8_length(static_cast<unsigned char>(s[start])), n - start);
      bool single = false;
      // Every piece that starts here, shortest first (the order of SentencePiece's trie walk).
      for (size_t len = 1; start + len <= n; ++len) {
        const std::string prefix = s.substr(start, len);
        if (!prefixes_.count(prefix)) break;
        const auto it = lookup_.find(prefix);
        if (it == lookup_.end()) continue;
        const Piece& p = pieces_[size_t(it->second)];
        if (p.type == kUnused) continue;
        const float score = p.type == kUserDefined ? float(len) * max_score_ - 0.1f : p.score;
        Best& target = best[start + len];
        const float candidate = score + here;
        if (target.start == -1 || candidate > target.score)
          target = {it->second, candidate, long(start)};
        if (len == mblen) single = true;
      }
      if (!single) {
        Best& target = best[start + mblen];
        const float candidate = unk_score + here;
        if (target.start == -1 || candidate > target.score) target = {unk_, candidate, long(start)};
      }
      start += mblen;
    }
    std::vector<std::pair<std::string, int64_t>> out;
    for (size_t end = n; end > 0;) {
      const Best& b = best[end];
      if (b.start < 0) break;  // not reachable: every character has a path
      out.emplace_back(s.substr(size_t(b.start), end - size_t(b.start)), b.id);
      end = size_t(b.start);
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

  std::string source_;
  std::vector<Piece> pieces_;
  NormalizerSpec spec_;
  TrainerSpec trainer_;
  CharsMap charsmap_;
  std::unordered_map<std::string, int64_t> lookup_;    // normal, user-defined and unused pieces
  std::unordered_map<std::string, int64_t> reserved_;  // unknown, control and byte pieces
  std::vector<std::string> user_defined_;
  std::array<int64_t, 256> byte_ids_ = [] {
    std::array<int64_t, 256> a{};
    a.fill(-1);
    return a;
  }();
  int64_t unk_ = -1;
  float min_score_ = 0.f, max_score_ = 0.f;
  std::unordered_set<std::string> prefixes_;  // every prefix of the pieces in lookup_
};

}  // namespace

std::unique_ptr<Tokenizer> parse_sentencepiece(const std::string& bytes, const std::string& source,
                                               const std::string& tokenizer_config) {
  auto tok = std::make_unique<SentencePieceTokenizer>(bytes, source);
  const SentencePieceTokenizer& lookup = *tok;
  apply_tokenizer_config_to(*tok, tokenizer_config, source + " (tokenizer_config.json)",
                            [&](const std::string& t) { return lookup.token_id(t); });
  return tok;
}

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path,
                                              const std::string& tokenizer_config) {
  io::check_readable_file(path, "tokenizer.model");
  return parse_sentencepiece(read_text_file(path), path, tokenizer_config);
}

}  // namespace xattn::model
