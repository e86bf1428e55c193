"""torch.compile(fullgraph=True) traces a model that calls the xattn ops (through their Meta
kernels) and the compiled model computes what the eager one does; with torch >= 2.5 also
FlexAttention with xattn.to_block_mask against the op's block-sparse attention.

Needs torch >= 2.0 (exits 77, skipped, before: Debian's 1.13 has no torch.compile). On the CPU by
default; XATTN_TEST_DEVICE=cuda runs it on the GPU (bfloat16). Backends: eager, aot_eager and
inductor (inductor on the CPU needs a C++ compiler); XATTN_COMPILE_BACKENDS=eager,aot_eager
picks fewer.

Run: PYTHONPATH=python XATTN_OPS=build/runtime/libxattn_ops.so python3 tests/python/check_compile.py
(an installed package needs neither variable). Prints one line per check; exit 0 when all pass.
"""

import os
import sys
import unittest

try:
    import torch
except ImportError as missing:
    print(f"skipped: {missing} (install PyTorch >= 2.0 to run this check)")
    sys.exit(77)

TORCH_VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
if TORCH_VERSION < (2, 0) or not hasattr(torch, "compile"):
    print(f"skipped: torch {torch.__version__} has no torch.compile (needs torch >= 2.0; the "
          "Meta kernels themselves are tested by test_package.py)")
    sys.exit(77)

sys.dont_write_bytecode = True
import xattn  # noqa: E402

DEVICE = os.environ.get("XATTN_TEST_DEVICE", "cpu")
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    print(f"skipped: XATTN_TEST_DEVICE={DEVICE} but torch sees no CUDA device")
    sys.exit(77)
DTYPE = torch.bfloat16 if DEVICE.startswith("cuda") else torch.float32
BACKENDS = os.environ.get("XATTN_COMPILE_BACKENDS", "eager,aot_eager,inductor").split(",")


class TinyAttentionModel(torch.nn.Module):
    """Two attention layers with projections around xattn.ops.prefill (GQA 4:2, d = 64)."""

    def __init__(self, thresholds, hidden=256, heads_q=4, heads_kv=2):
        super().__init__()
        self.heads_q, self.heads_kv, self.d = heads_q, heads_kv, hidden // heads_q
        self.qkv = torch.nn.ModuleList(
            torch.nn.Linear(hidden, (heads_q + 2 * heads_kv) * self.d) for _ in range(2))
        self.out = torch.nn.ModuleList(torch.nn.Linear(hidden, hidden) for _ in range(2))
        self.thresholds = thresholds  # per layer: a list of floats

    def forward(self, x):
        b, length, _ = x.shape
        for layer in range(2):
            q, k, v = self.qkv[layer](x).split(
                [self.heads_q * self.d, self.heads_kv * self.d, self.heads_kv * self.d], -1)
            q = q.view(b, length, self.heads_q, self.d).transpose(1, 2)
            k = k.view(b, length, self.heads_kv, self.d).transpose(1, 2)
            v = v.view(b, length, self.heads_kv, self.d).transpose(1, 2)
            attended, lse = xattn.ops.prefill(q, k, v, self.thresholds[layer], block_size=64,
                                              scale=self.d ** -0.5, return_lse=True)
            x = x + self.out[layer](attended.transpose(1, 2).reshape(b, length, -1))
            # lse is traced and used too; it is float32, so cast it (bf16 + float32 would promote x)
            x = x + lse.mean(1).unsqueeze(-1).to(x.dtype) * 0
        return x


class CompileCheck(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        torch._dynamo.reset()

    def test_fullgraph_compile_matches_eager(self):
        model = TinyAttentionModel([[0.9, 0.8, 0.95, 0.7], [0.5, 0.9, 0.99, 0.6]])
        model = model.to(DEVICE, DTYPE).eval()
        x = torch.randn(1, 320, 256, device=DEVICE, dtype=DTYPE)
        with torch.no_grad():
            expected = model(x)
            for backend in BACKENDS:
                with self.subTest(backend=backend):
                    torch._dynamo.reset()
                    compiled = torch.compile(model, backend=backend, fullgraph=True)
                    actual = compiled(x)
                    tolerance = 2e-2 if DTYPE == torch.bfloat16 else 1e-4
                    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)
                    print(f"ok: torch.compile(fullgraph=True, backend={backend!r}) on {DEVICE}")

    def test_prompt_lengths_static_and_symbolic(self):
        # dynamic=False compiles once per length; dynamic=True traces the Meta kernels with a
        # symbolic length (one graph for every length).
        model = TinyAttentionModel([[0.9] * 4, [0.8] * 4]).to(DEVICE, DTYPE).eval()
        tolerance = 2e-2 if DTYPE == torch.bfloat16 else 1e-4
        for dynamic in (False, True):
            with self.subTest(dynamic=dynamic):
                torch._dynamo.reset()
                compiled = torch.compile(model, backend="aot_eager", fullgraph=True,
                                         dynamic=dynamic)
                with torch.no_grad():
                    for length in (256, 300, 1000):
                        x = torch.randn(1, length, 256, device=DEVICE, dtype=DTYPE)
                        torch.testing.assert_close(compiled(x), model(x), rtol=tolerance,
                                                   atol=tolerance)
                print(f"ok: lengths 256, 300, 1000 through one compiled model, dynamic={dynamic}")

    def test_estimate_and_block_sparse_attention_compile(self):
        def f(q, k, v):
            _, mask = xattn.ops.estimate(q, k, [0.9] * 4, block_size=64)
            return xattn.ops.block_sparse_attention(q, k, v, mask)

        q = torch.randn(1, 4, 200, 64, device=DEVICE, dtype=DTYPE)
        k = torch.randn(1, 2, 200, 64, device=DEVICE, dtype=DTYPE)
        v = torch.randn(1, 2, 200, 64, device=DEVICE, dtype=DTYPE)
        expected = f(q, k, v)
        actual = torch.compile(f, backend="aot_eager", fullgraph=True)(q, k, v)
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e)
        print("ok: estimate + block_sparse_attention under torch.compile(fullgraph=True)")

    @unittest.skipIf(TORCH_VERSION < (2, 5), "FlexAttention needs torch >= 2.5")
    def test_flex_attention_with_our_block_mask(self):
        from torch.nn.attention.flex_attention import flex_attention

        q = torch.randn(1, 4, 384, 64, device=DEVICE, dtype=DTYPE)
        k = torch.randn(1, 4, 384, 64, device=DEVICE, dtype=DTYPE)
        v = torch.randn(1, 4, 384, 64, device=DEVICE, dtype=DTYPE)
        _, mask = xattn.ops.estimate(q, k, [0.3, 0.6, 0.9, 1.0], block_size=128)
        expected, _ = xattn.ops.block_sparse_attention(q, k, v, mask)
        block_mask = xattn.to_block_mask(mask, 128, 384, 384)
        self.assertTrue(torch.equal(block_mask.to_dense().bool().cpu(),
                                    mask.cpu() & torch.ones(3, 3, dtype=torch.bool).tril()))
        actual = flex_attention(q, k, v, block_mask=block_mask)
        tolerance = 2e-2 if DTYPE == torch.bfloat16 else 1e-4
        torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)
        print("ok: flex_attention with xattn.to_block_mask equals block_sparse_attention")


if __name__ == "__main__":
    unittest.main()
