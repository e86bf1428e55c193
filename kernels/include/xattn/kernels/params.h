// Parameter structs of the three kernel families (scoring, selection, attention).
// One plain struct per family, passed by value; the CPU reference and the CUDA kernels take the
// same struct, so tests can fill it once and run both.
//
// Sliding window: every family reads problem.window (0: none; causal only). Query q may attend
// key k iff k <= q and q - k < window (absolute positions, bottom-right aligned). Scoring and
// selection treat the key blocks before the window of a query block's first query as not allowed
// (zero mass, never kept; the sink is not forced there, the diagonal always is); attention masks
// the window edge token by token inside the blocks it visits.
#pragma once

#include <cstdint>

#include "xattn/kernels/problem.h"

namespace xattn::kernels {

// Which CUDA kernel of a family runs (the CPU reference ignores it). kAuto takes the sm_90a
// kernel (warpgroup MMA) on compute capability 9.0 when it supports the parameters, else the
// sm_80 kernel (mma.sync), which runs on every GPU the project builds for.
enum class CudaKernel : int32_t { kAuto = 0, kSm80 = 1, kSm90 = 2 };

// How the sm_90a scoring kernel brings q and k into shared memory. kAuto (what to use): TMA where
// it can load the operands, cp.async gathers where it cannot (varlen, lengths that are not
// multiples of the stride). kGather forces the gathers (tests, A/B timings).
enum class Sm90ScoringLoads : int32_t { kAuto = 0, kGather = 1 };

// Antidiagonal block scoring (XATTENTION.md §1).
// Output block_scores [batch, heads_q, nQB, nKB] float32, contiguous, nQB = ceil(max_len_q / bs),
// nKB = ceil(max_len_k / bs). Entry (i, j) is the softmax mass of the strided score matrix that
// falls in query block i and key block j; a full row sums to the number of strided rows of the
// block. Entries of blocks that are not allowed (causal future, beyond a sequence's length) are 0.
// With a sliding window the softmax runs over every causal strided key and the blocks before the
// window are then set to 0, so a windowed row sums to less than the number of strided rows.
struct ScoringParams {
  Problem problem;
  TensorView q;
  TensorView k;
  int32_t stride = 8;        // S: divides block_size
  int32_t block_size = 128;  // Bs
  float scale = 0.f;         // applied to the antidiagonal sums; usually 1 / (sqrt(d) * S)
  int64_t chunk_len_q = 0;   // queries per chunk (0: implementation default); bounds scratch memory
  float* block_scores = nullptr;
  CudaKernel kernel = CudaKernel::kAuto;
  Sm90ScoringLoads sm90_loads = Sm90ScoringLoads::kAuto;
};

// Which blocks a threshold keeps (docs/selection-rules.md).
enum class SelectionRule : int32_t {
  // The forced blocks, then the fewest other blocks that reach tau of the row's mass.
  kSmallestSet = 0,
  // What the published code (mit-han-lab/x-attention, find_blocks_chunked, one chunk) keeps in
  // causal mode: only the diagonal's mass counts as forced, the sink competes like any block and
  // is kept anyway, and one block more than the smallest set reaching tau. In non-causal mode it
  // is kSmallestSet (the published code forces nothing there: keep_sink = keep_diagonal = false).
  kPublished = 1,
};

inline const char* selection_rule_name(SelectionRule rule) {
  switch (rule) {
    case SelectionRule::kSmallestSet: return "smallest";
    case SelectionRule::kPublished: return "published";
  }
  return "unknown";
}

// Block selection with one threshold per query head (XATTENTION.md §2).
// Per (batch, head, query block), rule kSmallestSet: forced blocks first (key block 0 and the
// diagonal block when keep_sink / keep_diagonal), then the remaining allowed blocks by descending
// score (ties: lower index first) while the taken mass is below threshold * row total; the
// crossing block is kept. Rule kPublished, causal (needs keep_sink and keep_diagonal): the
// diagonal's mass first, then the other allowed blocks (the sink among them) in the same order
// while the taken mass is below threshold * row total, plus the next one in that order when
// threshold * row total > 0; the sink is kept in any case.
// Under both rules threshold >= 1 keeps every allowed block; threshold <= 0 keeps only forced
// blocks.
// dense_last_query_block (causal only): each sequence's last query block keeps every allowed
// block. Its last row produces the first generated token, and a needle that only that row
// attends to carries too little of the block's antidiagonal mass to be selected.
struct SelectionParams {
  Problem problem;
  int32_t block_size = 128;
  const float* block_scores = nullptr;  // [batch, heads_q, nQB, nKB]
  const float* thresholds = nullptr;    // [heads_q]
  bool keep_sink = true;
  bool keep_diagonal = true;
  bool dense_last_query_block = false;
  SelectionRule rule = SelectionRule::kSmallestSet;
  uint8_t* mask = nullptr;              // [batch, heads_q, nQB, nKB] 0/1, optional
  int32_t* kv_block_count = nullptr;    // [batch, heads_q, nQB]
  int32_t* kv_block_index = nullptr;    // [batch, heads_q, nQB, nKB], first `count` valid, ascending
};

// Block-sparse (or dense) attention forward (XATTENTION.md §3).
// With kv_block_count == nullptr every allowed key block is visited (dense attention).
// Output out [batch, heads_q, len_q, head_dim] in out.dtype, lse [batch, heads_q, max_len_q]
// float32 (natural log of the softmax denominator of the scaled logits; -inf for a row that sees
// no key, whose output is 0).

struct AttentionParams {
  Problem problem;
  TensorView q;
  TensorView k;
  TensorView v;
  float scale = 0.f;  // usually 1 / sqrt(d)
  int32_t block_size = 128;
  const int32_t* kv_block_count = nullptr;  // [batch, heads_q, nQB] or null (dense)
  const int32_t* kv_block_index = nullptr;  // [batch, heads_q, nQB, nKB]
  MutableTensorView out;
  float* lse = nullptr;  // optional
  CudaKernel kernel = CudaKernel::kAuto;
  // Varlen only: token rows of the packed q and k/v tensors (cu_seqlens_*[batch]), which bound the
  // sm_90a kernel's TMA loads; 0 (unknown) keeps varlen batches on the sm_80 kernel.
  int64_t packed_tokens_q = 0;
  int64_t packed_tokens_k = 0;
};

// Exact block mass: for each (batch, head, query block i, key block j), the mean over the real
// queries of block i of the softmax probability that falls in key block j. Rows sum to 1.
// Output [batch, heads_q, nQB, nKB] float32.
struct BlockMassParams {
  Problem problem;
  TensorView q;
  TensorView k;
  float scale = 0.f;
  int32_t block_size = 128;
  float* block_mass = nullptr;
};

}  // namespace xattn::kernels
