// Parameter validation shared by the CPU reference and the runtime.
#include <string>

#include "xattn/error.h"
#include "xattn/kernels/cpu.h"

namespace xattn::kernels::cpu {
namespace {

// Numbers are formatted without iostreams (xattn/error.h says why).
template <typename... Args>
std::string message(const Args&... args) {
  return detail::concat(args...);
}

std::string validate_view(const char* name, const TensorView& v) {
  if (!v.data) return message(name, " is null");
  if (v.dtype != DType::kFloat32 && v.dtype != DType::kFloat16 && v.dtype != DType::kBFloat16)
    return message(name, " has an unsupported dtype (supported: float32, float16, bfloat16)");
  return {};
}

std::string validate_block(int32_t block_size) {
  if (block_size <= 0 || (block_size & (block_size - 1)) != 0)
    return message("block_size ", block_size, " must be a positive power of two (64, 128, 256)");
  return {};
}

}  // namespace

std::string validate(const Problem& p) {
  if (p.batch < 1) return message("batch ", p.batch, " must be >= 1");
  if (p.heads_q < 1 || p.heads_kv < 1)
    return message("head counts must be >= 1 (heads_q ", p.heads_q, ", heads_kv ", p.heads_kv, ")");
  if (p.heads_q % p.heads_kv != 0)
    return message("heads_q ", p.heads_q, " must be a multiple of heads_kv ", p.heads_kv,
                   " (grouped-query attention)");
  if (p.head_dim < 1) return message("head_dim ", p.head_dim, " must be >= 1");
  if (p.max_len_q < 1 || p.max_len_k < 1)
    return message("sequence lengths must be >= 1 (len_q ", p.max_len_q, ", len_k ", p.max_len_k,
                   ")");
  if (p.window < 0) return message("window ", p.window, " must be >= 0 (0: no sliding window)");
  if (p.window > 0 && !p.causal)
    return message("a sliding window (", p.window, ") needs causal attention");
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t lq = p.len_q(b), lk = p.len_k(b);
    if (lq < 0 || lk < 0 || lq > p.max_len_q || lk > p.max_len_k)
      return message("sequence ", b, ": lengths (", lq, ", ", lk, ") outside [0, max_len]");
    if (lq > lk)
      return message("sequence ", b, ": len_q ", lq, " > len_k ", lk,
                     " (queries must be the last len_q positions of the keys)");
  }
  return {};
}

std::string validate(const ScoringParams& p) {
  if (auto e = validate(p.problem); !e.empty()) return e;
  if (auto e = validate_view("q", p.q); !e.empty()) return e;
  if (auto e = validate_view("k", p.k); !e.empty()) return e;
  if (auto e = validate_block(p.block_size); !e.empty()) return e;
  if (p.stride < 1 || p.block_size % p.stride != 0)
    return message("stride ", p.stride, " must divide block_size ", p.block_size,
                   " (use 2, 4, 8, 16 or 32)");
  if (!p.block_scores) return "block_scores output is null";
  return {};
}

std::string validate(const SelectionParams& p) {
  if (auto e = validate(p.problem); !e.empty()) return e;
  if (auto e = validate_block(p.block_size); !e.empty()) return e;
  if (!p.block_scores) return "block_scores input is null";
  if (!p.thresholds) return "thresholds input is null";
  if (!p.kv_block_count || !p.kv_block_index) return "kv_block_count / kv_block_index outputs are null";
  if (p.rule != SelectionRule::kSmallestSet && p.rule != SelectionRule::kPublished)
    return message("selection rule ", int32_t(p.rule), " is unknown (smallest 0, published 1)");
  if (p.rule == SelectionRule::kPublished && p.problem.causal && !(p.keep_sink && p.keep_diagonal))
    return "the published selection rule always keeps the sink and the diagonal in causal mode; "
           "set keep_sink and keep_diagonal, or use the smallest-set rule";
  return {};
}

std::string validate(const AttentionParams& p) {
  if (auto e = validate(p.problem); !e.empty()) return e;
  if (auto e = validate_view("q", p.q); !e.empty()) return e;
  if (auto e = validate_view("k", p.k); !e.empty()) return e;
  if (auto e = validate_view("v", p.v); !e.empty()) return e;
  if (auto e = validate_block(p.block_size); !e.empty()) return e;
  if (!p.out.data) return "output is null";
  if ((p.kv_block_count == nullptr) != (p.kv_block_index == nullptr))
    return "kv_block_count and kv_block_index must be given together";
  return {};
}

}  // namespace xattn::kernels::cpu
