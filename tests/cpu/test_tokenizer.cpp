// Tokenizers against the Python libraries: tests/data/tokenizers/<kind>/ holds tiny tokenizers
// trained with Hugging Face tokenizers and sentencepiece (scripts/gpu-goldens-tokenizers.py) and
// their golden ids for multilingual, whitespace-, digit- and emoji-heavy text; our ids must equal
// theirs exactly. Then the split-pattern regex, NFC, and the refusals of unsupported files.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer_text.h"
#include "xattn/error.h"
#include "xattn/model/tokenizer.h"
#include "xattn/model/tokens.h"

namespace xattn::model {
namespace {

using json = nlohmann::json;

const std::string kData = std::string(XATTN_SOURCE_DIR) + "/tests/data/tokenizers/";

std::string escaped(const std::string& s) { return json(s).dump(); }

std::string ids_text(const std::vector<int64_t>& ids) { return json(ids).dump(); }

class TokenizerGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(TokenizerGolden, IdsAndTextEqualThePythonLibrary) {
  const std::string dir = kData + GetParam();
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(dir);
  const json golden = json::parse(read_text_file(dir + "/golden.json"));
  ASSERT_GT(golden["cases"].size(), 20u);
  for (const json& c : golden["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto ids = c["ids"].get<std::vector<int64_t>>();
    const auto ids_special = c["ids_special"].get<std::vector<int64_t>>();
    const std::vector<int64_t> ours = tok->encode(text, false);
    EXPECT_EQ(ids_text(ours), ids_text(ids)) << "text " << escaped(text);
    EXPECT_EQ(ids_text(tok->encode(text, true)), ids_text(ids_special))
        << "with special tokens, text " << escaped(text);
    EXPECT_EQ(escaped(tok->decode(ids)), escaped(c["decoded"].get<std::string>()))
        << "decoding the ids of " << escaped(text);
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, TokenizerGolden,
                         ::testing::Values("llama3", "qwen2", "gpt2", "llama2", "mistral",
                                           "spm-bpe", "spm-unigram"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(Tokenizer, BosAndEosComeFromTheConfigs) {
  const auto llama3 = load_tokenizer(kData + "llama3");
  EXPECT_TRUE(llama3->add_bos);
  EXPECT_EQ(llama3->bos_id, std::optional<int64_t>(0));  // <|begin_of_text|>
  EXPECT_EQ(llama3->eos_id, std::optional<int64_t>(1));  // <|end_of_text|>
  const auto qwen2 = load_tokenizer(kData + "qwen2");
  EXPECT_FALSE(qwen2->add_bos);
  EXPECT_EQ(qwen2->eos_id, std::optional<int64_t>(2));  // <|im_end|>
  const auto spm = load_tokenizer(kData + "spm-bpe");
  EXPECT_TRUE(spm->add_bos);
  EXPECT_EQ(spm->bos_id, std::optional<int64_t>(1));
  EXPECT_EQ(spm->eos_id, std::optional<int64_t>(2));
  EXPECT_NE(llama3->describe().find("ByteLevel"), std::string::npos) << llama3->describe();
}

TEST(Tokenizer, BundledModelIsByteLevel) {
  const auto tok = load_tokenizer(std::string(XATTN_SOURCE_DIR) + "/examples/models/xattn-byte");
  EXPECT_TRUE(tok->byte_level);
  EXPECT_EQ(tok->encode("ab", true), (std::vector<int64_t>{kByteBos, 'a', 'b'}));
  EXPECT_EQ(tok->decode({kByteBos, 'h', 'i', kByteEos}), "hi");
}

// ---------------------------------------------------------------------------------------------
// The regex engine on the patterns tokenizers use.

std::vector<std::string> find_all(const std::string& pattern, const std::string& s) {
  const text::Regex re(pattern);
  const std::vector<char32_t> cps = text::decode_utf8(s);
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= cps.size()) {
    const auto m = re.find(cps, pos);
    if (m.first == text::Regex::npos) break;
    out.push_back(text::encode_utf8(cps, m.first, m.second));
    pos = m.second > m.first ? m.second : m.first + 1;
  }
  return out;
}

TEST(TokenizerRegex, Llama3PatternPieces) {
  const std::string p =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  EXPECT_EQ(find_all(p, "I'LL pay 12345 now!!\n\n  x   y"),
            (std::vector<std::string>{"I", "'LL", " pay", " ", "123", "45", " now", "!!\n\n", " ",
                                      " x", "  ", " y"}));
  EXPECT_EQ(find_all(p, "Grüße,\tмир"),
            (std::vector<std::string>{"Grüße", ",", "\tмир"}));  // a tab may lead a word
}

TEST(TokenizerRegex, ClassesLookaheadAndQuantifiers) {
  EXPECT_EQ(find_all("a{2,3}", "aaaaaaa"), (std::vector<std::string>{"aaa", "aaa"}));
  EXPECT_EQ(find_all("a+?", "aa"), (std::vector<std::string>{"a", "a"}));
  EXPECT_EQ(find_all("x(?=y)", "xxyx"), (std::vector<std::string>{"x"}));
  EXPECT_EQ(find_all("[a-c]+|\\d", "abcd12"), (std::vector<std::string>{"abc", "1", "2"}));
  EXPECT_EQ(find_all("\\p{Lu}\\p{Ll}*", "HelloWorld"),
            (std::vector<std::string>{"Hello", "World"}));
  EXPECT_EQ(find_all("\\p{N}", "١٢Ⅻ½"), (std::vector<std::string>{"١", "٢", "Ⅻ", "½"}));
  EXPECT_EQ(find_all("(?i:ab)", "AB aB"), (std::vector<std::string>{"AB", "aB"}));
  EXPECT_EQ(find_all("\\s", "\u00a0\u3000x"), (std::vector<std::string>{"\u00a0", "\u3000"}));
}

TEST(TokenizerRegex, RefusesWhatItCannotRun) {
  for (const char* p : {"(?<=a)b", "a++", "\\1", "(a*)*", "[[:alpha:]]", "(?P<n>a)", "\\p{Greek}",
                        "a{3,2}", "(", "[a", "\\"})
    EXPECT_THROW(text::Regex re(p), std::invalid_argument) << p;
}

TEST(TokenizerRegex, HostileBacktrackingStopsWithAnError) {
  const text::Regex re("(a|a)+b");
  const std::vector<char32_t> cps = text::decode_utf8(std::string(40, 'a'));
  EXPECT_THROW(re.find(cps, 0), std::runtime_error);
}

TEST(TokenizerText, NfcComposesAndReorders) {
  EXPECT_EQ(text::nfc("e\xCC\x81"), "\xC3\xA9");     // e + acute -> é
  EXPECT_EQ(text::nfc("A\xCC\x8A"), "\xC3\x85");     // A + ring -> Å
  EXPECT_EQ(text::nfc("\xE2\x84\xAB"), "\xC3\x85");  // Angstrom sign -> Å
  EXPECT_EQ(text::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo -> 각
  // q + dot below + dot above: already ordered, no composite; a + dot above + dot below -> ạ̇
  EXPECT_EQ(text::nfc("a\xCC\x87\xCC\xA3"), "\xE1\xBA\xA1\xCC\x87");
  EXPECT_EQ(text::nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(text::decode_utf8("\xFF"
                              "a"),
            (std::vector<char32_t>{0xFFFD, 'a'}));
}

// ---------------------------------------------------------------------------------------------
// Refusals: one line naming the file and the field.

template <typename F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    FAIL() << "expected an xattn::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const char* frag : fragments)
      EXPECT_NE(msg.find(frag), std::string::npos) << "message: " << msg << "\nmissing: " << frag;
  }
}

std::string tiny(const std::string& normalizer, const std::string& pre,
                 const std::string& model_extra = "") {
  return R"({"normalizer": )" + normalizer + R"(, "pre_tokenizer": )" + pre +
         R"(, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"])" +
         model_extra + "}}";
}

TEST(TokenizerRefusals, NameTheField) {
  auto parse = [](const std::string& t) { return parse_tokenizer_json(t, "tok.json"); };
  expect_error([&] { parse("{"); }, {"tok.json", "not valid JSON"});
  expect_error([&] { parse(tiny(R"({"type": "NFKC"})", "null")); },
               {"tok.json", "normalizer.type", "NFKC"});
  expect_error([&] { parse(tiny("null", R"({"type": "Whitespace"})")); },
               {"pre_tokenizer.type", "Whitespace"});
  expect_error(
      [&] {
        parse(tiny("null", R"j({"type": "Split", "pattern": {"Regex": "(?<=x)"},
                               "behavior": "Isolated", "invert": false})j"));
      },
      {"pre_tokenizer.pattern.Regex", "unsupported pattern"});
  expect_error([&] { parse(tiny("null", "null", R"(, "dropout": 0.1)")); }, {"model.dropout"});
  expect_error([&] { parse(R"({"model": {"type": "Unigram", "vocab": []}})"); },
               {"model.type", "Unigram"});
  expect_error(
      [&] { parse(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}})"); },
      {"model.merges[0]", "not in the vocabulary"});
  expect_error([&] { parse(R"({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})"); },
               {"model.vocab"});
  expect_error(
      [&] {
        parse(R"({"added_tokens": [{"id": 5, "content": "<x>", "single_word": true}],
                  "model": {"type": "BPE", "vocab": {}, "merges": []}})");
      },
      {"added_tokens[0].single_word"});
  expect_error([&] { load_tokenizer(kData); }, {"has no tokenizer", "tokenizer.json"});
}

TEST(Tokenizer, AddedTokensSplitFirstAndMergesApply) {
  const auto tok = parse_tokenizer_json(
      R"({"added_tokens": [{"id": 3, "content": "<s>", "special": true},
                           {"id": 4, "content": "<sep>", "special": false}],
          "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
          "post_processor": {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}]}})",
      "tok.json");
  EXPECT_EQ(tok->encode("ab<sep>aab<s>b", false), (std::vector<int64_t>{2, 4, 0, 2, 3, 1}));
  EXPECT_EQ(tok->encode("ab", true), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(tok->decode({3, 2, 4, 0}), "ab<sep>a");
}

}  // namespace
}  // namespace xattn::model
