// The HDF5 capture format shared by every xattn tool: per layer, post-RoPE q, k and optionally v
// of one or more prompts, plus the attributes needed to interpret them. docs/capture-format.md
// is the full specification; this header is its C++ reader and writer.
//
// File layout (format "xattn-capture", version 1.0):
//   /                      attributes: format, format_version [major, minor], model_name, source,
//                          description, dtype, num_layers, heads_q, heads_kv, head_dim, causal,
//                          has_v, len_q [batch], len_k [batch], position_offset [batch],
//                          optional video_frames, video_height, video_width
//   /layers/<index>/q      [batch, heads_q, padded_len_q, head_dim]
//   /layers/<index>/k      [batch, heads_kv, padded_len_k, head_dim]
//   /layers/<index>/v      like k (present in every layer or in none)
// Element types: float32 (IEEE F32LE), float16 (IEEE half, F16LE built from F32LE by setting its
// bit fields; h5py reads it as numpy float16), bfloat16 (uint16 holding the bf16 bits, dataset
// attribute dtype = "bfloat16").
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace xattn::io {

inline constexpr const char* kCaptureFormatName = "xattn-capture";
inline constexpr int kCaptureFormatMajor = 1;
inline constexpr int kCaptureFormatMinor = 0;

// Video token grid: tokens are laid out frame by frame, row by row (frames * height * width).
struct VideoShape {
  int64_t frames = 0;
  int64_t height = 0;
  int64_t width = 0;
};

// Everything a capture says about its tensors, besides the tensors.
struct CaptureInfo {
  std::string model_name;            // e.g. "llama-3.1-8b" or "synthetic-structured"
  std::string source;                // "model", "synthetic" or "python-hook"
  std::string description;           // free-form; synthetic captures list each head's structure
  at::ScalarType dtype = at::kHalf;  // at::kFloat, at::kHalf or at::kBFloat16
  int64_t num_layers = 0;            // layers of the model; the file may hold a subset of them
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t head_dim = 0;
  bool causal = true;  // bottom-right aligned when len_q < len_k
  bool has_v = false;
  // Per batch item: valid lengths (shorter items are zero-padded at the end of the token axis)
  // and the absolute position of key 0 (query i sits at position_offset + len_k - len_q + i).
  std::vector<int64_t> len_q;
  std::vector<int64_t> len_k;
  std::vector<int64_t> position_offset;  // empty when writing means all zeros
  // Token-axis length of the datasets; 0 when writing means max(len_q) / max(len_k).
  int64_t padded_len_q = 0;
  int64_t padded_len_k = 0;
  std::optional<VideoShape> video;
  // Filled by the reader: the version found in the file.
  int format_major = kCaptureFormatMajor;
  int format_minor = kCaptureFormatMinor;

  int64_t batch() const { return static_cast<int64_t>(len_q.size()); }
};

// One layer's tensors, CPU, contiguous, in the stored dtype.
// q [batch, heads_q, padded_len_q, head_dim]; k, v [batch, heads_kv, padded_len_k, head_dim];
// v is undefined when the capture has none.
struct CaptureLayer {
  at::Tensor q;
  at::Tensor k;
  at::Tensor v;
};

// Name of a dtype as the files spell it: "float32", "float16", "bfloat16".
const char* capture_dtype_name(at::ScalarType dtype);
// Inverse of capture_dtype_name; throws xattn::Error(kInvalidArgument) for other names.
at::ScalarType capture_dtype_from_name(const std::string& name);

// Checks the attributes for consistency (positive sizes, heads_q % heads_kv == 0, one length per
// item, 1 <= len_q <= len_k <= padded lengths, known source and dtype). Throws
// xattn::Error(kInvalidArgument) naming the field; `what` prefixes the message.
void validate_capture_info(const CaptureInfo& info, const std::string& what);

// Opens a capture and validates all metadata (format, version, attributes, every layer's dataset
// shapes and types) before returning; tensors are read on demand. A missing, malformed or
// truncated file throws xattn::Error(kBadInput, "<path>: <what is wrong>").
class CaptureReader {
 public:
  explicit CaptureReader(const std::string& path);
  ~CaptureReader();
  CaptureReader(CaptureReader&&) noexcept;
  CaptureReader& operator=(CaptureReader&&) noexcept;

  const std::string& path() const;
  const CaptureInfo& info() const;
  // Layer indices present in the file, ascending.
  const std::vector<int64_t>& layer_indices() const;
  bool has_layer(int64_t layer_index) const;
  // Reads one layer; throws kInvalidArgument for an index the file does not hold.
  CaptureLayer read_layer(int64_t layer_index) const;
  // Reads one batch item of one layer, without padding: q [1, heads_q, len_q[item], head_dim],
  // k and v [1, heads_kv, len_k[item], head_dim]. Reads only that part of the file.
  CaptureLayer read_layer_item(int64_t layer_index, int64_t item) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct OutputOptions {
  bool overwrite = false;  // replace an existing file (the CLI's --force)
  int deflate_level = 0;   // 0: uncompressed; 1..9: shuffle + gzip (any HDF5 reader, h5py too)
};

// Writes a capture atomically: everything goes to a temporary file in the destination folder,
// which commit() closes and renames over `path`. Without commit() (an exception, an early
// return) the temporary file is removed and any existing file at `path` is left untouched.
// An existing `path` is refused at construction unless options.overwrite is set.
class CaptureWriter {
 public:
  // `info` is validated (validate_capture_info); padded lengths and position offsets default
  // as documented on CaptureInfo.
  CaptureWriter(const std::string& path, CaptureInfo info, OutputOptions options = {});
  ~CaptureWriter();
  CaptureWriter(const CaptureWriter&) = delete;
  CaptureWriter& operator=(const CaptureWriter&) = delete;

  const CaptureInfo& info() const;
  // Tensors must match info exactly: dtype, [batch, heads, padded_len, head_dim]; v defined iff
  // info.has_v. Any device and layout (copied to contiguous CPU). Each index at most once,
  // 0 <= layer_index < info.num_layers.
  void write_layer(int64_t layer_index, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v = at::Tensor());
  // Closes the file and moves it into place; at least one layer must have been written.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xattn::io
