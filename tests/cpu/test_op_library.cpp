// The registered torch ops reach the same functions as the C++ API.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "xattn/ops.h"

namespace xattn {
namespace {

// Loads the op library once, as torch.ops.load_library does from Python (ctypes: RTLD_LOCAL).
void load_op_library() {
  static void* handle = dlopen(XATTN_OPS_LIBRARY, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr) << dlerror();
}

c10::OperatorHandle op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

// prefill(q, k, v, thresholds, stride, block_size, causal, dense_last_query_block, scale,
// window)
auto prefill_op() {
  return op("xattn::prefill")
      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const at::Tensor&, int64_t, int64_t, bool, bool, c10::optional<double>,
                        int64_t)>();
}

TEST(OpLibrary, PrefillEstimateAndSparseMatchTheCppApi) {
  load_op_library();
  at::manual_seed(1);
  const at::Tensor q = at::randn({1, 4, 300, 32}), k = at::randn({1, 2, 300, 32}),
                   v = at::randn({1, 2, 300, 32});
  const at::Tensor thresholds = at::full({4}, 0.8f);
  runtime::EstimateOptions options;
  options.block_size = 64;

  auto prefill = prefill_op();
  EXPECT_TRUE(at::equal(prefill.call(q, k, v, thresholds, 8, 64, true, true, c10::nullopt, 0),
                        runtime::prefill(q, k, v, thresholds, options)));
  runtime::EstimateOptions sparse_last = options;
  sparse_last.dense_last_query_block = false;
  EXPECT_TRUE(at::equal(prefill.call(q, k, v, thresholds, 8, 64, true, false, c10::nullopt, 0),
                        runtime::prefill(q, k, v, thresholds, sparse_last)));

  auto estimate =
      op("xattn::estimate")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, int64_t, int64_t, bool,
                                                    c10::optional<double>, bool, int64_t)>();
  auto [scores, mask] = estimate.call(q, k, thresholds, 8, 64, true, c10::nullopt, true, 0);
  auto [expected_scores, expected_mask] = runtime::estimate(q, k, thresholds, options);
  EXPECT_TRUE(at::equal(scores, expected_scores));
  EXPECT_TRUE(at::equal(mask, expected_mask));

  auto sparse = op("xattn::block_sparse_attention")
                    .typed<std::tuple<at::Tensor, at::Tensor>(
                        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        bool, c10::optional<double>, int64_t)>();
  auto [out, lse] = sparse.call(q, k, v, mask, true, c10::nullopt, 0);
  auto [expected_out, expected_lse] =
      runtime::block_sparse_attention(q, k, v, mask, true, std::nullopt, 64);
  EXPECT_TRUE(at::equal(out, expected_out));
  EXPECT_TRUE(at::equal(lse, expected_lse));
}

// prefill_with_lse with a softmax scale: the selection estimate makes at scale / stride, then
// block-sparse attention at scale (output and row log-sum-exp); prefill returns that output.
// The same on CUDA (bf16, head_dim 64) where a device is present.
TEST(OpLibrary, PrefillWithLseAndScaleEqualsEstimateThenSparseAttention) {
  load_op_library();
  at::manual_seed(2);
  const at::Tensor q = at::randn({1, 4, 400, 64}), k = at::randn({1, 2, 400, 64}),
                   v = at::randn({1, 2, 400, 64});
  const at::Tensor thresholds = at::tensor({0.3f, 0.6f, 0.9f, 0.5f});
  const double scale = 0.11;
  auto with_lse =
      op("xattn::prefill_with_lse")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, const at::Tensor&, int64_t,
                                                    int64_t, bool, bool, c10::optional<double>,
                                                    int64_t)>();
  std::vector<at::Device> devices = {at::kCPU};
  if (at::hasCUDA()) devices.push_back(at::Device(at::kCUDA));
  for (const at::Device device : devices) {
    SCOPED_TRACE(device.str());
    const auto dtype = device.is_cuda() ? at::kBFloat16 : at::kFloat;
    const at::Tensor qd = q.to(device, dtype), kd = k.to(device, dtype), vd = v.to(device, dtype),
                     th = thresholds.to(device);
    auto [out, lse] = with_lse.call(qd, kd, vd, th, 8, 64, true, true, scale, 0);
    runtime::EstimateOptions options;
    options.block_size = 64;
    options.scale = scale / 8;
    auto [scores, mask] = runtime::estimate(qd, kd, th, options);
    EXPECT_LT(mask.to(at::kFloat).mean().item<float>(), 0.9f);  // a real selection
    auto [expected_out, expected_lse] =
        runtime::block_sparse_attention(qd, kd, vd, mask, true, scale, 64);
    EXPECT_TRUE(at::equal(out, expected_out));
    EXPECT_TRUE(at::equal(lse, expected_lse));
    EXPECT_TRUE(
        at::equal(prefill_op().call(qd, kd, vd, th, 8, 64, true, true, scale, 0), out));
  }
}

// Packed sequences (flash-attn varlen layout) equal each sequence run alone through prefill;
// the same on CUDA (bf16) where a device is present.
TEST(OpLibrary, PrefillVarlenEqualsPerSequencePrefill) {
  load_op_library();
  auto prefill = prefill_op();
  auto varlen = op("xattn::prefill_varlen")
                    .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      int64_t, int64_t, bool, bool, int64_t)>();
  const std::vector<int64_t> len_q = {300, 129, 1, 64}, len_k = {300, 200, 77, 64};
  const int64_t total_q = 494, total_k = 641, heads_q = 4, heads_kv = 2, d = 64;  // CUDA: d 64, 128
  at::manual_seed(3);
  const at::Tensor q = at::randn({total_q, heads_q, d}), k = at::randn({total_k, heads_kv, d}),
                   v = at::randn({total_k, heads_kv, d});
  const at::Tensor cu_q = at::tensor({0, 300, 429, 430, 494}, at::kInt),
                   cu_k = at::tensor({0, 300, 500, 577, 641}, at::kInt);
  const at::Tensor thresholds = at::tensor({0.5f, 0.8f, 0.9f, 0.3f});
  std::vector<at::Device> devices = {at::kCPU};
  if (at::hasCUDA()) devices.push_back(at::Device(at::kCUDA));
  for (const at::Device device : devices) {
    SCOPED_TRACE(device.str());
    const auto dtype = device.is_cuda() ? at::kBFloat16 : at::kFloat;
    auto on = [&](const at::Tensor& t) { return t.to(device, dtype); };
    const at::Tensor packed = varlen.call(on(q), on(k), on(v), cu_q.to(device), cu_k.to(device),
                                          thresholds.to(device), 8, 64, true, true, 0);
    ASSERT_EQ(packed.sizes(), q.sizes());
    int64_t q0 = 0, k0 = 0;
    for (size_t b = 0; b < len_q.size(); ++b) {
      auto sequence = [&](const at::Tensor& t, int64_t start, int64_t n) {
        return on(t).narrow(0, start, n).transpose(0, 1).unsqueeze(0).contiguous();
      };
      const at::Tensor alone =
          prefill.call(sequence(q, q0, len_q[b]), sequence(k, k0, len_k[b]),
                       sequence(v, k0, len_k[b]), thresholds.to(device), 8, 64, true, true,
                       c10::nullopt, 0);
      const at::Tensor got = packed.narrow(0, q0, len_q[b]).transpose(0, 1).unsqueeze(0);
      EXPECT_TRUE(at::allclose(got.to(at::kFloat), alone.to(at::kFloat), 1e-5, 1e-5))
          << "sequence " << b << ": max difference "
          << (got.to(at::kFloat) - alone.to(at::kFloat)).abs().max().item<float>();
      q0 += len_q[b];
      k0 += len_k[b];
    }
  }
  // Offsets that do not cover the tensors are refused with the reason.
  try {
    varlen.call(q, k, v, at::tensor({0, 300}, at::kInt), cu_k, thresholds, 8, 64, true, true, 0);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("cu_seqlens"), std::string::npos) << e.what();
  }
}

// Every bad argument of issue 11's list is refused at the op boundary with a c10::Error (a
// RuntimeError in Python) naming the problem; no other exception type leaves an op.
// tests/python/test_op_errors.py makes the same calls from Python, each in its own process.
TEST(OpLibrary, BadArgumentsRaiseOneErrorTypeNamingTheProblem) {
  load_op_library();
  auto prefill = prefill_op();
  auto estimate =
      op("xattn::estimate")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, int64_t, int64_t, bool,
                                                    c10::optional<double>, bool, int64_t)>();
  auto sparse = op("xattn::block_sparse_attention")
                    .typed<std::tuple<at::Tensor, at::Tensor>(
                        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        bool, c10::optional<double>, int64_t)>();
  auto varlen = op("xattn::prefill_varlen")
                    .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      int64_t, int64_t, bool, bool, int64_t)>();
  const int64_t hq = 4, hkv = 2, len = 256, d = 64;
  const at::Tensor q = at::randn({1, hq, len, d}), k = at::randn({1, hkv, len, d}),
                   v = at::randn({1, hkv, len, d}), th = at::full({hq}, 0.9f);
  auto expect_error = [](const char* name, const std::function<void()>& call,
                         const std::string& words) {
    SCOPED_TRACE(name);
    try {
      call();
      ADD_FAILURE() << "accepted";
    } catch (const c10::Error& e) {
      const std::string message = e.what_without_backtrace();
      EXPECT_NE(message.find("xattn."), std::string::npos) << message;
      EXPECT_NE(message.find(words), std::string::npos) << message;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a c10::Error: " << e.what();
    }
  };
  auto run = [&](const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
                 const at::Tensor& th_, int64_t stride, int64_t block) {
    return [=] { prefill.call(q_, k_, v_, th_, stride, block, true, true, c10::nullopt, 0); };
  };
  const at::Tensor k3 = at::randn({1, 3, len, d}), short_k = at::randn({1, hkv, len / 4, d});
  expect_error("heads_kv 3", run(q, k3, k3, th, 8, 128), "multiple of heads");
  expect_error("len_q > len_k", run(q, short_k, short_k, th, 8, 128), "len_q 256");
  expect_error("thresholds of length 3", run(q, k, v, th.slice(0, 0, 3), 8, 128), "[4]");
  expect_error("stride 0", run(q, k, v, th, 0, 128), "stride 0");
  expect_error("stride 7", run(q, k, v, th, 7, 128), "stride 7");
  expect_error("block_size 100", run(q, k, v, th, 4, 100), "block_size 100");
  const at::Tensor empty_q = at::randn({1, hq, 0, d}), empty_k = at::randn({1, hkv, 0, d});
  expect_error("len 0", run(empty_q, empty_k, empty_k, th, 8, 128), "at least 1");
  expect_error("thresholds > 1", run(q, k, v, th + 0.5, 8, 128), "[0, 1]");
  at::Tensor nan_th = th.clone();
  nan_th[1] = std::numeric_limits<float>::quiet_NaN();
  expect_error("thresholds NaN", run(q, k, v, nan_th, 8, 128), "thresholds[1] is nan");
  expect_error("int64 thresholds", run(q, k, v, at::ones({hq}, at::kLong), 8, 128),
               "floating-point");
  expect_error("float64 q", run(q.to(at::kDouble), k, v, th, 8, 128), "dtype");
  expect_error("estimate scale NaN",
               [&] { estimate.call(q, k, th, 8, 128, true, std::nan(""), true, 0); }, "scale");
  expect_error("estimate block_size 0",
               [&] { estimate.call(q, k, th, 8, 0, true, c10::nullopt, true, 0); }, "block_size 0");
  expect_error("mask with the wrong block count", [&] {
    sparse.call(q, k, v, at::ones({1, hq, 5, 2}, at::kBool), true, c10::nullopt, 0);
  }, "5x2 blocks");
  expect_error("float mask", [&] {
    sparse.call(q, k, v, at::ones({1, hq, 2, 2}), true, c10::nullopt, 0);
  }, "bool");
  const at::Tensor qp = q[0].transpose(0, 1).contiguous(), kp = k[0].transpose(0, 1).contiguous(),
                   vp = v[0].transpose(0, 1).contiguous();
  expect_error("cu_seqlens past the tensor", [&] {
    const at::Tensor cu = at::tensor({0, 5000}, at::kInt);
    varlen.call(qp, kp, vp, cu, cu, th, 8, 128, true, true, 0);
  }, "ends at 5000");
  expect_error("decreasing cu_seqlens", [&] {
    const at::Tensor cu = at::tensor({0, 200, 100, 256}, at::kInt);
    varlen.call(qp, kp, vp, cu, cu, th, 8, 128, true, true, 0);
  }, "ascend");
  expect_error("float cu_seqlens", [&] {
    const at::Tensor cu = at::tensor({0.0f, 256.0f});
    varlen.call(qp, kp, vp, cu, cu, th, 8, 128, true, true, 0);
  }, "integer");
  // The CPU reference takes any head_dim; valid calls still run.
  const at::Tensor q96 = at::randn({1, hq, 64, 96}), k96 = at::randn({1, hkv, 64, 96});
  EXPECT_EQ(prefill.call(q96, k96, k96, th, 8, 64, true, true, c10::nullopt, 0).sizes(),
            q96.sizes());
}

// The window argument (last on every op) reaches the C++ API: windowed prefill, estimate and
// block-sparse attention equal runtime's with EstimateOptions::window, packed sequences equal each
// sequence's windowed prefill, and a negative window or a window without causal is refused as a
// c10::Error naming the window; on CUDA where present, windowed prefill at tau = 1 against the CPU.
TEST(OpLibrary, WindowArgumentReachesTheCppApi) {
  load_op_library();
  auto prefill = prefill_op();
  auto estimate =
      op("xattn::estimate")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, int64_t, int64_t, bool,
                                                    c10::optional<double>, bool, int64_t)>();
  auto sparse = op("xattn::block_sparse_attention")
                    .typed<std::tuple<at::Tensor, at::Tensor>(
                        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        bool, c10::optional<double>, int64_t)>();
  auto varlen = op("xattn::prefill_varlen")
                    .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      int64_t, int64_t, bool, bool, int64_t)>();
  at::manual_seed(4);
  const at::Tensor q = at::randn({1, 4, 300, 32}), k = at::randn({1, 2, 300, 32}),
                   v = at::randn({1, 2, 300, 32});
  const at::Tensor thresholds = at::tensor({0.5f, 0.8f, 0.9f, 0.3f});
  for (int64_t window : {1, 50, 100, 1000}) {
    SCOPED_TRACE(window);
    runtime::EstimateOptions options;
    options.block_size = 64;
    options.window = window;
    const at::Tensor out = prefill.call(q, k, v, thresholds, 8, 64, true, true, c10::nullopt,
                                        window);
    EXPECT_TRUE(at::equal(out, runtime::prefill(q, k, v, thresholds, options)));
    if (window < 300) {
      EXPECT_FALSE(at::allclose(out, prefill.call(q, k, v, thresholds, 8, 64, true, true,
                                                  c10::nullopt, 0)));
    }
    auto [scores, mask] = estimate.call(q, k, thresholds, 8, 64, true, c10::nullopt, true,
                                        window);
    auto [expected_scores, expected_mask] = runtime::estimate(q, k, thresholds, options);
    EXPECT_TRUE(at::equal(scores, expected_scores));
    EXPECT_TRUE(at::equal(mask, expected_mask));
    auto [sparse_out, lse] = sparse.call(q, k, v, mask, true, c10::nullopt, window);
    auto [expected_out, expected_lse] =
        runtime::block_sparse_attention(q, k, v, mask, true, std::nullopt, 64, window);
    EXPECT_TRUE(at::equal(sparse_out, expected_out));
    EXPECT_TRUE(at::equal(lse, expected_lse));

    // Packed: sequences of 300 and 129 queries (the second against 200 keys).
    const at::Tensor qp = at::cat({q[0].transpose(0, 1), q[0].narrow(1, 0, 129).transpose(0, 1)}),
                     kp = at::cat({k[0].transpose(0, 1), k[0].narrow(1, 0, 200).transpose(0, 1)}),
                     vp = at::cat({v[0].transpose(0, 1), v[0].narrow(1, 0, 200).transpose(0, 1)});
    const at::Tensor cu_q = at::tensor({0, 300, 429}, at::kInt),
                     cu_k = at::tensor({0, 300, 500}, at::kInt);
    const at::Tensor packed = varlen.call(qp.contiguous(), kp.contiguous(), vp.contiguous(), cu_q,
                                          cu_k, thresholds, 8, 64, true, true, window);
    EXPECT_TRUE(at::allclose(packed.narrow(0, 0, 300).transpose(0, 1).unsqueeze(0), out, 1e-5,
                             1e-5));
    const at::Tensor second = prefill.call(q.narrow(2, 0, 129).contiguous(),
                                           k.narrow(2, 0, 200).contiguous(),
                                           v.narrow(2, 0, 200).contiguous(), thresholds, 8, 64,
                                           true, true, c10::nullopt, window);
    EXPECT_TRUE(at::allclose(packed.narrow(0, 300, 129).transpose(0, 1).unsqueeze(0), second,
                             1e-5, 1e-5));
  }
  auto expect_window_error = [](const char* name, const std::function<void()>& call) {
    SCOPED_TRACE(name);
    try {
      call();
      ADD_FAILURE() << "accepted";
    } catch (const c10::Error& e) {
      const std::string message = e.what_without_backtrace();
      EXPECT_NE(message.find("window"), std::string::npos) << message;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a c10::Error: " << e.what();
    }
  };
  expect_window_error("prefill window -1", [&] {
    prefill.call(q, k, v, thresholds, 8, 64, true, true, c10::nullopt, -1);
  });
  expect_window_error("prefill window without causal", [&] {
    prefill.call(q, k, v, thresholds, 8, 64, false, true, c10::nullopt, 16);
  });
  expect_window_error("estimate window -5", [&] {
    estimate.call(q, k, thresholds, 8, 64, true, c10::nullopt, true, -5);
  });
  expect_window_error("block_sparse_attention window without causal", [&] {
    sparse.call(q, k, v, at::ones({1, 4, 5, 5}, at::kBool), false, c10::nullopt, 16);
  });
  const at::Tensor cu = at::tensor({0, 300}, at::kInt);
  const at::Tensor qp = q[0].transpose(0, 1).contiguous(), kp = k[0].transpose(0, 1).contiguous();
  expect_window_error("prefill_varlen window -1", [&] {
    varlen.call(qp, kp, kp, cu, cu, thresholds, 8, 64, true, true, -1);
  });
  // On CUDA (bf16, head_dim 64) where a device is present: at tau = 1 the windowed kernels
  // equal the CPU reference's windowed dense attention to bf16 rounding.
  if (at::hasCUDA()) {
    const at::Tensor qc = at::randn({1, 4, 300, 64}), kc = at::randn({1, 2, 300, 64}),
                     vc = at::randn({1, 2, 300, 64}), all = at::ones({4});
    const at::Device cuda(at::kCUDA);
    for (int64_t window : {1, 50, 100}) {
      SCOPED_TRACE(window);
      const at::Tensor expected =
          prefill.call(qc, kc, vc, all, 8, 64, true, true, c10::nullopt, window);
      const at::Tensor got =
          prefill
              .call(qc.to(cuda, at::kBFloat16), kc.to(cuda, at::kBFloat16),
                    vc.to(cuda, at::kBFloat16), all.to(cuda), 8, 64, true, true, c10::nullopt,
                    window)
              .to(at::kCPU, at::kFloat);
      EXPECT_LT(((got - expected).norm() / expected.norm()).item<float>(), 2e-2f);
    }
  }
}

}  // namespace
}  // namespace xattn
