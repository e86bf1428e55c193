"""Tests of xattn.transformers_adapter (patch_model) that need neither transformers nor a GPU.

The attention function runs on CPU through the real op library against a dense float64
reference; transformers' registry is replaced by a stand-in that records what is registered.
The end-to-end check with a real transformers model is a GPU-machine step (README).

Run: PYTHONPATH=python XATTN_OPS=build/runtime/libxattn_ops.so \
         python3 tests/python/test_transformers_adapter.py
(an installed package needs neither). Environment: XATTN_CLI (default build/calibrate/xattn).
Exits 77 (skipped) when torch or h5py cannot be imported.
"""

import copy
import json
import os
import subprocess
import sys
import tempfile
import types
import unittest

try:
    import h5py  # noqa: F401  (patch_model reads the HDF5 profile)
    import torch
except ImportError as missing:
    print(f"skipped: {missing} (install python3-torch and python3-h5py to run this test)")
    sys.exit(77)

sys.dont_write_bytecode = True  # keep the source tree clean
import xattn  # noqa: E402
from xattn import transformers_adapter as xt  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
XATTN_CLI = os.environ.get("XATTN_CLI", os.path.join(REPO_ROOT, "build", "calibrate", "xattn"))
MODEL_DIR = os.path.join(REPO_ROOT, "examples", "models", "xattn-byte")
PROFILE_H5 = os.path.join(REPO_ROOT, "profiles", "xattn-byte.h5")


def bundled_config():
    with open(os.path.join(MODEL_DIR, "config.json"), encoding="utf-8") as f:
        return types.SimpleNamespace(**json.load(f))


class FakeAttention(torch.nn.Module):
    """Stands in for a transformers LlamaAttention: the attributes the adapter reads."""

    def __init__(self, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.is_causal = True


class FakeModel(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layers = torch.nn.ModuleList(
            FakeAttention(i) for i in range(config.num_hidden_layers))


def dense_reference(query, key, value, causal=True, scale=None):
    """float64 attention, bottom-right causal, GQA by head groups; returns [b, Lq, Hq, d]."""
    q, k, v = (t.double() for t in (query, key, value))
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    logits = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal:
        lq, lk = q.shape[2], k.shape[2]
        rows = torch.arange(lq).unsqueeze(1) + (lk - lq)
        logits = logits.masked_fill(torch.arange(lk).unsqueeze(0) > rows, float("-inf"))
    return (torch.softmax(logits, dim=-1) @ v).transpose(1, 2)


class AdapterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        cls.profile_json = os.path.join(cls.folder.name, "profile.json")
        result = subprocess.run([XATTN_CLI, "profile", "export", "--json", cls.profile_json,
                                 PROFILE_H5], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        with open(cls.profile_json, encoding="utf-8") as f:
            cls.profile_data = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def setUp(self):
        self.generator = torch.Generator().manual_seed(7)
        self.dense_calls = []

    def recording_dense(self, module, query, key, value, attention_mask, **kwargs):
        self.dense_calls.append(module.layer_idx)
        return dense_reference(query, key, value).to(query.dtype), None

    def profile_with_tau(self, tau):
        data = copy.deepcopy(self.profile_data)
        data["thresholds"] = [[tau] * len(row) for row in data["thresholds"]]
        return xattn.Profile.from_json_dict(data, source="test-profile")

    def qkv(self, length, dtype=torch.float32):
        config = bundled_config()
        shape = lambda heads: (1, heads, length, config.head_dim)  # noqa: E731
        return tuple(torch.randn(*shape(h), generator=self.generator).to(dtype)
                     for h in (config.num_attention_heads, config.num_key_value_heads,
                               config.num_key_value_heads))

    def test_exported_profile_matches_bundled_model(self):
        profile = xattn.load_profile(self.profile_json)
        self.assertEqual((profile.num_layers, profile.heads_q, profile.block_size), (6, 6, 128))
        # The config.json hash is computed here exactly as `xattn calibrate` computes it.
        xt.check_profile_matches(profile, bundled_config(), model_dir=MODEL_DIR)

    def test_mismatch_names_every_field(self):
        profile = xattn.load_profile(PROFILE_H5)  # the HDF5 file itself
        config = bundled_config()
        config.num_hidden_layers, config.num_key_value_heads = 4, 3
        with self.assertRaises(xattn.ProfileMismatchError) as raised:
            xt.check_profile_matches(profile, config)
        message = str(raised.exception)
        self.assertIn("layers: profile 6, model 4", message)
        self.assertIn("key-value heads: profile 2, model 3", message)
        self.assertNotIn("head_dim", message)

        with tempfile.TemporaryDirectory() as other_dir:
            with open(os.path.join(other_dir, "config.json"), "w", encoding="utf-8") as f:
                f.write("{}")
            with self.assertRaisesRegex(xattn.ProfileMismatchError, "config.json hash"):
                xt.check_profile_matches(profile, bundled_config(), model_dir=other_dir)

    def test_rejects_a_non_profile_json(self):
        with self.assertRaisesRegex(xattn.ProfileError, "profile export --json"):
            xattn.Profile.from_json_dict({"format": "xattn-capture"})

    def test_sparse_path_with_tau_one_equals_dense(self):
        runtime = xt.XAttentionRuntime(self.profile_with_tau(1.0), crossover_len=0,
                                       dense_attention=self.recording_dense)
        module = FakeAttention(3)
        module._xattn_runtime = runtime
        # The module's softmax scale reaches the op (Gemma-style models scale otherwise).
        for length, scaling in ((129, 64 ** -0.5), (300, 64 ** -0.5), (300, 0.3)):
            query, key, value = self.qkv(length)
            output, weights = xt.xattn_attention(module, query, key, value, None,
                                                 scaling=scaling)
            self.assertIsNone(weights)
            self.assertEqual(tuple(output.shape), (1, length, 6, 64))
            expected = dense_reference(query, key, value, scale=scaling)
            error = (output.double() - expected).norm() / expected.norm()
            self.assertLess(float(error), 1e-5)
        self.assertEqual(runtime.calls, {"sparse": 3})
        self.assertEqual(self.dense_calls, [])

    def test_sparse_path_uses_the_layers_thresholds(self):
        # Layer 2 gets tau = 0 (only the forced blocks), the others tau = 1 (every block): only
        # layer 2's output may differ from dense attention.
        profile = self.profile_with_tau(1.0)
        profile.thresholds[2] = [0.0] * len(profile.thresholds[2])
        runtime = xt.XAttentionRuntime(profile, crossover_len=0)
        query, key, value = self.qkv(1024)
        expected = dense_reference(query, key, value)
        errors = {}
        for layer in (0, 2, 5):
            module = FakeAttention(layer)
            module._xattn_runtime = runtime
            output, _ = xt.xattn_attention(module, query, key, value, None)
            errors[layer] = float((output.double() - expected).norm() / expected.norm())
        self.assertLess(errors[0], 1e-5)
        self.assertLess(errors[5], 1e-5)
        self.assertGreater(errors[2], 0.05)

    def test_dense_fallbacks_are_counted(self):
        runtime = xt.XAttentionRuntime(self.profile_with_tau(0.9), crossover_len=512,
                                       dense_attention=self.recording_dense)
        module = FakeAttention(1)
        module._xattn_runtime = runtime
        query, key, value = self.qkv(600)
        xt.xattn_attention(module, query[:, :, -1:], key, value, None)       # decode
        short = self.qkv(200)
        xt.xattn_attention(module, *short, None)                              # below crossover
        padding = torch.ones(1, 1, 600, 600, dtype=torch.bool).tril()
        padding[..., :5] = False                                              # left padding
        xt.xattn_attention(module, query, key, value, padding)
        tokens = torch.ones(1, 600, dtype=torch.long)
        tokens[0, :3] = 0                                                     # 2D padding mask
        xt.xattn_attention(module, query, key, value, tokens)
        self.assertEqual(self.dense_calls, [1, 1, 1, 1])
        self.assertEqual(runtime.calls, {
            "dense (decode)": 1, "dense (shorter than crossover 512)": 1,
            "dense (padded batch)": 2})
        causal_only = torch.zeros(1, 1, 600, 600).masked_fill(
            torch.ones(600, 600, dtype=torch.bool).triu(1), float("-inf"))
        xt.xattn_attention(module, query, key, value, causal_only)            # no padding
        xt.xattn_attention(module, query, key, value, torch.ones(1, 600))    # 2D, no padding
        self.assertEqual(runtime.calls["sparse"], 2)
        self.assertIn("sparse: 2", runtime.summary())

    def test_varlen_op_equals_per_sequence_prefill_with_keyword_defaults(self):
        lengths_q, lengths_k = [200, 1, 70], [200, 90, 130]
        heads_q, heads_kv, d = 6, 2, 64
        q = torch.randn(sum(lengths_q), heads_q, d, generator=self.generator)
        k = torch.randn(sum(lengths_k), heads_kv, d, generator=self.generator)
        v = torch.randn(sum(lengths_k), heads_kv, d, generator=self.generator)
        cu_q = torch.tensor([0, 200, 201, 271], dtype=torch.int32)
        cu_k = torch.tensor([0, 200, 290, 420], dtype=torch.int32)
        tau = torch.full((heads_q,), 0.7)
        packed = torch.ops.xattn.prefill_varlen(q, k, v, cu_q, cu_k, tau, block_size=64)
        self.assertEqual(tuple(packed.shape), tuple(q.shape))
        for b in range(3):
            qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
            alone = torch.ops.xattn.prefill(
                q[qs].transpose(0, 1).unsqueeze(0).contiguous(),
                k[ks].transpose(0, 1).unsqueeze(0).contiguous(),
                v[ks].transpose(0, 1).unsqueeze(0).contiguous(), tau, block_size=64)
            torch.testing.assert_close(packed[qs], alone[0].transpose(0, 1), rtol=1e-5, atol=1e-5)

    def test_cost_rule_dispatches_by_predicted_density(self):
        # The C++ tests' easy table: 1 ns per unit dense, 0.1 scoring, 2e4 per block x d. Bundled
        # shape (6 heads, d 64), 600 keys, block 128 (the profile's): pairs 180300, units
        # 69235200: dense 69.2 ms; sparse 6.92 + rho x 180300 / 16384 x 6 x 64 x 2e4 ns
        # = 6.92 + rho x 84.5 ms: sparse below rho 0.737.
        table = {"dense_ns_per_unit": 1.0, "dense_fixed_ms": 0.0, "sparse_fixed_ms": 0.0,
                 "scoring_ns_per_unit": {8: 0.1}, "sparse_ns_per_block_dim": 2e4,
                 "min_sparse_gain": 0.0}
        profile = self.profile_with_tau(0.9)
        runtime = xt.XAttentionRuntime(profile, crossover_len=0, cost_table=table,
                                       dense_attention=self.recording_dense)
        layers = profile.num_layers
        runtime.density = xattn.cost_model.DensityModel([0.7] + [0.75] * (layers - 1))
        query, key, value = self.qkv(600)
        for layer in (0, 1):
            module = FakeAttention(layer)
            module._xattn_runtime = runtime
            xt.xattn_attention(module, query, key, value, None)
        self.assertEqual(self.dense_calls, [1])
        self.assertEqual(runtime.calls, {"sparse": 1, "dense (predicted slower than dense)": 1})
        # The adapter charges its per-call host time (SPARSE_HOST_MS = 0.1 ms) to the sparse side.
        self.assertEqual(runtime.decisions[1], "predicted density 75% at 600: sparse 70.4 ms "
                         "(host 0.100 ms of it) >= dense 69.2 ms (profile has no density fit: "
                         "calibrated density assumed)")
        self.assertTrue(runtime.decisions[0].startswith("predicted density 70% at 600: sparse "
                                                        "66.2 ms (host 0.100 ms of it) < dense "
                                                        "69.2 ms"))
        # A host time larger than the predicted saving (69.2 - 66.1 ms) turns the call dense.
        sparse, why = xattn.cost_model.decide(table, runtime.density, 0, 600, 600, 6, 64, 128,
                                              host_ms=3.5)
        self.assertFalse(sparse)
        self.assertIn("sparse 69.6 ms (host 3.5 ms of it) >= dense 69.2 ms", why)
        sparse, why = xattn.cost_model.decide(table, runtime.density, 0, 600, 600, 6, 64, 128)
        self.assertTrue(sparse)
        self.assertIn("sparse 66.1 ms < dense 69.2 ms", why)
        with self.assertRaisesRegex(ValueError, "sparse_host_ms is -1"):
            xt.XAttentionRuntime(profile, crossover_len=0, cost_table=table, sparse_host_ms=-1)
        # The default margin: sparse must be predicted 10 % cheaper, so 66.1 ms against 69.2 ms
        # (4.5 % cheaper) runs dense.
        margin = dict(table)
        del margin["min_sparse_gain"]
        sparse, why = xattn.cost_model.decide(margin, runtime.density, 0, 600, 600, 6, 64, 128)
        self.assertFalse(sparse)
        self.assertIn(">= 90% of dense 69.2 ms", why)
        forced = xt.XAttentionRuntime(profile, crossover_len=0, cost_table=table,
                                      force_sparse=True, dense_attention=self.recording_dense)
        forced.density = runtime.density
        module = FakeAttention(1)
        module._xattn_runtime = forced
        xt.xattn_attention(module, query, key, value, None)
        self.assertEqual(forced.calls, {"sparse": 1})

    def test_density_model_of_old_and_fitted_profiles(self):
        profile = self.profile_with_tau(0.9)
        old = xattn.cost_model.DensityModel.of_profile(profile)
        self.assertFalse(old.fitted)
        rows = profile.predicted["density"]
        self.assertAlmostEqual(old.at(2, 131072), sum(rows[2]) / len(rows[2]))
        data = copy.deepcopy(self.profile_data)
        layers = len(data["thresholds"])
        data["density_fit"] = {"reference_len": 4096, "density": [0.4] * layers,
                               "exponent": [0.5] * layers, "lengths": [2048, 4096]}
        fitted = xattn.cost_model.DensityModel.of_profile(
            xattn.Profile.from_json_dict(data, source="fit"))
        self.assertTrue(fitted.fitted)
        self.assertAlmostEqual(fitted.at(0, 16384), 0.2)
        data["density_fit"]["exponent"] = [-1.0] * layers
        with self.assertRaisesRegex(xattn.ProfileError, "/density_fit/exponent"):
            xattn.Profile.from_json_dict(data, source="bad-fit")

    def test_cost_table_file(self):
        path = os.path.join(self.folder.name, "cost.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dict(xattn.cost_model.H200, scoring_ns_per_unit={"8": 8.4e-7}), f)
        table = xattn.cost_model.load_cost_table(path)
        self.assertEqual(table["scoring_ns_per_unit"], {8: 8.4e-7})
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"dense_ns_per_unit": 1}, f)
        with self.assertRaisesRegex(xattn.cost_model.CostTableError, "dense_fixed_ms"):
            xattn.cost_model.load_cost_table(path)
        self.assertIsNone(xt.XAttentionRuntime(self.profile_with_tau(0.9))
                          .table_for(torch.device("cpu")))

    def test_default_crossover(self):
        runtime = xt.XAttentionRuntime(self.profile_with_tau(0.9))
        self.assertEqual(runtime.crossover_for(torch.device("cuda")), 8192)
        self.assertEqual(runtime.crossover_for(torch.device("cpu")), 0)

    def test_patch_model_registers_and_switches(self):
        registered = {}
        stand_in = types.ModuleType("transformers")
        stand_in.AttentionInterface = types.SimpleNamespace(
            register=lambda name, fn: registered.__setitem__(name, fn))
        saved = sys.modules.get("transformers")
        sys.modules["transformers"] = stand_in
        try:
            config = bundled_config()
            config._attn_implementation = "sdpa"
            model = FakeModel(config)
            runtime = xt.patch_model(model, PROFILE_H5, model_dir=MODEL_DIR)
            self.assertIs(registered["xattn"], xt.xattn_attention)
            self.assertEqual(model.config._attn_implementation, "xattn")
            self.assertTrue(all(layer._xattn_runtime is runtime for layer in model.layers))

            wrong = bundled_config()
            wrong.head_dim = 128
            with self.assertRaisesRegex(xattn.ProfileMismatchError, "head_dim: profile 64"):
                xt.patch_model(FakeModel(wrong), self.profile_json)
        finally:
            if saved is None:
                del sys.modules["transformers"]
            else:
                sys.modules["transformers"] = saved


if __name__ == "__main__":
    unittest.main()
