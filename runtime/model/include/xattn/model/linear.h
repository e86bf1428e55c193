// y = x W^T + b for the runner. On CPU float32 it goes through oneDNN (bundled with LibTorch),
// because LibTorch builds linked against the reference BLAS (Debian's) run at.linear about 10x
// slower; elsewhere it is at::linear.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>

namespace xattn::model::fast {

// x [..., in], weight [out, in], bias [out] or undefined -> [..., out].
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& bias = at::Tensor()) {
  if (x.is_cpu() && x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
      at::hasMKLDNN() && x.numel() > 0 && weight.numel() > 0) {
    const at::Tensor x2 = x.reshape({-1, x.size(-1)}).contiguous();
    c10::optional<at::Tensor> b;
    if (bias.defined()) b = bias.contiguous();
    const at::Tensor y =
        at::mkldnn_linear(x2.to_mkldnn(), weight.contiguous(), b).to_dense();
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = weight.size(0);
    return y.view(shape);
  }
  return at::linear(x, weight, bias);
}

}  // namespace xattn::model::fast
