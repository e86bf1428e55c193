// Synthetic captures: q, k, v built so that exact attention shows the structures seen in real LLM
// attention, one dominant structure per query head (plus a weaker attention sink), in a
// deterministic function of the seed. They stand in for model captures until a trained model
// exists and are labelled "synthetic" everywhere (source attribute, model name, description).
//
// How the structures are planted (logits = q.k / sqrt(head_dim)); each uses its own key feature,
// so one key tensor per KV head serves every structure and the queries pick theirs:
//   sink       key 0 (and, at 3/4 strength, keys 1..7) carry a sink feature; sink heads give
//              it +12.
//   local      keys carry their position as base-64 digits; local queries weight them so the
//              logit rises 1/16 per token toward the query: with the causal mask, an exponential
//              band (about 98% of the non-sink mass within the last 64 keys).
//   stripes    a few runs of 1..4 key positions per KV head carry a stripe feature (+11 for
//              stripe heads): vertical lines every later query attends to.
//   slash      keys carry rotary pairs (cos wj, sin wj) with high random frequencies; a slash
//              head's query i is the sum of the codes of positions i - D .. i - D - 3, so
//              q_i.k_j peaks on the four diagonals j = i - D - u (u = 0..3).
//   retrieval  a needle span early in each item carries a needle feature; the last eighth of the
//              retrieval head's queries give it +10 (earlier queries behave like a local head).
//   diffuse    broad attention: only noise logits (std 1) and a mild sink; a dense head.
// Every head also sees small random "content" logits (std 0.5).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "xattn/io/capture.h"

namespace xattn::runtime {

struct SyntheticOptions {
  int64_t num_layers = 2;
  int64_t heads_q = 8;
  int64_t heads_kv = 2;
  int64_t head_dim = 64;  // >= 32, even
  int64_t len = 2048;     // tokens per item (len_q = len_k, causal)
  int64_t batch = 1;
  uint64_t seed = 0;
  at::ScalarType dtype = at::kHalf;
  bool with_v = true;
  // Optional valid length per item (<= len); shorter items are zero-padded to len.
  std::vector<int64_t> item_lengths;
};

enum class PlantedStructure { kSink, kLocal, kStripes, kSlash, kRetrieval, kDiffuse };
const char* structure_name(PlantedStructure structure);

// Where everything was planted, for tests and the description attribute.
struct SyntheticLayout {
  std::vector<int64_t> item_lengths;                     // [batch]
  std::vector<std::vector<PlantedStructure>> structure;  // [layer][query head]
  std::vector<std::vector<int64_t>> slash_offset;        // [layer][query head]; -1 if none
  int64_t slash_width = 4;                               // slash keys: i - offset - (0..width-1)
  int64_t sink_span = 8;                                 // keys 0..sink_span-1 carry the sink
  std::vector<std::vector<std::vector<int64_t>>> stripe_positions;  // [layer][kv head], sorted
  std::vector<int64_t> needle_begin;                                // [batch]
  int64_t needle_length = 0;
  std::vector<int64_t> retrieval_query_begin;  // [batch]: first query aimed at needle
};

// Checks the options (throws xattn::Error(kInvalidArgument) naming the bad one).
void validate_synthetic_options(const SyntheticOptions& options);
SyntheticLayout synthetic_layout(const SyntheticOptions& options);
// The capture attributes: source "synthetic", model "synthetic-structured", a description that
// lists each layer's head structures, causal, len_q = len_k = item lengths.
io::CaptureInfo synthetic_capture_info(const SyntheticOptions& options,
                                       const SyntheticLayout& layout);
// One layer's tensors in options.dtype (v undefined unless options.with_v).
io::CaptureLayer make_synthetic_layer(const SyntheticOptions& options,
                                      const SyntheticLayout& layout, int64_t layer_index);
// Generates every layer and writes the capture atomically (see io::CaptureWriter).
void write_synthetic_capture(const std::string& path, const SyntheticOptions& options,
                             const io::OutputOptions& output);

}  // namespace xattn::runtime
