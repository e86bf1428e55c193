"""Tests of the xattn Python package (python/xattn) with Debian's python3-torch and python3-h5py.

* load_profile reads every shipped profile and one written now by `xattn calibrate` field for
  field as `xattn profile export --json` does, and refuses damaged files naming the same field
  the C++ reader names (each damaged file is also given to `xattn profile show`);
* xattn.ops: prefill with scale and return_lse against a float64 dense reference, and with a
  sparse selection against attention over exactly the kept blocks; thresholds as a tensor, a
  list or a profile layer; [batch, len, heads, head_dim] refused with a message that says so;
* the Meta kernels: meta tensors in, the right shapes and dtypes out, shape errors at trace time;
* xattn.sparse: block CSR and torch.sparse_bsr_tensor against a brute-force conversion;
  to_block_mask against the mask on torch >= 2.5, a clear error before;
* on CUDA (skipped without a GPU): prefill's output and lse in bfloat16 against the reference.

Run: PYTHONPATH=python XATTN_OPS=build/runtime/libxattn_ops.so XATTN_CLI=build/calibrate/xattn \
         python3 tests/python/test_package.py
(an installed package needs neither PYTHONPATH nor XATTN_OPS). Exits 77 (skipped) when torch or
h5py cannot be imported.
"""

import json
import math
import os
import shutil
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
import xattn  # noqa: E402
from xattn import ops  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
XATTN_CLI = os.environ.get("XATTN_CLI", os.path.join(REPO_ROOT, "build", "calibrate", "xattn"))
PROFILES = [os.path.join(REPO_ROOT, "profiles", name)
            for name in ("xattn-byte.h5", "xattn-byte-kl.h5", "xattn-byte-eps0.1.h5")]
TORCH_VERSION = tuple(int(part) for part in torch.__version__.split(".")[:2])


def reference(q, k, v, scale=None, causal=True, block_mask=None, block_size=None, window=0):
    """float64 attention (GQA by head groups, bottom-right causal), optionally over the kept
    blocks of a bool block mask only, and within a sliding window (query p sees keys
    p - window + 1 .. p): (out [b, Hq, Lq, d], lse [b, Hq, Lq])."""
    q, k, v = (t.double() for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = q @ k.transpose(-1, -2) * scale
    lq, lk = q.shape[2], k.shape[2]
    hidden = torch.zeros(lq, lk, dtype=torch.bool)
    if causal:
        hidden |= torch.arange(lk).unsqueeze(0) > torch.arange(lq).unsqueeze(1) + (lk - lq)
    if window > 0:
        position = torch.arange(lq).unsqueeze(1) + (lk - lq)
        hidden |= torch.arange(lk).unsqueeze(0) <= position - window
    hidden = hidden.expand(logits.shape)
    if block_mask is not None:
        token_mask = block_mask.cpu().repeat_interleave(block_size, 2).repeat_interleave(
            block_size, 3)[:, :, :lq, :lk]
        hidden = hidden | ~token_mask
    logits = logits.masked_fill(hidden, -math.inf)
    return torch.softmax(logits, -1) @ v, torch.logsumexp(logits, -1)


def relative_error(actual, expected):
    return float((actual.double().cpu() - expected.cpu()).norm() / expected.norm())


class ProfileTest(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.folder.cleanup()

    def export_json(self, path):
        out = os.path.join(self.folder.name, os.path.basename(path) + ".json")
        result = subprocess.run([XATTN_CLI, "profile", "export", "--json", out, path],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(out, encoding="utf-8") as f:
            return out, json.load(f)

    def assert_close_matrix(self, actual, expected, field):
        self.assertEqual(np.shape(actual), np.shape(expected), field)
        # JSON holds each float32 as its shortest decimal: the same float32.
        np.testing.assert_array_equal(np.float32(actual), np.float32(expected), err_msg=field)

    def test_reads_profiles_like_the_cli(self):
        # The shipped ones (formats 1.2 and 1.3, with and without a frontier) and one the tool
        # writes now (from the bundled capture).
        fresh = os.path.join(self.folder.name, "fresh.h5")
        result = subprocess.run(
            [XATTN_CLI, "calibrate", "--capture",
             os.path.join(REPO_ROOT, "examples", "data", "sample_capture.h5"), "--out", fresh,
             "--stats-out", os.path.join(self.folder.name, "fresh-stats.h5")],
            capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        for path in PROFILES + [fresh]:
            with self.subTest(profile=os.path.basename(path)):
                profile = xattn.load_profile(path)
                json_path, data = self.export_json(path)
                self.assertEqual(profile.model, data["model"])
                self.assertEqual(profile.kernel, data["kernel"])
                self.assertEqual((profile.format_major, profile.format_minor),
                                 (data["format_version"]["major"],
                                  data["format_version"]["minor"]))
                self.assert_close_matrix(profile.thresholds, data["thresholds"], "thresholds")
                for name in ("density", "error"):
                    self.assert_close_matrix(profile.predicted[name], data["predicted"][name],
                                             name)
                for name in ("mean_density", "mean_error"):
                    self.assertAlmostEqual(profile.predicted[name], data["predicted"][name],
                                           places=12)
                self.assertEqual(profile.budget["metric"], data["budget"]["metric"])
                self.assertEqual(profile.calibration_data["lengths"],
                                 data["calibration_data"]["lengths"])
                self.assertEqual(profile.calibration_data["holdout_samples"],
                                 data["calibration_data"].get("holdout_samples", []))
                self.assertEqual(sorted(profile.validation), sorted(data["validation"]))
                self.assertEqual(profile.frontier is None, data.get("frontier") is None)
                # The JSON export loads to the same profile.
                again = xattn.load_profile(json_path)
                self.assertEqual(again.thresholds, profile.thresholds)
                self.assertEqual(again.predicted, profile.predicted)
                self.assertEqual((again.num_layers, again.heads_q, again.block_size,
                                  again.stride, again.dense_last_query_block),
                                 (profile.num_layers, profile.heads_q, profile.block_size,
                                  profile.stride, profile.dense_last_query_block))

    def damaged(self, name, change):
        path = os.path.join(self.folder.name, name + ".h5")
        shutil.copyfile(PROFILES[0], path)
        with h5py.File(path, "r+") as f:
            change(f)
        return path

    def test_damaged_files_name_the_field_like_the_cli(self):
        def replace(f, name, value):
            del f[name]
            f[name] = value

        def set_attr(obj, name, value):
            obj.attrs[name] = value

        cases = [
            ("no_heads_kv", lambda f: f["model"].attrs.__delitem__("heads_kv"),
             "/model/heads_kv is missing"),
            ("heads_kv_text", lambda f: set_attr(f["model"], "heads_kv", "two"),
             "/model/heads_kv must be an integer"),
            ("heads_kv_3", lambda f: set_attr(f["model"], "heads_kv", np.int64(4)),
             "/model/heads_kv"),
            ("thresholds_shape", lambda f: replace(f, "thresholds", np.ones((6, 5), np.float32)),
             "/thresholds has shape [6, 5], expected [6, 6]"),
            ("thresholds_int", lambda f: replace(f, "thresholds", np.ones((6, 6), np.int32)),
             "/thresholds must hold floating-point numbers"),
            ("tau_above_one", lambda f: f["thresholds"].__setitem__((2, 3), 1.5),
             "/thresholds"),
            ("tau_nan", lambda f: f["thresholds"].__setitem__((0, 0), np.nan), "/thresholds"),
            ("stride_7", lambda f: set_attr(f["kernel"], "stride", np.int64(7)),
             "/kernel/stride"),
            ("density_negative", lambda f: f["predicted/density"].__setitem__((1, 1), -0.5),
             "/predicted/density"),
            ("no_epsilon", lambda f: f["budget"].attrs.__delitem__("epsilon"),
             "/budget/epsilon is missing"),
            ("model_dataset", lambda f: replace(f, "model", np.zeros(3)),
             "/model must be a group"),
            ("holdout_descending", lambda f: replace(f["calibration_data"], "holdout_samples",
                                                     np.array([1, 0], np.int64)),
             "/calibration_data/holdout_samples"),
            ("sample_count", lambda f: set_attr(f["calibration_data"], "sample_count",
                                                np.int64(3)),
             "/calibration_data/lengths"),
            ("windows_length", lambda f: f["kernel"].create_dataset(
                "layer_windows", data=np.array([16, 0], np.int64)), "/kernel/layer_windows"),
            ("window_negative", lambda f: f["kernel"].create_dataset(
                "layer_windows", data=np.array([16, -1, 0, 0, 0, 0], np.int64)),
             "/kernel/layer_windows"),
            ("windows_float", lambda f: f["kernel"].create_dataset(
                "layer_windows", data=np.full(6, 16.0)), "/kernel/layer_windows"),
            ("major_2", lambda f: set_attr(f, "format_major", np.int32(2)),
             "format version 2."),
            ("not_a_profile", lambda f: set_attr(f, "format", "xattn-capture"),
             "is not an xattn profile"),
        ]
        for name, change, expected in cases:
            with self.subTest(case=name):
                path = self.damaged(name, change)
                with self.assertRaises(xattn.ProfileError) as raised:
                    xattn.load_profile(path)
                message = str(raised.exception)
                self.assertIn(expected, message)
                self.assertNotIn("\n", message)
                cli = subprocess.run([XATTN_CLI, "profile", "show", path], capture_output=True,
                                     text=True, timeout=60)
                self.assertEqual(cli.returncode, 3, cli.stdout + cli.stderr)
                field = expected.split(" ")[0] if expected.startswith("/") else expected
                self.assertIn(field, cli.stderr)

        text = os.path.join(self.folder.name, "text.h5")
        with open(text, "w", encoding="utf-8") as f:
            f.write("thresholds: 0.9\n")
        with self.assertRaisesRegex(xattn.ProfileError, "not an HDF5 file"):
            xattn.load_profile(text)
        with self.assertRaisesRegex(FileNotFoundError, "no such file"):
            xattn.load_profile(os.path.join(self.folder.name, "absent.h5"))

    def test_bad_json_names_the_field(self):
        _, data = self.export_json(PROFILES[0])
        data["thresholds"][0] = data["thresholds"][0][:-1]
        path = os.path.join(self.folder.name, "bad.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
        with self.assertRaisesRegex(xattn.ProfileError, r"/thresholds must be \[6\]\[6\]"):
            xattn.load_profile(path)

    def test_layer_windows_like_the_cli(self):
        # Format 1.5: /kernel/layer_windows, read as the CLI exports it, through JSON too; a
        # profile layer passes its window to the ops. Without the dataset: no window.
        windows = [0, 16, 0, 100, 0, 0]
        path = self.damaged("windows", lambda f: f["kernel"].create_dataset(
            "layer_windows", data=np.array(windows, np.int64)))
        profile = xattn.load_profile(path)
        json_path, data = self.export_json(path)
        self.assertEqual(data["kernel"]["layer_windows"], windows)
        self.assertEqual(profile.kernel, data["kernel"])
        self.assertEqual(profile.layer_windows, windows)
        self.assertEqual(xattn.load_profile(json_path).layer_windows, windows)
        self.assertEqual([profile.layer(i).window for i in range(6)], windows)
        plain = xattn.load_profile(PROFILES[0])
        self.assertEqual((plain.layer_windows, plain.layer(3).window), ([], 0))
        self.assertNotIn("layer_windows", plain.kernel)
        torch.manual_seed(5)
        q = torch.randn(1, profile.heads_q, 400, profile.head_dim)
        k = torch.randn(1, profile.heads_kv, 400, profile.head_dim)
        v = torch.randn(1, profile.heads_kv, 400, profile.head_dim)
        layer = profile.layer(3)
        settings = dict(stride=profile.stride, block_size=profile.block_size,
                        dense_last_query_block=profile.dense_last_query_block)
        by_layer = ops.prefill(q, k, v, layer)
        self.assertTrue(torch.equal(by_layer, ops.prefill(q, k, v, layer.thresholds, window=100,
                                                          **settings)))
        self.assertFalse(torch.equal(by_layer, ops.prefill(q, k, v, layer.thresholds,
                                                           **settings)))
        self.assertTrue(torch.equal(ops.prefill(q, k, v, layer, window=0),
                                    ops.prefill(q, k, v, layer.thresholds, **settings)))

    def test_layer(self):
        profile = xattn.load_profile(PROFILES[0])
        layer = profile.layer(5)
        self.assertEqual(layer.thresholds, profile.thresholds[5])
        self.assertEqual((layer.stride, layer.block_size), (profile.stride, profile.block_size))
        with self.assertRaisesRegex(IndexError, "layers 0..5"):
            profile.layer(6)


class OpsTest(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(11)

    def qkv(self, heads_q=4, heads_kv=2, len_q=300, len_k=300, d=64, dtype=torch.float32,
            device="cpu"):
        return (torch.randn(1, heads_q, len_q, d, device=device, dtype=dtype),
                torch.randn(1, heads_kv, len_k, d, device=device, dtype=dtype),
                torch.randn(1, heads_kv, len_k, d, device=device, dtype=dtype))

    def test_prefill_scale_and_lse_at_tau_one_equal_dense(self):
        for len_q, len_k, causal, scale in ((1, 1, True, None), (129, 129, True, 0.3),
                                            (100, 300, True, None), (300, 300, False, 0.05)):
            with self.subTest(len_q=len_q, len_k=len_k, causal=causal, scale=scale):
                q, k, v = self.qkv(len_q=len_q, len_k=len_k)
                out, lse = ops.prefill(q, k, v, [1.0] * 4, block_size=64, causal=causal,
                                       scale=scale, return_lse=True)
                expected_out, expected_lse = reference(q, k, v, scale, causal)
                self.assertEqual(lse.dtype, torch.float32)
                self.assertEqual(tuple(lse.shape), (1, 4, len_q))
                self.assertLess(relative_error(out, expected_out), 1e-5)
                self.assertLess(float((lse.double() - expected_lse).abs().max()), 1e-4)
                alone = ops.prefill(q, k, v, [1.0] * 4, block_size=64, causal=causal,
                                    scale=scale)
                self.assertTrue(torch.equal(alone, out))

    def test_sparse_lse_is_over_the_kept_blocks(self):
        q, k, v = self.qkv(len_q=500, len_k=500)
        tau, scale, stride = [0.3, 0.6, 0.9, 0.5], 0.09, 8
        out, lse = ops.prefill(q, k, v, tau, block_size=64, stride=stride, scale=scale,
                               return_lse=True)
        # The same selection from estimate at the scoring scale prefill uses: scale / stride.
        _, mask = ops.estimate(q, k, tau, block_size=64, stride=stride, scale=scale / stride)
        self.assertLess(float(mask.float().mean()), 0.9)  # really sparse
        expected_out, expected_lse = reference(q, k, v, scale, True, mask, 64)
        self.assertLess(relative_error(out, expected_out), 1e-5)
        self.assertLess(float((lse.double() - expected_lse).abs().max()), 1e-4)
        dense_out, dense_lse = reference(q, k, v, scale, True)
        self.assertGreater(relative_error(out, dense_out), 1e-3)  # the selection mattered
        self.assertTrue(bool((lse.double() <= dense_lse + 1e-5).all()))  # fewer keys, less mass

    def test_thresholds_as_tensor_list_or_profile_layer(self):
        profile = xattn.load_profile(PROFILES[0])
        layer = profile.layer(2)
        q, k, v = self.qkv(heads_q=profile.heads_q, heads_kv=profile.heads_kv, len_q=400,
                           len_k=400, d=profile.head_dim)
        by_layer = ops.prefill(q, k, v, layer)
        settings = dict(stride=profile.stride, block_size=profile.block_size,
                        dense_last_query_block=profile.dense_last_query_block)
        by_list = ops.prefill(q, k, v, layer.thresholds, **settings)
        by_tensor = ops.prefill(q, k, v, torch.tensor(layer.thresholds), **settings)
        self.assertTrue(torch.equal(by_layer, by_list))
        self.assertTrue(torch.equal(by_layer, by_tensor))
        other = ops.prefill(q, k, v, layer, block_size=64)  # explicit settings win
        self.assertFalse(torch.equal(by_layer, other))
        with self.assertRaisesRegex(TypeError, "one τ per query head"):
            ops.prefill(q, k, v, 0.9)

    def test_window(self):
        # A sliding window: tau = 1 keeps every block inside it (equal to windowed dense
        # attention); a sparse selection attends exactly its kept blocks within the window; no
        # block before a query block's window is ever selected; bad windows are refused.
        q, k, v = self.qkv(len_q=300, len_k=400)
        for window in (1, 50, 64, 200, 1000):
            with self.subTest(window=window):
                out, lse = ops.prefill(q, k, v, [1.0] * 4, block_size=64, window=window,
                                       return_lse=True)
                expected_out, expected_lse = reference(q, k, v, window=window)
                self.assertLess(relative_error(out, expected_out), 1e-5)
                self.assertLess(float((lse.double() - expected_lse).abs().max()), 1e-4)
                tau = [0.3, 0.6, 0.9, 0.5]
                _, mask = ops.estimate(q, k, tau, block_size=64, window=window)
                query_block_start = torch.arange(mask.shape[2]) * 64 + 100  # offset len_k - len_q
                first_allowed = torch.clamp(query_block_start - window + 1, min=0) // 64
                before = torch.arange(mask.shape[3]).unsqueeze(0) < first_allowed.unsqueeze(1)
                self.assertFalse(bool((mask & before).any()))
                sparse_out, _ = ops.block_sparse_attention(q, k, v, mask, window=window)
                expected_sparse, _ = reference(q, k, v, None, True, mask, 64, window)
                self.assertLess(relative_error(sparse_out, expected_sparse), 1e-5)
                self.assertTrue(torch.equal(
                    ops.prefill(q, k, v, tau, block_size=64, window=window),
                    ops.block_sparse_attention(
                        q, k, v, ops.estimate(q, k, tau, block_size=64, window=window)[1],
                        window=window)[0]))
        with self.assertRaisesRegex(RuntimeError, "window -1"):
            ops.prefill(q, k, v, [0.9] * 4, window=-1)
        with self.assertRaisesRegex(RuntimeError, "causal"):
            ops.prefill(q, k, v, [0.9] * 4, causal=False, window=16)

    def test_sequence_major_layout_is_refused(self):
        q, k, v = self.qkv(heads_q=4, heads_kv=4, len_q=256, len_k=256)
        with self.assertRaisesRegex(RuntimeError, r"looks like \[batch, len, heads, head_dim\]"):
            ops.prefill(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), [0.9] * 4)
        q, k, v = self.qkv(heads_q=8, heads_kv=2, len_q=256, len_k=256)
        with self.assertRaisesRegex(RuntimeError, r"q.transpose\(1, 2\)"):
            ops.prefill(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), [0.9] * 8)

    def test_meta_kernels(self):
        q, k, v = (t.to("meta", torch.bfloat16) for t in self.qkv(len_q=200, len_k=330))
        tau = torch.full((4,), 0.9, device="meta")
        out, lse = ops.prefill(q, k, v, tau, return_lse=True)
        self.assertEqual((out.device.type, out.dtype, tuple(out.shape)),
                         ("meta", torch.bfloat16, (1, 4, 200, 64)))
        self.assertEqual((lse.dtype, tuple(lse.shape)), (torch.float32, (1, 4, 200)))
        self.assertEqual(tuple(ops.prefill(q, k, v, [0.5] * 4).shape), (1, 4, 200, 64))
        for block_size, blocks in ((64, (4, 6)), (128, (2, 3))):
            scores, mask = ops.estimate(q, k, tau, block_size=block_size)
            self.assertEqual((scores.dtype, mask.dtype), (torch.float32, torch.bool))
            self.assertEqual(tuple(scores.shape), (1, 4) + blocks)
            self.assertEqual(tuple(mask.shape), (1, 4) + blocks)
            out, lse = ops.block_sparse_attention(q, k, v, mask)
            self.assertEqual((tuple(out.shape), tuple(lse.shape)), ((1, 4, 200, 64), (1, 4, 200)))
        count = torch.empty(1, 4, 2, dtype=torch.int32, device="meta")
        index = torch.empty(1, 4, 2, 3, dtype=torch.int32, device="meta")
        out, _ = ops.block_sparse_attention_compact(q, k, v, count, index)
        self.assertEqual(out.dtype, torch.bfloat16)
        packed = ops.prefill_varlen(torch.empty(30, 4, 64, device="meta"),
                                    torch.empty(40, 2, 64, device="meta"),
                                    torch.empty(40, 2, 64, device="meta"),
                                    torch.empty(3, dtype=torch.int32, device="meta"),
                                    torch.empty(3, dtype=torch.int32, device="meta"), tau)
        self.assertEqual(tuple(packed.shape), (30, 4, 64))
        wrong = torch.empty(1, 200, 4, 64, device="meta")  # [batch, len, heads, head_dim]
        with self.assertRaisesRegex(RuntimeError, r"looks like \[batch, len, heads"):
            ops.prefill(wrong, wrong, wrong, tau)
        with self.assertRaisesRegex(RuntimeError, "multiple of heads of k"):
            ops.prefill(q, k[:, :1].expand(1, 3, 330, 64), v[:, :1].expand(1, 3, 330, 64), tau)


class SparseTest(unittest.TestCase):
    def setUp(self):
        generator = torch.Generator().manual_seed(5)
        self.mask = torch.rand(2, 3, 5, 7, generator=generator) < 0.4

    def brute_force(self, mask):
        indptr, indices = [], []
        for b in range(mask.shape[0]):
            for h in range(mask.shape[1]):
                pointers, columns = [0], []
                for i in range(mask.shape[2]):
                    for j in range(mask.shape[3]):
                        if mask[b, h, i, j]:
                            columns.append(j)
                    pointers.append(len(columns))
                indptr.append(pointers)
                indices.append(columns)
        return indptr, indices

    def test_bsr_equals_brute_force_for_both_forms(self):
        indptr, indices = self.brute_force(self.mask)
        count = self.mask.sum(-1).int()
        order = torch.where(self.mask, torch.arange(7), torch.arange(7) + 7).sort(-1).values
        index = torch.where(order < 7, order, torch.full_like(order, -1)).int()
        for selection in (self.mask, (count, index)):
            rows = xattn.to_bsr(selection, 64)
            self.assertEqual(rows.indptr.dtype, torch.int32)
            for b in range(2):
                for h in range(3):
                    crow, col = rows.head(b, h)
                    self.assertEqual(crow.tolist(), indptr[b * 3 + h])
                    self.assertEqual(col.tolist(), indices[b * 3 + h])
                    self.assertEqual(col.dtype, torch.int32)

    def test_sparse_bsr_tensor_expands_the_blocks(self):
        dense = xattn.to_sparse_bsr(self.mask, 4, batch=1, head=2).to_dense()
        expected = self.mask[1, 2].float().repeat_interleave(4, 0).repeat_interleave(4, 1)
        self.assertEqual(tuple(dense.shape), (20, 28))
        self.assertTrue(torch.equal(dense, expected))

    def test_compact_form_with_bad_index_is_refused(self):
        count = torch.full((1, 1, 2), 1, dtype=torch.int32)
        index = torch.tensor([[[[0, -1], [5, -1]]]], dtype=torch.int32)
        with self.assertRaisesRegex(ValueError, r"outside \[0, 2\)"):
            xattn.to_bsr((count, index), 64)

    def test_to_block_mask(self):
        if TORCH_VERSION < (2, 5):
            with self.assertRaisesRegex(RuntimeError, r"torch >= 2.5"):
                xattn.to_block_mask(self.mask, 128, 640, 896)
            return
        block_mask = xattn.to_block_mask(self.mask, 128, 640, 896, causal=False)
        self.assertTrue(torch.equal(block_mask.to_dense().bool(), self.mask))


@unittest.skipUnless(torch.cuda.is_available(), "no CUDA device")
class CudaTest(unittest.TestCase):
    """prefill with scale and return_lse through the CUDA kernels (bfloat16), on the GPU."""

    def test_prefill_lse_on_cuda(self):
        torch.manual_seed(3)
        for d, scale, tau in ((128, None, 1.0), (128, 0.05, 0.9), (64, 0.2, 0.7)):
            with self.subTest(d=d, scale=scale, tau=tau):
                q = torch.randn(1, 8, 1000, d, device="cuda", dtype=torch.bfloat16)
                k = torch.randn(1, 2, 1000, d, device="cuda", dtype=torch.bfloat16)
                v = torch.randn(1, 2, 1000, d, device="cuda", dtype=torch.bfloat16)
                out, lse = ops.prefill(q, k, v, [tau] * 8, scale=scale, return_lse=True)
                _, mask = ops.estimate(q, k, [tau] * 8,
                                       scale=None if scale is None else scale / 8)
                expected_out, expected_lse = reference(q.cpu(), k.cpu(), v.cpu(), scale, True,
                                                       mask, 128)
                self.assertEqual((out.dtype, lse.dtype), (torch.bfloat16, torch.float32))
                self.assertLess(relative_error(out, expected_out), 2e-2)
                self.assertLess(float((lse.double().cpu() - expected_lse).abs().max()), 2e-2)


if __name__ == "__main__":
    unittest.main()
