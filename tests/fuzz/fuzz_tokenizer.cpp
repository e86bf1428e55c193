// libFuzzer target: tokenizer.json text through parse_tokenizer_json (what every command reads
// from a model folder to turn text into ids), then, when accepted, encoding a fixed multilingual
// text and the first bytes of the input itself, and decoding the ids. Accepted tokenizers must give
// ids inside their vocabulary; split patterns that backtrack too much are refused (kBadInput).
#include <algorithm>
#include <string>

#include "fuzz_common.h"
#include "xattn/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  static const std::string kText =
      "Hello, world! It's 2026-12-01: 1234567 tokens.\n\n  Grüße, мир, 中文, 😀👍🏽 "
      "e\xCC\x81\t\r\n"
      "<s></s><|endoftext|> \xFF\xFE";
  fuzz::expect_refusal_only([&] {
    const std::string json(reinterpret_cast<const char*>(data), size);
    const auto tok = model::parse_tokenizer_json(json, "tokenizer.json");
    for (const std::string& text : {kText, json.substr(0, 512)}) {
      for (bool special : {false, true}) {
        const std::vector<int64_t> ids = tok->encode(text, special);
        for (int64_t id : ids)
          fuzz::require(id >= 0 && id < tok->vocab_size(), "ids inside the vocabulary");
        (void)tok->decode(ids);
      }
    }
    (void)tok->describe();
  });
  return 0;
}
