"""Bad calls into the op library raise a Python exception and never crash the process.

Each call of issue 11's list (head_dim 96 / 256 on CUDA, heads_kv not dividing heads_q,
len_q > len_k, thresholds of the wrong length, dtype or value, stride 0 / 7, block_size 100,
len 0, a mask of the wrong block count or dtype, cu_seqlens past the tensor or decreasing, ...)
runs in a fresh interpreter (all of them in one first; after a crash, each alone), so a SIGSEGV
fails its case instead of the whole test. A case passes when the call raises RuntimeError whose
message names the problem; on a device where the call is valid (head_dim 96 on the CPU
reference) it must instead return. NaN and Inf in the inputs are not errors: they give
non-finite output, as torch's scaled_dot_product_attention does.

Run: python3 tests/python/test_op_errors.py
Environment: XATTN_OPS (default build/runtime/libxattn_ops.so), XATTN_TEST_DEVICE (cpu, the
default, or cuda: the issue's shapes, q [1, 32, 4096, 128] bfloat16 with 8 k/v heads).
Exits 77 (skipped) when torch cannot be imported or the device is not available.
"""

import json
import os
import subprocess
import sys
import textwrap
import unittest

try:
    import torch
except ImportError as missing:
    print(f"skipped: {missing} (install python3-torch to run this test)")
    sys.exit(77)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
XATTN_OPS = os.environ.get("XATTN_OPS", os.path.join(REPO_ROOT, "build", "runtime",
                                                     "libxattn_ops.so"))
DEVICE = os.environ.get("XATTN_TEST_DEVICE", "cpu")
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    print(f"skipped: XATTN_TEST_DEVICE={DEVICE} but torch sees no CUDA device")
    sys.exit(77)
CUDA = DEVICE.startswith("cuda")

# Shapes: the on CUDA; small on the CPU (the checks come before any work, but the
# valid calls below run the CPU reference).
HQ, HKV, L, D = (32, 8, 4096, 128) if CUDA else (4, 2, 256, 64)
DTYPE = "torch.bfloat16" if CUDA else "torch.float32"

PRELUDE = f"""
import json, sys, torch
torch.ops.load_library({XATTN_OPS!r})
ops = torch.ops.xattn
"""

# Fresh tensors for every case.
TENSORS = f"""
torch.manual_seed(0)
dev, dt = {DEVICE!r}, {DTYPE}
HQ, HKV, L, D = {HQ}, {HKV}, {L}, {D}
def t(*shape, dtype=None):
    return torch.randn(*shape, device=dev, dtype=dtype or dt)
q, k, v = t(1, HQ, L, D), t(1, HKV, L, D), t(1, HKV, L, D)
th = torch.full((HQ,), 0.9, device=dev)
"""

# Runs the cases given as JSON [[name, setup, call], ...] in argv[1] one after the other and
# prints one line per case; a crash ends the output early.
RUNNER = """
for name, setup, call in json.loads(sys.argv[1]):
    space = {"torch": torch, "ops": ops, "sys": sys}
    exec(TENSORS, space)
    exec(setup, space)
    try:
        eval(call, space)
        outcome = ["RETURNED", ""]
    except RuntimeError as error:
        outcome = ["RAISED", " | ".join(str(error).splitlines()[:2])]
    except Exception as error:
        outcome = ["OTHER", type(error).__name__ + ": " + str(error)]
    print("CASE " + json.dumps([name] + outcome), flush=True)
"""

# (name, setup lines, call, words the message must contain, error expected on this device)
CASES = [
    ("head_dim 96", "q, k, v = t(1, HQ, L, 96), t(1, HKV, L, 96), t(1, HKV, L, 96)",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "head_dim 96", CUDA),
    ("head_dim 256", "q, k, v = t(1, HQ, L, 256), t(1, HKV, L, 256), t(1, HKV, L, 256)",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "head_dim 256", CUDA),
    ("heads_kv 3", "k, v = t(1, 3, L, D), t(1, 3, L, D)",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "multiple of heads", True),
    ("len_q > len_k", "k, v = t(1, HKV, L // 4, D), t(1, HKV, L // 4, D)",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "len_q", True),
    ("thresholds of length 3", "th = th[:3]",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "thresholds", True),
    ("stride 0", "", "ops.prefill(q, k, v, th, 0, 128, True, True)", "stride 0", True),
    ("stride 7", "", "ops.prefill(q, k, v, th, 7, 128, True, True)", "stride 7", True),
    ("block_size 100", "", "ops.prefill(q, k, v, th, 4, 100, True, True)", "block_size 100", True),
    ("block_size -128", "", "ops.prefill(q, k, v, th, 8, -128, True, True)", "block_size", True),
    ("len 0", "q, k, v = t(1, HQ, 0, D), t(1, HKV, 0, D), t(1, HKV, 0, D)",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "at least 1", True),
    ("thresholds > 1", "th = th + 0.5",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "[0, 1]", True),
    ("thresholds NaN", "th[1] = float('nan')",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "nan", True),
    ("thresholds int64", "th = torch.ones(HQ, dtype=torch.int64, device=dev)",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "floating-point", True),
    ("estimate stride 0", "", "ops.estimate(q, k, th, stride=0)", "stride 0", True),
    ("estimate block_size 0", "", "ops.estimate(q, k, th, block_size=0)", "block_size 0", True),
    ("estimate scale nan", "", "ops.estimate(q, k, th, scale=float('nan'))", "scale", True),
    ("estimate heads_kv 3", "k = t(1, 3, L, D)", "ops.estimate(q, k, th)", "multiple of heads",
     True),
    ("mask with the wrong block count",
     "mask = torch.ones(1, HQ, L // 128 + 3, L // 128, dtype=torch.bool, device=dev)",
     "ops.block_sparse_attention(q, k, v, mask)", "blocks", True),
    ("float mask", "mask = torch.ones(1, HQ, L // 128, L // 128, device=dev)",
     "ops.block_sparse_attention(q, k, v, mask)", "bool", True),
    ("mask of 16-token blocks",
     "mask = torch.ones(1, HQ, L // 16, L // 16, dtype=torch.bool, device=dev)",
     "ops.block_sparse_attention(q, k, v, mask)", "block_size 16", CUDA),
    ("compact count int64",
     "n = L // 128\ncount = torch.ones(1, HQ, n, dtype=torch.int64, device=dev)\n"
     "index = torch.zeros(1, HQ, n, n, dtype=torch.int32, device=dev)",
     "ops.block_sparse_attention_compact(q, k, v, count, index)", "int32", True),
    ("compact index of the wrong shape",
     "n = L // 128\ncount = torch.ones(1, HQ, n, dtype=torch.int32, device=dev)\n"
     "index = torch.zeros(1, HQ, n, n + 1, dtype=torch.int32, device=dev)",
     "ops.block_sparse_attention_compact(q, k, v, count, index)", "kv_block_index", True),
    ("compact block_size 100",
     "n = L // 128\ncount = torch.ones(1, HQ, n, dtype=torch.int32, device=dev)\n"
     "index = torch.zeros(1, HQ, n, n, dtype=torch.int32, device=dev)",
     "ops.block_sparse_attention_compact(q, k, v, count, index, 100)", "block_size 100", True),
    ("varlen cu_seqlens past the tensor",
     "qp, kp, vp = (x[0].transpose(0, 1).contiguous() for x in (q, k, v))\n"
     "cu = torch.tensor([0, L + 904], dtype=torch.int32, device=dev)",
     "ops.prefill_varlen(qp, kp, vp, cu, cu, th)", "ends at", True),
    ("varlen decreasing cu_seqlens",
     "qp, kp, vp = (x[0].transpose(0, 1).contiguous() for x in (q, k, v))\n"
     "cu = torch.tensor([0, L // 2 + 100, L // 2, L], dtype=torch.int32, device=dev)",
     "ops.prefill_varlen(qp, kp, vp, cu, cu, th)", "ascend", True),
    ("varlen float cu_seqlens",
     "qp, kp, vp = (x[0].transpose(0, 1).contiguous() for x in (q, k, v))\n"
     "cu = torch.tensor([0.0, L], device=dev)",
     "ops.prefill_varlen(qp, kp, vp, cu, cu, th)", "integer", True),
    ("varlen 4-D q", "cu = torch.tensor([0, L], dtype=torch.int32, device=dev)",
     "ops.prefill_varlen(q, k, v, cu, cu, th)", "varlen layout", True),
    ("mixed dtypes", "k = k.to(torch.float16)",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "dtype", True),
    ("float64 q", "q, k, v = (x.double() for x in (q, k, v))",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "dtype", True),
    ("float32 on CUDA", "q, k, v = (x.float() for x in (q, k, v))",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "float32", CUDA),
    ("mixed devices", "k = k.cpu() if dev != 'cpu' else k",
     "ops.prefill(q, k, v, th, 8, 128, True, True)", "same device", CUDA),
]


def run_cases(cases):
    """{name: (outcome, message)} of [(name, setup, call)], all in one fresh interpreter; a case
    that crashed it (and the ones after) are then run alone, each in its own interpreter, and a
    crash is reported as ("CRASHED", signal and output)."""
    def run(batch):
        script = PRELUDE + f"TENSORS = {TENSORS!r}\n" + RUNNER
        return subprocess.run([sys.executable, "-c", script, json.dumps(batch)],
                              capture_output=True, text=True, timeout=600)

    done = run(cases)
    outcomes = {}
    for line in done.stdout.splitlines():
        if line.startswith("CASE "):
            name, outcome, message = json.loads(line[5:])
            outcomes[name] = (outcome, message)
    if done.returncode != 0:
        for case in cases:
            if case[0] in outcomes:
                continue
            alone = run([case])
            if alone.returncode == 0 and alone.stdout.startswith("CASE "):
                _, outcome, message = json.loads(alone.stdout.splitlines()[0][5:])
                outcomes[case[0]] = (outcome, message)
            else:
                outcomes[case[0]] = ("CRASHED", f"exit {alone.returncode} (negative: killed by "
                                     f"that signal): {(alone.stdout + alone.stderr)[-2000:]}")
    return outcomes


class OpErrorsTest(unittest.TestCase):
    def test_a_valid_call_returns(self):
        outcomes = run_cases([("valid", "", "ops.prefill(q, k, v, th, 8, 128, True, True)")])
        self.assertEqual(outcomes["valid"][0], "RETURNED", outcomes)

    def test_compact_counts_past_the_row_are_clamped(self):
        # Counts are not read at the op boundary (that would synchronise); the kernels read at
        # most nKB entries of a row, so an over-long count cannot read past the index tensor.
        setup = ("n = L // 128\ncount = torch.full((1, HQ, n), n + 50, dtype=torch.int32, device=dev)\n"
                 "index = torch.zeros(1, HQ, n, n, dtype=torch.int32, device=dev)")
        outcomes = run_cases([("count past the row", setup,
                               "ops.block_sparse_attention_compact(q, k, v, count, index)")])
        self.assertEqual(outcomes["count past the row"][0], "RETURNED", outcomes)

    def test_bad_calls_raise_instead_of_crashing(self):
        outcomes = run_cases([case[:3] for case in CASES])
        for name, _, _, words, error_expected in CASES:
            with self.subTest(case=name):
                outcome, message = outcomes[name]
                print(f"  {name}: {outcome} {message}", flush=True)
                self.assertNotEqual(outcome, "CRASHED", f"{name}: {message}")
                if error_expected:
                    self.assertEqual(outcome, "RAISED", f"{name}: {message}")
                    self.assertIn(words, message, f"{name}: the message should say '{words}'")
                    self.assertIn("xattn.", message)
                    self.assertNotIn("internal error", message)
                else:
                    self.assertEqual(outcome, "RETURNED", f"{name} is valid on {DEVICE}: {message}")

    def test_non_finite_inputs_give_non_finite_output_as_sdpa_does(self):
        outcomes = run_cases([
            ("nan", "q[0, 0, 5, 0] = float('nan')\nk[0, 0, 3, 1] = float('inf')\n"
                    "def non_finite(out):\n"
                    "    if torch.isfinite(out).all(): raise ValueError('all finite')",
             "non_finite(ops.prefill(q, k, v, th, 8, 128, True, True))")])
        self.assertEqual(outcomes["nan"][0], "RETURNED", outcomes)


if __name__ == "__main__":
    print(f"op library {XATTN_OPS}, device {DEVICE}, q [1, {HQ}, {L}, {D}] {DTYPE}", flush=True)
    unittest.main(verbosity=2)
