// UTF-8, Unicode categories, NFC and the split-pattern regex engine; see tokenizer_text.h.
#include "tokenizer_text.h"

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <unordered_map>

#include "xattn/error.h"

namespace xattn::model::text {

namespace {

struct CategoryRange {
  char32_t first, last;
  uint8_t category;
};
struct ClassRange {
  char32_t first, last;
  uint8_t combining_class;
};
struct Decomposition {
  char32_t cp, first, second;  // second 0: a singleton
  uint8_t composes;            // NFC recomposes first + second into cp
};

#include "unicode_tables.inc"

template <typename Range>
const Range* find_range(const Range* begin, const Range* end, char32_t cp) {
  const Range* it =
      std::upper_bound(begin, end, cp, [](char32_t c, const Range& r) { return c < r.first; });
  if (it == begin) return nullptr;
  --it;
  return cp <= it->last ? it : nullptr;
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const ClassRange* r =
      find_range(std::begin(kCombiningClassRanges), std::end(kCombiningClassRanges), cp);
  return r ? r->combining_class : 0;
}

const Decomposition* decomposition(char32_t cp) {
  const Decomposition* it =
      std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                       [](const Decomposition& d, char32_t c) { return d.cp < c; });
  return it != std::end(kDecompositions) && it->cp == cp ? it : nullptr;
}

// Hangul syllables compose and decompose by arithmetic (Unicode chapter 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* d = cp < 0xC0 ? nullptr : decomposition(cp);
  if (!d) {
    out.push_back(cp);
    return;
  }
  decompose(d->first, out);
  if (d->second) decompose(d->second, out);
}

char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  static const std::unordered_map<uint64_t, char32_t> pairs = [] {
    std::unordered_map<uint64_t, char32_t> m;
    for (const Decomposition& d : kDecompositions)
      if (d.composes) m[(uint64_t(d.first) << 21) | d.second] = d.cp;
    return m;
  }();
  const auto it = pairs.find((uint64_t(a) << 21) | b);
  return it == pairs.end() ? 0 : it->second;
}

}  // namespace

std::vector<char32_t> decode_utf8(const std::string& s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    size_t len = 0;
    char32_t cp = 0, min = 0;
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    }
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      out.push_back(cp);
      i += len;
    } else {
      out.push_back(0xFFFD);
      ++i;
    }
  }
  return out;
}

bool is_valid_utf8(const std::string& s) {
  const std::vector<char32_t> cps = decode_utf8(s);
  std::string back = encode_utf8(cps, 0, cps.size());
  return back == s;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(const std::vector<char32_t>& cps, size_t begin, size_t end) {
  std::string out;
  out.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) append_utf8(out, cps[i]);
  return out;
}

Category category(char32_t cp) {
  const CategoryRange* r = find_range(std::begin(kCategoryRanges), std::end(kCategoryRanges), cp);
  return r ? static_cast<Category>(r->category) : Category::kCn;
}

bool is_white_space(char32_t cp) {
  return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

std::string nfc(const std::string& s) {
  const std::vector<char32_t> in = decode_utf8(s);
  // Below U+0300 nothing decomposes into something that would not compose back.
  if (std::all_of(in.begin(), in.end(), [](char32_t c) { return c < 0x300; })) return s;
  std::vector<char32_t> d;
  d.reserve(in.size());
  for (char32_t c : in) decompose(c, d);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + long(i), d.begin() + long(j), [](char32_t a, char32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = j;
  }
  // Canonical composition.
  if (!d.empty()) {
    size_t starter = 0, write = 1;
    int last_class = combining_class(d[0]) ? 256 : 0;
    for (size_t i = 1; i < d.size(); ++i) {
      const char32_t c = d[i];
      const int cc = combining_class(c);
      const char32_t composite = combining_class(d[starter]) == 0 ? compose(d[starter], c) : 0;
      if (composite && (last_class < cc || last_class == 0)) {
        d[starter] = composite;
      } else {
        if (cc == 0) starter = write;
        last_class = cc;
        d[write++] = c;
      }
    }
    d.resize(write);
  }
  return encode_utf8(d, 0, d.size());
}

// ---------------------------------------------------------------------------------------------
// Regex: parsed into a tree, compiled to a backtracking program (Thompson-style instructions run
// depth first, so the first alternative that leads to a match wins, as in Oniguruma and PCRE).

namespace {

constexpr uint32_t bit(Category c) { return 1u << static_cast<unsigned>(c); }
constexpr uint32_t kLetters = bit(Category::kLu) | bit(Category::kLl) | bit(Category::kLt) |
                              bit(Category::kLm) | bit(Category::kLo);
constexpr uint32_t kMarks = bit(Category::kMn) | bit(Category::kMc) | bit(Category::kMe);
constexpr uint32_t kNumbers = bit(Category::kNd) | bit(Category::kNl) | bit(Category::kNo);
constexpr uint32_t kPunctuation = bit(Category::kPc) | bit(Category::kPd) | bit(Category::kPs) |
                                  bit(Category::kPe) | bit(Category::kPi) | bit(Category::kPf) |
                                  bit(Category::kPo);
constexpr uint32_t kSymbols =
    bit(Category::kSm) | bit(Category::kSc) | bit(Category::kSk) | bit(Category::kSo);
constexpr uint32_t kSeparators = bit(Category::kZs) | bit(Category::kZl) | bit(Category::kZp);
constexpr uint32_t kOthers = bit(Category::kCc) | bit(Category::kCf) | bit(Category::kCs) |
                             bit(Category::kCo) | bit(Category::kCn);

uint32_t category_mask(const std::string& name) {
  static const char* const kNames[] = {"Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd",
                                       "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm",
                                       "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"};
  for (unsigned i = 0; i < 30; ++i)
    if (name == kNames[i]) return 1u << i;
  if (name == "L" || name == "Letter") return kLetters;
  if (name == "M" || name == "Mark") return kMarks;
  if (name == "N" || name == "Number") return kNumbers;
  if (name == "P" || name == "Punctuation") return kPunctuation;
  if (name == "S" || name == "Symbol") return kSymbols;
  if (name == "Z" || name == "Separator") return kSeparators;
  if (name == "C" || name == "Other") return kOthers;
  throw std::invalid_argument("unsupported Unicode property \\p{" + name + "}");
}

char32_t fold(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c == 0x17F) return 's';
  if (c == 0x212A) return 'k';
  return c;
}

// One item of a character class; `negated` flips it (\S, \P{L}, \W, \D).
struct ClassItem {
  enum Kind { kRange, kCategories, kWhite } kind = kRange;
  char32_t first = 0, last = 0;
  uint32_t categories = 0;
  bool negated = false;

  bool matches(char32_t c) const {
    bool m = false;
    switch (kind) {
      case kRange:
        m = c >= first && c <= last;
        break;
      case kCategories:
        m = (bit(category(c)) & categories) != 0;
        break;
      case kWhite:
        m = is_white_space(c);
        break;
    }
    return m != negated;
  }
};

struct CharClass {
  std::vector<ClassItem> items;
  bool negated = false;
  bool icase = false;

  bool matches(char32_t c) const {
    bool m = false;
    for (const ClassItem& it : items) m = m || it.matches(c);
    if (!m && icase) {
      const char32_t f = fold(c);
      const char32_t up = (f >= 'a' && f <= 'z') ? f - 32 : f;
      for (const ClassItem& it : items) m = m || it.matches(f) || it.matches(up);
    }
    return m != negated;
  }
};

struct Node {
  enum Kind { kChar, kClass, kAny, kBegin, kEnd, kConcat, kAlt, kRepeat, kLook } kind = kConcat;
  char32_t c = 0;
  bool icase = false;
  int cls = -1;
  std::vector<Node> kids;
  int min = 0, max = -1;  // kRepeat: max -1 unbounded
  bool greedy = true;
  bool negative = false;  // kLook
};

enum class Op : uint8_t { kChar, kClass, kAny, kBegin, kEnd, kSplit, kJmp, kLook, kMatch };

struct Inst {
  Op op;
  bool flag = false;  // kChar: case-insensitive; kLook: negative
  char32_t c = 0;
  int x = 0, y = 0;  // kSplit: first, second; kJmp: x; kClass: x = class; kLook: body x, next y
};

constexpr size_t kMaxInstructions = 1 << 16;
constexpr int kMaxRepeat = 1000;
constexpr int kMaxDepth = 200;

class Parser {
 public:
  Parser(const std::vector<char32_t>& p, std::vector<CharClass>& classes)
      : p_(p), classes_(classes) {}

  Node parse() {
    if (p_.size() >= 4 && p_[0] == '(' && p_[1] == '?' && p_[2] == 'i' && p_[3] == ')') {
      icase_ = true;
      i_ = 4;
    }
    Node n = alternation(0);
    if (i_ != p_.size()) fail("unbalanced ')'");
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw std::invalid_argument(why + " at character " + std::to_string(i_));
  }
  bool more() const { return i_ < p_.size(); }
  char32_t peek() const { return p_[i_]; }

  Node alternation(int depth) {
    if (depth > kMaxDepth) fail("nesting too deep");
    Node alt;
    alt.kind = Node::kAlt;
    alt.kids.push_back(sequence(depth));
    while (more() && peek() == '|') {
      ++i_;
      alt.kids.push_back(sequence(depth));
    }
    if (alt.kids.size() == 1) return std::move(alt.kids[0]);
    return alt;
  }

  Node sequence(int depth) {
    Node seq;
    seq.kind = Node::kConcat;
    while (more() && peek() != '|' && peek() != ')') {
      Node atom_node = atom(depth);
      seq.kids.push_back(quantified(std::move(atom_node)));
    }
    return seq;
  }

  bool parse_int(int* out) {
    size_t start = i_;
    long v = 0;
    while (more() && peek() >= '0' && peek() <= '9') {
      v = v * 10 + long(peek() - '0');
      if (v > kMaxRepeat) fail("repeat count above " + std::to_string(kMaxRepeat));
      ++i_;
    }
    *out = int(v);
    return i_ > start;
  }

  Node quantified(Node atom_node) {
    if (!more()) return atom_node;
    int min = 0, max = -1;
    const size_t save = i_;
    const char32_t q = peek();
    if (q == '?') {
      min = 0, max = 1, ++i_;
    } else if (q == '*') {
      min = 0, max = -1, ++i_;
    } else if (q == '+') {
      min = 1, max = -1, ++i_;
    } else if (q == '{') {
      ++i_;
      if (!parse_int(&min)) {
        i_ = save;  // a literal '{'
        return atom_node;
      }
      max = min;
      if (more() && peek() == ',') {
        ++i_;
        max = -1;
        if (more() && peek() != '}' && !parse_int(&max)) fail("malformed {n,m}");
      }
      if (!more() || peek() != '}') fail("malformed {n,m}");
      ++i_;
      if (max >= 0 && max < min) fail("{n,m} with m < n");
    } else {
      return atom_node;
    }
    if (atom_node.kind == Node::kBegin || atom_node.kind == Node::kEnd ||
        atom_node.kind == Node::kLook)
      fail("quantifier on an anchor or lookahead");
    if (nullable(atom_node)) fail("quantifier on an expression that can match empty text");
    Node r;
    r.kind = Node::kRepeat;
    r.min = min;
    r.max = max;
    if (more() && peek() == '?') {
      r.greedy = false;
      ++i_;
    } else if (more() && peek() == '+') {
      fail("possessive quantifiers are not supported");
    }
    r.kids.push_back(std::move(atom_node));
    return quantified_again(std::move(r));
  }

  Node quantified_again(Node r) {
    if (more() && (peek() == '?' || peek() == '*' || peek() == '+' || peek() == '{'))
      fail("nested quantifier");
    return r;
  }

  static bool nullable(const Node& n) {
    switch (n.kind) {
      case Node::kChar:
      case Node::kClass:
      case Node::kAny:
        return false;
      case Node::kBegin:
      case Node::kEnd:
      case Node::kLook:
        return true;
      case Node::kRepeat:
        return n.min == 0 || nullable(n.kids[0]);
      case Node::kConcat:
        for (const Node& k : n.kids)
          if (!nullable(k)) return false;
        return true;
      case Node::kAlt:
        for (const Node& k : n.kids)
          if (nullable(k)) return true;
        return false;
    }
    return true;
  }

  Node atom(int depth) {
    const char32_t c = peek();
    Node n;
    if (c == '(') {
      ++i_;
      bool saved_icase = icase_;
      Node group;
      if (more() && peek() == '?') {
        ++i_;
        if (!more()) fail("unterminated group");
        const char32_t kind = peek();
        if (kind == '=' || kind == '!') {
          ++i_;
          group.kind = Node::kLook;
          group.negative = kind == '!';
          group.kids.push_back(alternation(depth + 1));
        } else {
          bool on = true, any = false;
          while (more() && peek() != ':' && peek() != ')') {
            if (peek() == '-') {
              on = false;
            } else if (peek() == 'i') {
              icase_ = on;
              any = true;
            } else {
              fail(std::string("unsupported group (?") + char(kind & 0x7F) + "...)");
            }
            ++i_;
          }
          if (!more()) fail("unterminated group");
          if (peek() == ')' || (!any && kind != ':')) fail("unsupported group flags");
          ++i_;  // ':'
          group = alternation(depth + 1);
        }
      } else {
        group = alternation(depth + 1);
      }
      icase_ = saved_icase;
      if (!more() || peek() != ')') fail("missing ')'");
      ++i_;
      return group;
    }
    if (c == ')') fail("unbalanced ')'");
    if (c == '*' || c == '+' || c == '?') fail("quantifier without an expression");
    ++i_;
    if (c == '[') return char_class();
    if (c == '.') {
      n.kind = Node::kAny;
      return n;
    }
    if (c == '^') {
      n.kind = Node::kBegin;
      return n;
    }
    if (c == '$') {
      n.kind = Node::kEnd;
      return n;
    }
    if (c == '\\') {
      ClassItem item;
      char32_t literal = 0;
      if (escape(&item, &literal, false)) {
        CharClass cls;
        cls.items.push_back(item);
        cls.icase = icase_;
        return class_node(std::move(cls));
      }
      n.kind = Node::kChar;
      n.c = literal;
      n.icase = icase_;
      return n;
    }
    n.kind = Node::kChar;
    n.c = c;
    n.icase = icase_;
    return n;
  }

  Node class_node(CharClass cls) {
    if (classes_.size() > kMaxInstructions) fail("pattern too large");
    classes_.push_back(std::move(cls));
    Node n;
    n.kind = Node::kClass;
    n.cls = int(classes_.size() - 1);
    return n;
  }

  uint32_t hex(size_t digits) {
    uint32_t v = 0;
    for (size_t k = 0; k < digits; ++k) {
      if (!more()) fail("truncated escape");
      const char32_t h = peek();
      int d = -1;
      if (h >= '0' && h <= '9') d = int(h - '0');
      if (h >= 'a' && h <= 'f') d = int(h - 'a' + 10);
      if (h >= 'A' && h <= 'F') d = int(h - 'A' + 10);
      if (d < 0) fail("malformed hexadecimal escape");
      v = v * 16 + uint32_t(d);
      ++i_;
    }
    return v;
  }

  // After a backslash: a class item (returns true) or a literal code point.
  bool escape(ClassItem* item, char32_t* literal, bool in_class) {
    if (!more()) fail("pattern ends with a backslash");
    const char32_t e = peek();
    ++i_;
    switch (e) {
      case 's':
      case 'S':
        item->kind = ClassItem::kWhite;
        item->negated = e == 'S';
        return true;
      case 'd':
      case 'D':
        item->kind = ClassItem::kCategories;
        item->categories = bit(Category::kNd);
        item->negated = e == 'D';
        return true;
      case 'w':
      case 'W':
        item->kind = ClassItem::kCategories;
        item->categories = kLetters | kMarks | bit(Category::kNd) | bit(Category::kPc);
        item->negated = e == 'W';
        return true;
      case 'p':
      case 'P': {
        std::string name;
        bool negated = e == 'P';
        if (more() && peek() == '{') {
          ++i_;
          if (more() && peek() == '^') {
            negated = !negated;
            ++i_;
          }
          while (more() && peek() != '}' && name.size() < 32) {
            name.push_back(char(peek() & 0x7F));
            ++i_;
          }
          if (!more() || peek() != '}') fail("malformed \\p{...}");
          ++i_;
        } else {
          if (!more()) fail("malformed \\p");
          name.push_back(char(peek() & 0x7F));
          ++i_;
        }
        item->kind = ClassItem::kCategories;
        item->categories = category_mask(name);
        item->negated = negated;
        return true;
      }
      case 'r':
        *literal = '\r';
        return false;
      case 'n':
        *literal = '\n';
        return false;
      case 't':
        *literal = '\t';
        return false;
      case 'f':
        *literal = '\f';
        return false;
      case 'v':
        *literal = '\v';
        return false;
      case 'a':
        *literal = 0x07;
        return false;
      case 'e':
        *literal = 0x1B;
        return false;
      case '0':
        *literal = 0;
        return false;
      case 'x':
        if (more() && peek() == '{') {
          ++i_;
          uint32_t v = 0;
          size_t n = 0;
          while (more() && peek() != '}') {
            v = v * 16 + hex(1);
            if (++n > 6) fail("malformed \\x{...}");
          }
          if (!more() || n == 0) fail("malformed \\x{...}");
          ++i_;
          if (v > 0x10FFFF) fail("code point above U+10FFFF");
          *literal = v;
        } else {
          *literal = hex(2);
        }
        return false;
      case 'u':
        *literal = hex(4);
        return false;
      default:
        break;
    }
    if (e < 0x80 && !((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))) {
      *literal = e;
      return false;
    }
    (void)in_class;
    fail(std::string("unsupported escape \\") + char(e & 0x7F));
  }

  Node char_class() {
    CharClass cls;
    cls.icase = icase_;
    if (more() && peek() == '^') {
      cls.negated = true;
      ++i_;
    }
    bool first = true;
    while (true) {
      if (!more()) fail("unterminated character class");
      char32_t c = peek();
      if (c == ']' && !first) {
        ++i_;
        break;
      }
      first = false;
      if (c == '[') fail("nested or POSIX classes are not supported");
      if (c == '&' && i_ + 1 < p_.size() && p_[i_ + 1] == '&')
        fail("class intersection is not supported");
      ++i_;
      ClassItem item;
      if (c == '\\') {
        char32_t literal = 0;
        if (escape(&item, &literal, true)) {
          cls.items.push_back(item);
          continue;
        }
        c = literal;
      }
      char32_t last = c;
      if (more() && peek() == '-' && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        ++i_;
        last = peek();
        ++i_;
        if (last == '\\') {
          ClassItem other;
          if (escape(&other, &last, true)) fail("a class escape cannot end a range");
        } else if (last == '[') {
          fail("nested or POSIX classes are not supported");
        }
        if (last < c) fail("character range out of order");
      }
      item.kind = ClassItem::kRange;
      item.first = c;
      item.last = last;
      cls.items.push_back(item);
    }
    return class_node(std::move(cls));
  }

  const std::vector<char32_t>& p_;
  std::vector<CharClass>& classes_;
  size_t i_ = 0;
  bool icase_ = false;
};

class Compiler {
 public:
  explicit Compiler(std::vector<Inst>& prog) : prog_(prog) {}

  void emit(const Node& n) {
    if (prog_.size() > kMaxInstructions) throw std::invalid_argument("pattern too large");
    switch (n.kind) {
      case Node::kChar:
        push({Op::kChar, n.icase, n.c, 0, 0});
        break;
      case Node::kClass:
        push({Op::kClass, false, 0, n.cls, 0});
        break;
      case Node::kAny:
        push({Op::kAny, false, 0, 0, 0});
        break;
      case Node::kBegin:
        push({Op::kBegin, false, 0, 0, 0});
        break;
      case Node::kEnd:
        push({Op::kEnd, false, 0, 0, 0});
        break;
      case Node::kConcat:
        for (const Node& k : n.kids) emit(k);
        break;
      case Node::kAlt: {
        std::vector<size_t> jumps;
        for (size_t i = 0; i < n.kids.size(); ++i) {
          if (i + 1 < n.kids.size()) {
            const size_t split = push({Op::kSplit, false, 0, 0, 0});
            prog_[split].x = int(prog_.size());
            emit(n.kids[i]);
            jumps.push_back(push({Op::kJmp, false, 0, 0, 0}));
            prog_[split].y = int(prog_.size());
          } else {
            emit(n.kids[i]);
          }
        }
        for (size_t j : jumps) prog_[j].x = int(prog_.size());
        break;
      }
      case Node::kRepeat: {
        for (int i = 0; i < n.min; ++i) emit(n.kids[0]);
        if (n.max < 0) {
          const size_t split = push({Op::kSplit, false, 0, 0, 0});
          emit(n.kids[0]);
          push({Op::kJmp, false, 0, int(split), 0});
          set_split(split, split + 1, prog_.size(), n.greedy);
        } else {
          std::vector<size_t> splits;
          for (int i = n.min; i < n.max; ++i) {
            splits.push_back(push({Op::kSplit, false, 0, 0, 0}));
            emit(n.kids[0]);
          }
          for (size_t s : splits) set_split(s, s + 1, prog_.size(), n.greedy);
        }
        break;
      }
      case Node::kLook: {
        const size_t look = push({Op::kLook, n.negative, 0, 0, 0});
        prog_[look].x = int(prog_.size());
        emit(n.kids[0]);
        push({Op::kMatch, false, 0, 0, 0});
        prog_[look].y = int(prog_.size());
        break;
      }
    }
  }

  size_t push(Inst inst) {
    prog_.push_back(inst);
    return prog_.size() - 1;
  }

 private:
  void set_split(size_t at, size_t body, size_t out, bool greedy) {
    prog_[at].x = int(greedy ? body : out);
    prog_[at].y = int(greedy ? out : body);
  }

  std::vector<Inst>& prog_;
};

}  // namespace

struct Regex::Program {
  std::vector<Inst> code;
  std::vector<CharClass> classes;

  // Runs from pc at pos depth first; the end of the first match, or npos.
  size_t run(const std::vector<char32_t>& s, int start_pc, size_t pos, int64_t& budget) const {
    std::vector<std::pair<int, size_t>> stack;
    stack.emplace_back(start_pc, pos);
    while (!stack.empty()) {
      int pc = stack.back().first;
      size_t at = stack.back().second;
      stack.pop_back();
      while (true) {
        if (--budget < 0)
          throw Error(ErrorKind::kBadInput,
                      "a tokenizer pattern backtracks too much on this text (more than a few "
                      "million steps); the pattern is not one of the usual pre-tokenizer splits");
        const Inst& in = code[size_t(pc)];
        bool ok = true;
        switch (in.op) {
          case Op::kChar:
            ok = at < s.size() && (s[at] == in.c || (in.flag && fold(s[at]) == fold(in.c)));
            if (ok) ++at, ++pc;
            break;
          case Op::kClass:
            ok = at < s.size() && classes[size_t(in.x)].matches(s[at]);
            if (ok) ++at, ++pc;
            break;
          case Op::kAny:
            ok = at < s.size() && s[at] != '\n';
            if (ok) ++at, ++pc;
            break;
          case Op::kBegin:
            ok = at == 0;
            ++pc;
            break;
          case Op::kEnd:
            ok = at == s.size();
            ++pc;
            break;
          case Op::kSplit:
            stack.emplace_back(in.y, at);
            pc = in.x;
            break;
          case Op::kJmp:
            pc = in.x;
            break;
          case Op::kLook: {
            const bool found = run(s, in.x, at, budget) != npos;
            ok = found != in.flag;
            pc = in.y;
            break;
          }
          case Op::kMatch:
            return at;
        }
        if (!ok) break;
      }
    }
    return npos;
  }
};

Regex::Regex(const std::string& pattern) : program_(std::make_unique<Program>()) {
  const std::vector<char32_t> cps = decode_utf8(pattern);
  Parser parser(cps, program_->classes);
  const Node root = parser.parse();
  Compiler compiler(program_->code);
  compiler.emit(root);
  compiler.push({Op::kMatch, false, 0, 0, 0});
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

std::pair<size_t, size_t> Regex::find(const std::vector<char32_t>& cps, size_t from) const {
  int64_t budget = 4000000 + 512 * int64_t(cps.size() - std::min(from, cps.size()));
  for (size_t start = from; start <= cps.size(); ++start) {
    const size_t end = program_->run(cps, 0, start, budget);
    if (end != npos) return {start, end};
  }
  return {npos, npos};
}

}  // namespace xattn::model::text
