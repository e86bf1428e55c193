// Model inputs: token id files and the byte-level tokenizer of the project's bundled models.
//
// Byte-level convention (config.json "xattn_byte_level": true): ids 0..255 are the bytes of the
// UTF-8 text, 256 = <bos>, 257 = <eos>, 258 = <pad>; prompts start with <bos>.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xattn::model {

constexpr int64_t kByteBos = 256;
constexpr int64_t kByteEos = 257;
constexpr int64_t kBytePad = 258;

// <bos> (when add_bos) followed by the bytes of `text`.
std::vector<int64_t> byte_encode(const std::string& text, bool add_bos = true);
// Bytes back to text; special ids are dropped.
std::string byte_decode(const std::vector<int64_t>& ids);

// Token ids from a file: HDF5 (*.h5, *.hdf5; an integer dataset, 1-D or [1, len], named by
// `dataset` or else the only dataset / "input_ids" / "tokens") or plain text of integers separated
// by whitespace or commas. Errors name the file, dataset or the offending word.
std::vector<int64_t> read_token_ids(const std::string& path, const std::string& dataset = "");

// The whole file as bytes.
std::string read_text_file(const std::string& path);

}  // namespace xattn::model
