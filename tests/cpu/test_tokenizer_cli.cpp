// Text in, everywhere: a tiny random Llama with the trained Llama-3-style tokenizer.json of
// tests/data/tokenizers/llama3 (656 tokens) through calibrate --data text, --data-format ids,
// generate --prompt, capture --text and eval niah; and the refusals when the folder has no
// tokenizer. Tiny shapes: each command runs in well under a second.
#include <gtest/gtest.h>

#include "cli_runner.h"
#include "test_model_util.h"
#include "xattn/io/paths.h"
#include "xattn/model/niah.h"
#include "xattn/model/tokenizer.h"
#include "xattn/model/tokens.h"

namespace xattn::model {
namespace {

using xattn::testing::CliResult;

const std::string kSource = XATTN_SOURCE_DIR;
const std::string kTokenizer = kSource + "/tests/data/tokenizers/llama3";

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A random-weight Llama whose vocabulary is the tokenizer's; with_tokenizer false leaves the
// tokenizer files out.
std::string tiny_model(testing::TempDir& tmp, bool with_tokenizer) {
  const std::string dir = tmp.file(with_tokenizer ? "model" : "bare");
  testing::TinySpec spec;
  spec.vocab = 656;
  testing::write_tiny_checkpoint(dir, spec);
  if (with_tokenizer)
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      testing::write_text(dir + "/" + f, read_text_file(kTokenizer + "/" + f));
  return dir;
}

TEST(TokenizerCli, TextInEveryCommand) {
  testing::TempDir tmp;
  const std::string model = tiny_model(tmp, true);
  const std::string text = kSource + "/examples/data/calibration.txt";

  const CliResult gen =
      xattn::testing::run_xattn("generate --model " + model + " --prompt 'Hello world' --tokens 3");
  ASSERT_EQ(gen.code, 0) << gen.out;
  const size_t prompt = load_tokenizer(model)->encode("Hello world", true).size();
  EXPECT_TRUE(has(gen.out, "prompt " + std::to_string(prompt) + " tokens")) << gen.out;
  EXPECT_TRUE(has(gen.out, "generated text: \"")) << gen.out;

  const CliResult cap = xattn::testing::run_xattn("capture --model " + model + " --text " + text +
                                                  " --max-len 64 --out " + tmp.file("c.h5"));
  ASSERT_EQ(cap.code, 0) << cap.out;

  const CliResult niah = xattn::testing::run_xattn(
      "eval niah --model " + model + " --haystack " + kSource +
      "/examples/data/haystack.txt --lengths 300 --depths 0.5 --samples 1 --threshold 1.0");
  ASSERT_EQ(niah.code, 0) << niah.out;
  EXPECT_TRUE(has(niah.out, "passkey accuracy")) << niah.out;

  const std::string calibrate = "calibrate --model " + model + " --sample-len 256 --samples 3 " +
                                "--frontier-points 0 --force --out ";
  const CliResult cal = xattn::testing::run_xattn(calibrate + tmp.file("p.h5") + " --data " + text);
  ASSERT_EQ(cal.code, 0) << cal.out;
  // Pre-tokenized: the same text as ids.
  const auto tok = load_tokenizer(model);
  std::string ids;
  for (int64_t id : tok->encode(read_text_file(text), false)) ids += std::to_string(id) + " ";
  testing::write_text(tmp.file("ids.txt"), ids);
  const CliResult cal_ids = xattn::testing::run_xattn(calibrate + tmp.file("q.h5") + " --data " +
                                                      tmp.file("ids.txt") + " --data-format ids");
  ASSERT_EQ(cal_ids.code, 0) << cal_ids.out;
  const CliResult bad_format = xattn::testing::run_xattn(calibrate + tmp.file("r.h5") + " --data " +
                                                         text + " --data-format bytes");
  EXPECT_EQ(bad_format.code, 2) << bad_format.out;
  EXPECT_TRUE(has(bad_format.out, "--data-format")) << bad_format.out;
}

TEST(TokenizerCli, FolderWithoutTokenizerRefusesText) {
  testing::TempDir tmp;
  const std::string model = tiny_model(tmp, false);
  const CliResult gen =
      xattn::testing::run_xattn("generate --model " + model + " --prompt hi --tokens 1");
  EXPECT_EQ(gen.code, 3) << gen.out;
  EXPECT_TRUE(has(gen.out, "has no tokenizer")) << gen.out;
  const CliResult cal = xattn::testing::run_xattn(
      "calibrate --model " + model + " --data " + kSource +
      "/examples/data/calibration.txt --sample-len 256 --samples 2 --out " + tmp.file("p.h5"));
  EXPECT_EQ(cal.code, 3) << cal.out;
  EXPECT_TRUE(has(cal.out, "--data-format ids") || has(cal.out, "token ids")) << cal.out;
}

TEST(TokenizerNiah, PromptsHaveTheLengthAndTheNeedleOnTokenBoundaries) {
  const auto tok = load_tokenizer(kTokenizer);
  const std::vector<int64_t> hay =
      tok->encode(read_text_file(kSource + "/examples/data/haystack.txt"), false);
  for (double depth : {0.0, 0.5, 1.0}) {
    const NiahPrompt p = make_niah_prompt(*tok, hay, 700, depth, 0, 7);
    ASSERT_EQ(p.tokens.size(), 700u);
    EXPECT_EQ(p.tokens[0], *tok->bos_id);
    const std::string text = tok->decode(p.tokens);
    EXPECT_TRUE(has(text, "The pass key is " + p.key + ". Remember it.")) << text;
    EXPECT_TRUE(has(text.substr(text.size() - 40), "What is the pass key? The pass key is"));
    // Same seed, same prompt.
    EXPECT_EQ(make_niah_prompt(*tok, hay, 700, depth, 0, 7).tokens, p.tokens);
  }
  // Byte-level: exactly the prompts of the byte-level builder.
  const auto bytes = make_byte_tokenizer();
  const std::string haystack = read_text_file(kSource + "/examples/data/haystack.txt");
  EXPECT_EQ(make_niah_prompt(*bytes, bytes->encode(haystack, false), 512, 0.5, 1, 3).tokens,
            make_niah_prompt(haystack, 512, 0.5, 1, 3).tokens);
}

}  // namespace
}  // namespace xattn::model
