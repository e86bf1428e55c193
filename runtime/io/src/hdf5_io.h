// Shared plumbing of the runtime's HDF5 formats: quiet error handling that keeps HDF5's own
// diagnosis for our messages, typed attribute access with validation, the element types, and
// atomic output files (temporary file + rename).
#pragma once

#include <H5Cpp.h>

#include "xattn/error.h"

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace xattn::io::h5io {

// Replaces HDF5's automatic error printing with a handler that remembers the innermost message
// of the latest failure (e.g. "truncated file: eof = ..."). Also clears that message.
void quiet_errors();
// The remembered message, or "" when none.
std::string last_error();

// IEEE half precision, little-endian (numpy float16): F32LE with its bit fields redefined.
H5::FloatType float16_type();
// The file/memory type of an element type; bfloat16 maps to uint16 (its bit pattern).
H5::DataType file_type_of(const std::string& dtype_name);
// True when `type` is the file encoding of `dtype_name` ("float32", "float16", "bfloat16").
bool type_matches(const H5::DataType& type, const std::string& dtype_name);
// Short human description of a stored type, for messages.
std::string describe_type(const H5::DataType& type);

void write_string(H5::H5Object& obj, const std::string& name, const std::string& value);
void write_int(H5::H5Object& obj, const std::string& name, int64_t value);
void write_ints(H5::H5Object& obj, const std::string& name, const std::vector<int64_t>& values);
void write_double(H5::H5Object& obj, const std::string& name, double value);
void write_bool(H5::H5Object& obj, const std::string& name, bool value);

// Reads attributes of one object, throwing xattn::Error(kBadInput, "<file>: <where>attribute
// '<name>' ...") when one is missing or has the wrong type or size.
class AttributeReader {
 public:
  AttributeReader(const H5::H5Object& obj, std::string file, std::string where);
  bool has(const std::string& name) const;
  std::string string(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  std::vector<int64_t> integers(const std::string& name) const;
  double real(const std::string& name) const;
  bool boolean(const std::string& name) const;

 private:
  H5::Attribute open(const std::string& name, H5T_class_t expected_class, const char* kind) const;
  [[noreturn]] void fail(const std::string& name, const std::string& what) const;
  const H5::H5Object& obj_;
  std::string file_;
  std::string where_;
};

// Dimensions of a dataset.
std::vector<int64_t> dims_of(const H5::DataSet& dataset);
std::string format_dims(const std::vector<int64_t>& dims);

// Creates a dataset, chunked and compressed (shuffle + deflate) when deflate_level > 0, with one
// chunk per leading index pair [1, 1, ...] for rank >= 3. No timestamps.
H5::DataSet create_dataset(H5::Group& group, const std::string& name, const H5::DataType& type,
                           const std::vector<int64_t>& dims, int deflate_level);

// Creates a group without timestamps (files are byte-reproducible).
H5::Group create_group(H5::Group& parent, const std::string& name);

// An output file written under a temporary name in the destination folder and renamed into
// place by commit(); the destructor removes the temporary file when commit() was not reached.
class AtomicOutput {
 public:
  // Throws kIo when `path` exists and !overwrite ("pass --force") or its folder is missing.
  AtomicOutput(std::string path, bool overwrite);
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }
  // The temporary file must be closed. Throws kIo on failure (the temporary file is removed).
  void commit();

 private:
  std::string path_;
  std::string temp_path_;
  bool overwrite_;
  bool committed_ = false;
};

// The shared part of the capture and estimate writers: an HDF5 file written through a temporary
// file, one group per layer, each layer written once, committed once. Failures are xattn::Error
// kIo naming the final path and HDF5's innermost cause.
class LayerFileWriter {
 public:
  // Throws like AtomicOutput, or kIo when the temporary HDF5 file cannot be created.
  LayerFileWriter(const std::string& path, bool overwrite);
  ~LayerFileWriter();
  LayerFileWriter(const LayerFileWriter&) = delete;
  LayerFileWriter& operator=(const LayerFileWriter&) = delete;

  const std::string& path() const { return output_.path(); }
  H5::H5File& file() { return *file_; }
  // kInvalidArgument when already committed or when the layer was written before.
  void check_new_layer(int64_t layer_index) const;
  void mark_written(int64_t layer_index) { written_.insert(layer_index); }
  Error failure(const H5::Exception& e) const;
  // Closes the file and moves it to path(); needs at least one layer; once.
  void commit();

 private:
  AtomicOutput output_;  // declared before the file: the file is closed before removal
  std::unique_ptr<H5::H5File> file_;
  std::set<int64_t> written_;
  bool committed_ = false;
};

// Parses a decimal layer group name; -1 when it is not one.
int64_t parse_index(const std::string& name);

}  // namespace xattn::io::h5io
