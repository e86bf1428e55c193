// Attention backends of the runner; see xattn/model/attention.h.
#include "xattn/model/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "xattn/model/linear.h"
#include "xattn/error.h"

namespace xattn::model {

namespace {

void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  XATTN_CHECK_ARG(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                  "attention expects q, k, v of shape [batch, heads, len, head_dim], got ",
                  q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  XATTN_CHECK_ARG(k.sizes() == v.sizes(), "k ", k.sizes(), " and v ", v.sizes(), " differ");
  XATTN_CHECK_ARG(q.size(0) == k.size(0) && q.size(3) == k.size(3), "q ", q.sizes(),
                  " and k ", k.sizes(), " disagree on batch or head_dim");
  XATTN_CHECK_ARG(k.size(1) > 0 && q.size(1) % k.size(1) == 0, "heads_q (", q.size(1),
                  ") must be a multiple of heads_kv (", k.size(1), ")");
  XATTN_CHECK_ARG(q.size(2) <= k.size(2), "len_q (", q.size(2), ") exceeds len_k (", k.size(2),
                  ")");
}

}  // namespace

at::Tensor gathered_block_sparse_attention(const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, const at::Tensor& count,
                                           const at::Tensor& index, int64_t block_size,
                                           int64_t window) {
  check_qkv(q, k, v);
  XATTN_CHECK_ARG(q.size(0) == 1, "gathered_block_sparse_attention takes batch 1, got ", q.size(0));
  const int64_t heads_q = q.size(1), len_q = q.size(2), d = q.size(3);
  const int64_t group = heads_q / k.size(1), len_k = k.size(2), offset = len_k - len_q;
  const int64_t num_q_blocks = (len_q + block_size - 1) / block_size;
  XATTN_CHECK_ARG(count.dim() == 3 && count.size(1) == heads_q && count.size(2) == num_q_blocks,
                  "kv_block_count must be [1, ", heads_q, ", ", num_q_blocks, "], got ",
                  count.sizes());
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor counts = count[0].to(at::kCPU, at::kLong).contiguous();
  const at::Tensor indices = index[0].to(at::kCPU, at::kLong).contiguous();
  const auto* count_at = counts.data_ptr<int64_t>();
  const auto* index_at = indices.data_ptr<int64_t>();
  const int64_t index_stride = indices.size(2);
  const at::Tensor qf = q[0].to(at::kFloat), kf = k[0].to(at::kFloat), vf = v[0].to(at::kFloat);
  at::Tensor out = at::zeros({heads_q, len_q, d}, qf.options());
  const auto long_options = at::TensorOptions().dtype(at::kLong);
  std::vector<int64_t> keys;
  for (int64_t h = 0; h < heads_q; ++h) {
    const at::Tensor kh = kf[h / group], vh = vf[h / group];
    for (int64_t i = 0; i < num_q_blocks; ++i) {
      const int64_t r0 = i * block_size, rows = std::min(block_size, len_q - r0);
      const int64_t kept = count_at[h * num_q_blocks + i];
      if (kept <= 0) continue;  // nothing kept: zeros, as the kernels write
      // Key positions of the kept blocks, in block order (the last block may be partial).
      keys.clear();
      for (int64_t b = 0; b < kept; ++b) {
        const int64_t block = index_at[(h * num_q_blocks + i) * index_stride + b];
        for (int64_t t = block * block_size; t < std::min(len_k, (block + 1) * block_size); ++t)
          keys.push_back(t);
      }
      const at::Tensor key_index = at::from_blob(keys.data(), {int64_t(keys.size())}, long_options);
      at::Tensor scores =
          fast::linear(qf[h].narrow(0, r0, rows), kh.index_select(0, key_index)).mul_(scale);
      // Causal, bottom-right aligned: query r sits at offset + r0 + r.
      const at::Tensor query_position = at::arange(offset + r0, offset + r0 + rows, long_options);
      at::Tensor hidden = key_index.unsqueeze(0) > query_position.unsqueeze(1);
      // Sliding window: query p sees keys p - window + 1 .. p.
      if (window > 0)
        hidden = hidden.logical_or(key_index.unsqueeze(0) <= query_position.unsqueeze(1) - window);
      scores.masked_fill_(hidden, -std::numeric_limits<float>::infinity());
      const at::Tensor probs = at::softmax(scores, -1);
      out[h].narrow(0, r0, rows).copy_(
          fast::linear(probs, vh.index_select(0, key_index).t().contiguous()));
    }
  }
  return out.unsqueeze(0).to(q.scalar_type());
}

at::Tensor dense_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  int64_t score_bytes, int64_t window) {
  check_qkv(q, k, v);
  XATTN_CHECK_ARG(window >= 0, "sliding window must be >= 0 (0: none), got ", window);
  const int64_t batch = q.size(0), heads_q = q.size(1), len_q = q.size(2), d = q.size(3);
  const int64_t heads_kv = k.size(1), len_k = k.size(2), group = heads_q / heads_kv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  if (window >= len_k) window = 0;  // every key is in reach

  // The same fused attention as the engine's dense fallback (grouped K/V not expanded), so a
  // patched model is compared against the fastest dense prefill, not a slower one.
  if (q.is_cuda() && len_q == len_k && window == 0)
    return runtime::dense_fallback_attention(q, k, v, /*causal=*/true, scale);

  // Compute in float32 on CPU; on CUDA in the input dtype with a float32 softmax.
  const at::ScalarType compute = q.is_cuda() ? q.scalar_type() : at::kFloat;
  const at::Tensor kc = k.to(compute), vc = v.to(compute);
  const int64_t offset = len_k - len_q;
  const int64_t reach = window > 0 ? window : len_k;  // keys one query row can see, at most
  const int64_t per_row = std::max<int64_t>(1, batch * heads_q * reach * 4 * 3);  // scores+probs
  const int64_t chunk = std::clamp<int64_t>(score_bytes / per_row, 1, std::max<int64_t>(len_q, 1));
  at::Tensor out = at::empty({batch, heads_q, len_q, d}, q.options().dtype(compute));
  const auto idx = at::TensorOptions().dtype(at::kLong).device(q.device());
  for (int64_t s = 0; s < len_q; s += chunk) {
    const int64_t c = std::min(chunk, len_q - s);
    // Query row r (absolute position offset + s + r) sees keys first .. offset + s + r, where
    // first is 0, or offset + s + r - window + 1 with a window; the chunk reads keys
    // k0 .. k0 + keys - 1, from the first row's first key to the last row's own position.
    const int64_t k0 = window > 0 ? std::max<int64_t>(0, offset + s - window + 1) : 0;
    const int64_t keys = offset + s + c - k0;
    const at::Tensor row_pos = at::arange(offset + s, offset + s + c, idx).unsqueeze(1);
    const at::Tensor key_pos = at::arange(k0, k0 + keys, idx).unsqueeze(0);
    at::Tensor future = key_pos > row_pos;  // [c, keys]: masked
    if (window > 0) future = future.logical_or(key_pos <= row_pos - window);
    // [batch, heads_kv, group * c, d]: one product per key/value head for its whole group.
    const at::Tensor qc = q.narrow(2, s, c).to(compute).reshape({batch, heads_kv, group * c, d});
    if (!q.is_cuda()) {
      // CPU: per (batch, kv head) 2-D products through oneDNN (fast::linear).
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t h = 0; h < heads_kv; ++h) {
          at::Tensor scores = fast::linear(qc[b][h], kc[b][h].narrow(0, k0, keys)).mul_(scale);
          scores = scores.view({group, c, keys});
          scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
          const at::Tensor probs = at::softmax(scores, -1).view({group * c, keys});
          const at::Tensor vt = vc[b][h].narrow(0, k0, keys).t().contiguous();
          out[b].narrow(0, h * group, group).narrow(1, s, c).copy_(
              fast::linear(probs, vt).view({group, c, d}));
        }
      continue;
    }
    const at::Tensor kk = kc.narrow(2, k0, keys);
    const at::Tensor vv = vc.narrow(2, k0, keys);
    at::Tensor scores = at::matmul(qc, kk.transpose(-1, -2)).to(at::kFloat).mul_(scale);
    scores = scores.view({batch, heads_kv, group, c, keys});
    scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
    const at::Tensor probs =
        at::softmax(scores, -1).to(compute).view({batch, heads_kv, group * c, keys});
    out.narrow(2, s, c).copy_(at::matmul(probs, vv).view({batch, heads_q, c, d}));
  }
  return out.to(q.scalar_type());
}

at::Tensor AttentionBackend::attend_window(int layer, const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, int64_t window) {
  throw Error(ErrorKind::kInvalidArgument,
              detail::concat("layer ", layer, " has a sliding window of ", window,
                             " tokens, which this attention backend does not implement"));
}

at::Tensor DenseBackend::attend(int, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& v) {
  return dense_causal_attention(q, k, v);
}

at::Tensor DenseBackend::attend_window(int, const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, int64_t window) {
  return dense_causal_attention(q, k, v, int64_t(256) << 20, window);
}

XAttentionBackend::XAttentionBackend(at::Tensor thresholds, runtime::EstimateOptions options)
    : thresholds_(thresholds.to(at::kCPU, at::kFloat).contiguous()), options_(options) {
  XATTN_CHECK_ARG(thresholds_.dim() == 2, "XAttention thresholds must be [num_layers, heads_q], got ",
                  thresholds_.sizes());
  XATTN_CHECK_ARG(options_.causal, "the model runner's XAttention backend is causal");
  density_.resize(static_cast<size_t>(thresholds_.size(0)));
  decision_.resize(static_cast<size_t>(thresholds_.size(0)));
}

XAttentionBackend XAttentionBackend::uniform(int64_t num_layers, int64_t heads_q, double tau,
                                             runtime::EstimateOptions options) {
  XATTN_CHECK_ARG(tau >= 0.0 && tau <= 1.0, "threshold tau must lie in [0, 1], got ", tau);
  return XAttentionBackend(at::full({num_layers, heads_q}, tau, at::TensorOptions().dtype(at::kFloat)),
                           options);
}

void XAttentionBackend::set_dispatch(runtime::CostTable table, runtime::DensityModel density) {
  XATTN_CHECK_ARG(int64_t(density.density.size()) == thresholds_.size(0), "the density model has ",
                  density.density.size(), " layers but the thresholds have ", thresholds_.size(0));
  dispatch_ = Dispatch{std::move(table), std::move(density)};
}

const std::string& XAttentionBackend::last_decision(int layer) const {
  XATTN_CHECK_ARG(layer >= 0 && static_cast<size_t>(layer) < decision_.size(), "no layer ", layer);
  return decision_[static_cast<size_t>(layer)];
}

at::Tensor XAttentionBackend::attend(int layer, const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v) {
  return run(layer, q, k, v, 0);
}

at::Tensor XAttentionBackend::attend_window(int layer, const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, int64_t window) {
  XATTN_CHECK_ARG(window >= 0, "sliding window must be >= 0 (0: none), got ", window);
  return run(layer, q, k, v, window);
}

at::Tensor XAttentionBackend::run(int layer, const at::Tensor& q, const at::Tensor& k,
                                  const at::Tensor& v, int64_t window) {
  check_qkv(q, k, v);
  XATTN_CHECK_ARG(layer >= 0 && layer < thresholds_.size(0), "layer ", layer,
                  " has no thresholds (the profile has ", thresholds_.size(0), " layers)");
  XATTN_CHECK_ARG(q.size(1) == thresholds_.size(1), "layer ", layer, " has ", q.size(1),
                  " query heads but the thresholds have ", thresholds_.size(1),
                  ": the profile belongs to another model");
  const int64_t len_q = q.size(2), len_k = k.size(2);
  const auto at_layer = static_cast<size_t>(layer);
  const auto dense_call = [&] {
    density_[at_layer] = at::ones({q.size(1)}, at::kDouble);
    return dense_causal_attention(q, k, v, int64_t(256) << 20, window);
  };
  // τ >= 1 keeps every allowed block: exactly dense attention, without scoring.
  if (thresholds_[layer].min().item<float>() >= 1.f) return dense_call();
  if (dispatch_ && len_q > 1) {
    runtime::CallGeometry call;
    call.len_q = len_q;
    call.len_k = len_k;
    call.heads_q = q.size(1);
    call.head_dim = q.size(3);
    call.block_size = options_.block_size;
    call.stride = options_.stride;
    call.causal = true;
    const runtime::DispatchDecision d =
        runtime::decide_dispatch(dispatch_->table, dispatch_->density, layer, call);
    decision_[at_layer] = d.reason;
    if (!d.sparse) return dense_call();
  }
  if (!device_thresholds_.defined() || device_thresholds_.device() != q.device())
    device_thresholds_ = runtime::to_device_async(thresholds_, q.device());
  const at::Tensor tau = device_thresholds_[layer];
  runtime::EstimateOptions options = options_;
  options.window = window;
  const at::Tensor scores = runtime::antidiagonal_scores(q, k, options);
  auto [mask, count, index] = runtime::select_blocks(scores, tau, len_q, len_k, options);
  (void)mask;
  at::Tensor out;
  if (q.is_cuda()) {
    out = std::get<0>(runtime::block_sparse_attention_compact(
        q, k, v, count, index, true, std::nullopt, options.block_size, window));
  } else {
    // The CPU reference kernel is a scalar oracle; the runner gathers kept blocks into matrix
    // products instead (same result to rounding; tested against the reference), one batch item
    // at a time.
    std::vector<at::Tensor> items;
    for (int64_t b = 0; b < q.size(0); ++b)
      items.push_back(gathered_block_sparse_attention(
          q.narrow(0, b, 1), k.narrow(0, b, 1), v.narrow(0, b, 1), count.narrow(0, b, 1),
          index.narrow(0, b, 1), options.block_size, window));
    out = items.size() == 1 ? items[0] : at::cat(items, 0);
  }
  density_[at_layer] =
      runtime::head_density_on_device(count, len_q, len_k, options.block_size, true, window);
  return out;
}

at::Tensor XAttentionBackend::last_density(int layer) const {
  XATTN_CHECK_ARG(layer >= 0 && static_cast<size_t>(layer) < density_.size(), "no layer ", layer);
  const at::Tensor& d = density_[static_cast<size_t>(layer)];
  return d.defined() ? d.to(at::kCPU) : d;
}

double XAttentionBackend::mean_density() const {
  double sum = 0.0;
  int64_t n = 0;
  for (const auto& d : density_) {
    if (!d.defined()) continue;
    sum += d.sum().item<double>();
    n += d.numel();
  }
  return n ? sum / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN();
}

void XAttentionBackend::clear_density() {
  for (auto& d : density_) d = at::Tensor();
  for (auto& d : decision_) d.clear();
}

}  // namespace xattn::model
