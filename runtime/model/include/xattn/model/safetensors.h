// Reading and writing the safetensors format: an 8-byte little-endian header length N, N bytes of
// JSON ({"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__":
// {..}}), then the raw little-endian tensor bytes; offsets are relative to the end of the header.
// Files are memory-mapped; tensors are copied out on load, so the mapping can go away afterwards.
// Sharded checkpoints are read through model.safetensors.index.json ("weight_map": name -> file).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace xattn::model {

// Where one tensor lives inside a safetensors file.
struct TensorInfo {
  std::string dtype;           // safetensors name: "BF16", "F16", "F32", ...
  std::vector<int64_t> shape;  // [] for a scalar
  uint64_t begin = 0;          // byte offsets relative to the data section
  uint64_t end = 0;
};

// The validated header of a safetensors file: its tensors, its metadata and where the data section
// starts (8 + header length).
struct SafetensorsIndex {
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;
};

// Validates a whole safetensors file image of `size` bytes: the header length, the JSON, every
// entry's dtype, shape and offsets, and the layout (sorted by offset, the tensors cover the data
// section exactly: no overlap, no gap, no trailing bytes). xattn::Error kBadInput naming `path`
// and the tensors otherwise.
SafetensorsIndex parse_safetensors(const uint8_t* bytes, uint64_t size, const std::string& path);

// One memory-mapped safetensors file. Construction validates the whole header
// (parse_safetensors). Errors name the file and the tensor.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A copy of the tensor as stored (CPU, its own dtype). Only floating dtypes (BF16, F16, F32,
  // F64) and integer dtypes I64/I32/U8 are loadable; others throw naming the tensor.
  at::Tensor load(const std::string& name) const;

 private:
  std::string path_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  const uint8_t* data_ = nullptr;  // start of the data section inside the mapping
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
};

// All tensors of a checkpoint folder: model.safetensors, or the shards named by
// model.safetensors.index.json, or (when neither exists) every *.safetensors file in the folder.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  // Throws naming the tensor and the files searched when it is missing.
  at::Tensor load(const std::string& name) const;
  // Checks the shape without loading (the tensor must exist); the error names the tensor, both
  // shapes and `what_sets_it`.
  const TensorInfo& check_shape(const std::string& name, const std::vector<int64_t>& shape,
                                const std::string& what_sets_it) const;
  // Loads and checks the shape; the error names the tensor, both shapes and `what_sets_it`.
  at::Tensor load_checked(const std::string& name, const std::vector<int64_t>& shape,
                          const std::string& what_sets_it) const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
  std::string searched_;                 // file names, for error messages
};

// Safetensors dtype name of a tensor dtype ("BF16", "F16", "F32", "F64", "I64", "I32", "U8").
std::string safetensors_dtype(at::ScalarType type);

// Writes tensors (any device; copied to CPU, made contiguous) to `path` atomically (temp file +
// rename). Refuses to replace an existing file unless `overwrite`.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {},
                       bool overwrite = false);

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace xattn::model
