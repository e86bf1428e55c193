// The registered torch ops reach the same functions as the C++ API.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

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

TEST(OpLibrary, PrefillEstimateAndSparseMatchTheCppApi) {
  load_op_library();
  at::manual_seed(1);
  const at::Tensor q = at::randn({1, 4, 300, 32}), k = at::randn({1, 2, 300, 32}),
                   v = at::randn({1, 2, 300, 32});
  const at::Tensor thresholds = at::full({4}, 0.8f);
  runtime::EstimateOptions options;
  options.block_size = 64;

  auto prefill = op("xattn::prefill")
                     .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                       const at::Tensor&, int64_t, int64_t, bool, bool)>();
  EXPECT_TRUE(at::equal(prefill.call(q, k, v, thresholds, 8, 64, true, true),
                        runtime::prefill(q, k, v, thresholds, options)));
  runtime::EstimateOptions sparse_last = options;
  sparse_last.dense_last_query_block = false;
  EXPECT_TRUE(at::equal(prefill.call(q, k, v, thresholds, 8, 64, true, false),
                        runtime::prefill(q, k, v, thresholds, sparse_last)));

  auto estimate =
      op("xattn::estimate")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, int64_t, int64_t, bool,
                                                    c10::optional<double>, bool)>();
  auto [scores, mask] = estimate.call(q, k, thresholds, 8, 64, true, c10::nullopt, true);
  auto [expected_scores, expected_mask] = runtime::estimate(q, k, thresholds, options);
  EXPECT_TRUE(at::equal(scores, expected_scores));
  EXPECT_TRUE(at::equal(mask, expected_mask));

  auto sparse = op("xattn::block_sparse_attention")
                    .typed<std::tuple<at::Tensor, at::Tensor>(
                        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        bool, c10::optional<double>)>();
  auto [out, lse] = sparse.call(q, k, v, mask, true, c10::nullopt);
  auto [expected_out, expected_lse] =
      runtime::block_sparse_attention(q, k, v, mask, true, std::nullopt, 64);
  EXPECT_TRUE(at::equal(out, expected_out));
  EXPECT_TRUE(at::equal(lse, expected_lse));
}

}  // namespace
}  // namespace xattn
