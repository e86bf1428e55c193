// The HDF5 file that `xattn estimate --out` writes: per layer the antidiagonal block scores, the
// selected block mask, the thresholds used and the per-head density. docs/capture-format.md
// ("Estimate output") is the specification.
//
// File layout (format "xattn-estimate", version 1.1; 1.1 adds selection_rule):
//   /                             attributes: format, format_version [major, minor],
//                                 source_capture, model_name, source, description, heads_q,
//                                 stride, block_size, causal, optional scale, len_q [batch],
//                                 len_k [batch], has_block_scores, selection_rule
//   /layers/<index>/mask          uint8 0/1 [batch, heads_q, nQB, nKB]
//   /layers/<index>/block_scores  float32 [batch, heads_q, nQB, nKB] (when has_block_scores)
//   /layers/<index>/thresholds    float64 [heads_q]
//   /layers/<index>/density       float64 [heads_q]: kept / allowed blocks over the batch
// Same atomic-write and no-overwrite rules as the capture writer (see capture.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "xattn/io/capture.h"

namespace xattn::io {

inline constexpr const char* kEstimateFormatName = "xattn-estimate";
inline constexpr int kEstimateFormatMajor = 1;
inline constexpr int kEstimateFormatMinor = 1;

struct EstimateFileInfo {
  std::string source_capture;  // path of the capture the masks come from
  std::string model_name;      // copied from the capture
  std::string source;          // copied from the capture, so "synthetic" stays visible
  std::string description;
  int64_t heads_q = 0;
  int64_t stride = 8;
  int64_t block_size = 128;
  bool causal = true;
  std::optional<double> scale;  // the scoring scale, when not the default 1 / (sqrt(d) * S)
  std::vector<int64_t> len_q;   // per batch item, as in the capture
  std::vector<int64_t> len_k;
  bool has_block_scores = true;  // false: masks only (smaller files)
  // The selection rule of the masks: "smallest" or "published" (docs/selection-rules.md);
  // files of version 1.0 have none and read as "smallest".
  std::string selection_rule = "smallest";
  // Filled by the reader.
  int format_major = kEstimateFormatMajor;
  int format_minor = kEstimateFormatMinor;

  int64_t batch() const { return static_cast<int64_t>(len_q.size()); }
};

// One layer. Shapes: [batch, heads_q, nQB, nKB] for block_scores and mask, [heads_q] for
// thresholds and density. nQB and nKB must be the same in every layer of a file.
struct EstimateLayer {
  at::Tensor block_scores;  // float32; undefined when the file has none
  at::Tensor mask;          // bool when read; bool or uint8 (0/1) when written
  at::Tensor thresholds;    // float64 when read; any floating dtype when written
  at::Tensor density;       // float64 when read; any floating dtype when written
};

// Atomic writer (temporary file + rename on commit()); refuses an existing path unless
// options.overwrite ("pass --force"). Tensors may live on any device; they are copied to CPU.
class EstimateWriter {
 public:
  EstimateWriter(const std::string& path, EstimateFileInfo info, OutputOptions options = {});
  ~EstimateWriter();
  EstimateWriter(const EstimateWriter&) = delete;
  EstimateWriter& operator=(const EstimateWriter&) = delete;

  // Each layer index at most once. block_scores must be defined iff info.has_block_scores.
  void write_layer(int64_t layer_index, const EstimateLayer& layer);
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads an estimate file back, validating it like CaptureReader (kBadInput on bad files).
class EstimateReader {
 public:
  explicit EstimateReader(const std::string& path);
  ~EstimateReader();
  EstimateReader(EstimateReader&&) noexcept;
  EstimateReader& operator=(EstimateReader&&) noexcept;

  const EstimateFileInfo& info() const;
  const std::vector<int64_t>& layer_indices() const;
  EstimateLayer read_layer(int64_t layer_index) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xattn::io
