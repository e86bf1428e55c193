"""Tests of xattn.capture (python/xattn/capture.py): files it writes are read by the C++ tools.

Run: PYTHONPATH=python XATTN_OPS=build/runtime/libxattn_ops.so python3 tests/python/test_capture.py
(an installed package needs neither). Environment: XATTN_CLI, the xattn executable (default
build/calibrate/xattn). Exits 77 (skipped) when torch or h5py is not importable.
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest

try:
    import h5py
    import numpy as np
    import torch
except ImportError as missing:
    print(f"skipped: {missing} (install python3-torch and python3-h5py to run this test)")
    sys.exit(77)

sys.dont_write_bytecode = True  # keep the source tree clean
from xattn import capture as xattn_capture  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
XATTN_CLI = os.environ.get("XATTN_CLI", os.path.join(REPO_ROOT, "build", "calibrate", "xattn"))

NUM_LAYERS = 4
HEADS_Q, HEADS_KV, HEAD_DIM, LENGTH = 4, 2, 64, 300  # 300: a partial last block of 128


def random_qkv(dtype, generator, length=LENGTH):
    def one(heads):
        return torch.randn(1, heads, length, HEAD_DIM, generator=generator).to(dtype)
    return one(HEADS_Q), one(HEADS_KV), one(HEADS_KV)


def run_estimate(path, *extra):
    result = subprocess.run([XATTN_CLI, "estimate", "--capture", path, *extra],
                            capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def density_rows(output):
    """{layer: [per-head density %..., mean]} from the table `xattn estimate` prints."""
    rows = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("layer"):
            in_table = True
            continue
        if in_table:
            fields = line.split()
            if not fields or not re.fullmatch(r"\d+", fields[0]):
                break
            rows[int(fields[0])] = [float(x) for x in fields[1:]]
    return rows


class CaptureWriterTest(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.generator = torch.Generator().manual_seed(20261128)

    def tearDown(self):
        self.folder.cleanup()

    def path(self, name):
        return os.path.join(self.folder.name, name)

    def leftover_temp_files(self):
        return [n for n in os.listdir(self.folder.name) if ".tmp-" in n]

    def write(self, path, dtype, layers=(0, 3), **options):
        tensors = {}
        with xattn_capture.CaptureWriter(path, model_name="random-test", num_layers=NUM_LAYERS,
                                         **options) as writer:
            for layer in layers:
                tensors[layer] = random_qkv(dtype, self.generator)
                writer.write_layer(layer, *tensors[layer])
        return tensors

    def test_cpp_reader_accepts_all_dtypes(self):
        self.assertTrue(os.access(XATTN_CLI, os.X_OK), f"xattn not found at {XATTN_CLI}")
        for dtype, name in ((torch.float32, "float32"), (torch.float16, "float16"),
                            (torch.bfloat16, "bfloat16")):
            with self.subTest(dtype=name):
                path = self.path(f"capture_{name}.h5")
                self.write(path, dtype)
                with h5py.File(path, "r") as f:
                    self.assertEqual(f.attrs["dtype"], name)
                    self.assertEqual(list(f.attrs["format_version"]), [1, 0])

                code, output = run_estimate(path)
                self.assertEqual(code, 0, output)
                self.assertIn("random-test (source: python-hook)", output)
                self.assertIn("heads 4/2, head_dim 64", output)
                rows = density_rows(output)
                self.assertEqual(sorted(rows), [0, 3], output)
                for values in rows.values():
                    self.assertEqual(len(values), HEADS_Q + 1, output)  # heads + mean
                    for value in values:
                        self.assertTrue(0.0 < value <= 100.0, output)

                # tau = 1 keeps every allowed block: proves the whole file was read as data.
                code, output = run_estimate(path, "--threshold", "1")
                self.assertEqual(code, 0, output)
                for values in density_rows(output).values():
                    self.assertEqual(values, [100.0] * (HEADS_Q + 1), output)

    def test_video_capture_is_non_causal_with_grid(self):
        path = self.path("video.h5")
        with xattn_capture.video_capture(path, model_name="video-test", num_layers=2,
                                         frames=3, height=10, width=10) as writer:
            q, k, v = random_qkv(torch.bfloat16, self.generator)
            self.assertTrue(writer.record(1, q, k, v))
            self.assertFalse(writer.record(1, q, k, v))  # a later denoising step: ignored
        with h5py.File(path, "r") as f:
            self.assertEqual(f.attrs["causal"], 0)
            self.assertEqual((f.attrs["video_frames"], f.attrs["video_height"],
                              f.attrs["video_width"]), (3, 10, 10))
            self.assertEqual(list(f["layers"].keys()), ["1"])
        code, output = run_estimate(path)
        self.assertEqual(code, 0, output)
        self.assertEqual(sorted(density_rows(output)), [1], output)

    def test_bfloat16_round_trip_is_bit_exact(self):
        path = self.path("bf16.h5")
        tensors = self.write(path, torch.bfloat16, layers=(2,))
        q, k, v = tensors[2]
        with h5py.File(path, "r") as f:
            for name, original in (("q", q), ("k", k), ("v", v)):
                dataset = f[f"layers/2/{name}"]
                self.assertEqual(dataset.dtype, np.uint16)
                self.assertEqual(dataset.attrs["dtype"], "bfloat16")
                bits = dataset[...]
                expected = original.view(torch.int16).numpy().view(np.uint16)
                np.testing.assert_array_equal(bits, expected)
                as_float = (bits.astype(np.uint32) << 16).view(np.float32)
                np.testing.assert_array_equal(as_float, original.float().numpy())

    def test_float16_round_trip_is_exact(self):
        path = self.path("fp16.h5")
        tensors = self.write(path, torch.float16, layers=(1,))
        with h5py.File(path, "r") as f:
            self.assertEqual(f["layers/1/q"].dtype, np.float16)
            np.testing.assert_array_equal(f["layers/1/q"][...], tensors[1][0].numpy())

    def test_refuses_to_overwrite(self):
        path = self.path("existing.h5")
        self.write(path, torch.float32)
        before = read_bytes(path)
        with self.assertRaises(FileExistsError) as raised:
            self.write(path, torch.float32)
        self.assertIn("overwrite=True", str(raised.exception))
        self.assertEqual(read_bytes(path), before)
        self.assertEqual(self.leftover_temp_files(), [])

        self.write(path, torch.float16, overwrite=True)
        with h5py.File(path, "r") as f:
            self.assertEqual(f.attrs["dtype"], "float16")

    def test_failure_leaves_nothing_behind(self):
        path = self.path("failed.h5")
        with self.assertRaises(RuntimeError):
            with xattn_capture.CaptureWriter(path, model_name="m", num_layers=2) as writer:
                writer.write_layer(0, *random_qkv(torch.float32, self.generator))
                raise RuntimeError("interrupted")
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.leftover_temp_files(), [])

    def test_rejects_inconsistent_input(self):
        path = self.path("bad.h5")
        writer = xattn_capture.CaptureWriter(path, model_name="m", num_layers=2)
        q, k, v = random_qkv(torch.float32, self.generator)
        with self.assertRaisesRegex(xattn_capture.CaptureError, "not a multiple"):
            writer.write_layer(0, q[:, :3], k, v)
        with self.assertRaisesRegex(xattn_capture.CaptureError, "outside"):
            writer.write_layer(2, q, k, v)
        with self.assertRaisesRegex(xattn_capture.CaptureError, "share one dtype"):
            writer.write_layer(0, q, k, v.half())
        writer.write_layer(0, q, k, v)
        with self.assertRaisesRegex(xattn_capture.CaptureError, "differ"):
            writer.write_layer(1, q, k, None)
        with self.assertRaisesRegex(xattn_capture.CaptureError, "already written"):
            writer.write_layer(0, q, k, v)
        writer.abort()
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.leftover_temp_files(), [])


if __name__ == "__main__":
    unittest.main()
