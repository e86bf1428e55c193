// Tokenizers of Hugging Face model folders: text -> token ids -> text.
//
//   auto tok = xattn::model::load_tokenizer("path/to/model");      // the folder's own tokenizer
//   std::vector<int64_t> ids = tok->encode("It is a truth", /*add_special=*/true);  // BOS if any
//   std::string text = tok->decode(ids);                             // special tokens dropped
//
// What a folder holds decides the kind (first match wins):
//   config.json with "xattn_byte_level": true   bytes 0..255, <bos> 256 (the bundled models);
//   tokenizer.json                              Hugging Face tokenizers: BPE with the ByteLevel
//                                               pre-tokenizer and Split regex (Llama-3, Qwen2/3,
//                                               GPT-2) or with Metaspace / byte fallback
//                                               (Llama-2, Mistral); added tokens; the normalizers
//                                               Prepend, Replace, NFC, Strip and Sequence;
//   tokenizer.model                             SentencePiece (BPE or unigram).
// BOS/EOS come from tokenizer_config.json ("bos_token", "eos_token", "add_bos_token",
// "add_eos_token"), else from tokenizer.json's post-processor, else from config.json /
// generation_config.json ids. Anything else in a tokenizer file is refused with an xattn::Error
// (kBadInput) naming the file and the field: docs/runner.md lists what is supported.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace xattn::model {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`; with add_special the BOS (and EOS) the tokenizer adds to a sequence.
  virtual std::vector<int64_t> encode(const std::string& text, bool add_special) const = 0;
  // Text of `ids`; special tokens (BOS, EOS, pad, ...) are left out, unknown ids skipped.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // Number of ids the tokenizer knows (vocabulary plus added tokens).
  virtual int64_t vocab_size() const = 0;
  // One line for logs, e.g. "tokenizer.json BPE, ByteLevel, 128256 tokens".
  virtual std::string describe() const = 0;

  std::optional<int64_t> bos_id;
  std::optional<int64_t> eos_id;
  bool add_bos = false;     // encode(text, true) starts with bos_id
  bool add_eos = false;     // encode(text, true) ends with eos_id
  bool byte_level = false;  // the project's byte-level convention (xattn_byte_level)
};

// The tokenizer of a model folder (see the table above). Throws xattn::Error when the folder has
// none (kBadInput, naming the files looked for) or when a file holds something unsupported.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

// A tokenizer.json given as text (tests and the fuzz target); `source` names it in errors.
// `tokenizer_config` is the text of tokenizer_config.json, or empty.
std::unique_ptr<Tokenizer> parse_tokenizer_json(const std::string& json_text,
                                                const std::string& source,
                                                const std::string& tokenizer_config = "");

// A SentencePiece tokenizer.model file (its bytes for parse_sentencepiece); `tokenizer_config`
// as above. Read by the project (libsentencepiece's bundled protobuf clashes with LibTorch's).
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path,
                                              const std::string& tokenizer_config = "");
std::unique_ptr<Tokenizer> parse_sentencepiece(const std::string& bytes, const std::string& source,
                                               const std::string& tokenizer_config = "");

// The byte-level tokenizer of the bundled models (xattn/model/tokens.h).
std::unique_ptr<Tokenizer> make_byte_tokenizer();

}  // namespace xattn::model
