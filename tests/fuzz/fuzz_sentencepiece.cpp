// libFuzzer target: tokenizer.model bytes through parse_sentencepiece (the SentencePiece model of
// Llama-2 style folders; a protobuf message read by the project), then, when accepted, encoding a
// fixed multilingual text and decoding the ids. Accepted models must give ids inside their
// vocabulary.
#include <string>

#include "fuzz_common.h"
#include "xattn/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xattn;
  static const std::string kText =
      "  Hello, world! It's 2026-12-01:  1234567 tokens.\n\n Grüße, мир, 中文, 😀👍🏽 "
      "e\xCC\x81\t"
      "\xFF\xFE ";
  fuzz::expect_refusal_only([&] {
    const std::string bytes(reinterpret_cast<const char*>(data), size);
    const auto tok = model::parse_sentencepiece(bytes, "tokenizer.model");
    for (bool special : {false, true}) {
      const std::vector<int64_t> ids = tok->encode(kText, special);
      for (int64_t id : ids)
        fuzz::require(id >= 0 && id < tok->vocab_size(), "ids inside the vocabulary");
      (void)tok->decode(ids);
    }
    (void)tok->describe();
  });
  return 0;
}
