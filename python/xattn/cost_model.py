"""Density-aware dispatch for the transformers adapter: the same rule as the C++ engine's
(runtime/include/xattn/cost_model.h, which says where the built-in numbers come from).

Per call and layer: the predicted kept density at this key length (the profile's density fit, or
its calibrated density at every length for profiles before format 1.4), the predicted cost of
estimate + sparse attention and of dense attention from a per-device cost table, the cheaper one.
A cost table file is the JSON ``xattn_cost_table`` (bench/cost_table.cpp) writes.
"""

import json
import math
import os

# Units: one allowed (query, key) pair x one query head x one head_dim element.
H200 = {
    "device": "NVIDIA H200",
    "source": "docs/benchmarks.md, H200 sm_90a kernels and cuDNN SDPA, 2026-12-01",
    "estimate": False,
    "dense_ns_per_unit": 7.2e-6,
    "dense_fixed_ms": 0.02,
    "scoring_ns_per_unit": {8: 8.4e-7, 16: 4.3e-7},
    "sparse_ns_per_block_dim": 0.148,
    "sparse_fixed_ms": 0.2,
}
A100_ESTIMATE = {
    "device": "NVIDIA A100 (estimate)",
    "source": "estimate from the A100's peak rates against the H200 measurements, not measured",
    "estimate": True,
    "dense_ns_per_unit": 1.83e-5,
    "dense_fixed_ms": 0.03,
    "scoring_ns_per_unit": {8: 1.9e-6, 16: 8.8e-7},
    "sparse_ns_per_block_dim": 0.455,
    "sparse_fixed_ms": 0.3,
}
_FIELDS = ("dense_ns_per_unit", "dense_fixed_ms", "sparse_ns_per_block_dim", "sparse_fixed_ms")


class CostTableError(ValueError):
    """A cost table file that cannot be used."""


# Sparse runs only when predicted this fraction cheaper than dense (C++: CostTable::min_sparse_gain).
MIN_SPARSE_GAIN = 0.1


def builtin_cost_table(device_name):
    """H200 / H100 get the measured H200 table, every other device the A100 estimate."""
    if "H200" in device_name or "H100" in device_name:
        return dict(H200, estimate="H200" not in device_name)
    return dict(A100_ESTIMATE, device=device_name or "unknown device")


def load_cost_table(path):
    """Reads the JSON cost table ``xattn_cost_table`` writes; CostTableError names the field."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise CostTableError(f"cost table {path} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise CostTableError(f"cost table {path} must be a JSON object")
    table = {"device": data.get("device", ""), "source": data.get("source", ""),
             "estimate": bool(data.get("estimate", False))}
    for name in _FIELDS:
        value = data.get(name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise CostTableError(f"cost table {path} lacks the number '{name}' (>= 0); rewrite it "
                                 "with scripts/gpu-e2e-speed.sh")
        table[name] = float(value)
    scoring = data.get("scoring_ns_per_unit")
    if not isinstance(scoring, dict) or not scoring:
        raise CostTableError(f"cost table {path} lacks scoring_ns_per_unit (stride -> ns per unit)")
    try:
        table["scoring_ns_per_unit"] = {int(k): float(v) for k, v in scoring.items()}
    except (TypeError, ValueError):
        raise CostTableError(f"cost table {path}: scoring_ns_per_unit must map strides to "
                             "numbers") from None
    gain = data.get("min_sparse_gain", MIN_SPARSE_GAIN)
    if not isinstance(gain, (int, float)) or not 0 <= gain < 1:
        raise CostTableError(f"cost table {path}: min_sparse_gain is {gain!r}; it must lie in "
                             "[0, 1) (0.1: sparse must save 10 %)")
    table["min_sparse_gain"] = float(gain)
    return table


def scoring_ns_at(table, stride):
    nearest = min(table["scoring_ns_per_unit"], key=lambda s: abs(math.log2(s / stride)))
    return table["scoring_ns_per_unit"][nearest] * nearest / stride


class DensityModel:
    """density(L) = min(1, density[layer] * (L / reference_len) ** -exponent[layer])."""

    def __init__(self, density, exponent=None, reference_len=0, fitted=False):
        self.density = [float(x) for x in density]
        self.exponent = [float(x) for x in exponent] if exponent else [0.0] * len(self.density)
        self.reference_len = int(reference_len)
        self.fitted = fitted

    @classmethod
    def of_profile(cls, profile):
        fit = getattr(profile, "density_fit", None)
        if fit:
            return cls(fit["density"], fit["exponent"], fit["reference_len"], fitted=True)
        return cls([sum(row) / len(row) for row in profile.predicted["density"]])

    def at(self, layer, len_k):
        d = self.density[layer]
        e = self.exponent[layer]
        if e and self.reference_len > 0 and len_k > 0:
            d *= (len_k / self.reference_len) ** -e
        return min(max(d, 0.0), 1.0)


def allowed_pairs(len_q, len_k, causal=True):
    if not causal:
        return float(len_q) * len_k
    return float(len_q) * (len_k - len_q) + len_q * (len_q + 1) / 2


def _ms(value):
    return f"{value:.3f} ms" if value < 1 else f"{value:.1f} ms"


def decide(table, density, layer, len_q, len_k, heads_q, head_dim, block_size=128, stride=8,
           causal=True, host_ms=0.0):
    """(sparse: bool, reason: str), e.g. "predicted density 46% at 16384: sparse 9.1 ms >= 90% of
    dense 7.5 ms". Sparse only when predicted min_sparse_gain (default 0.1) cheaper than dense.
    host_ms: host time a sparse call costs beyond a dense one, added to the sparse side (it adds
    to the prefill where the forward pass is bound by the host: short prompts, small models)."""
    rho = density.at(layer, len_k)
    pairs = allowed_pairs(len_q, len_k, causal)
    units = pairs * heads_q * head_dim
    dense_ms = table["dense_fixed_ms"] + units * table["dense_ns_per_unit"] * 1e-6
    area = float(block_size) * block_size
    kept_blocks = rho * pairs / area * heads_q
    sparse_ms = (table["sparse_fixed_ms"] + units * scoring_ns_at(table, stride) * 1e-6 +
                 kept_blocks * (area / (128.0 * 128.0)) * head_dim *
                 table["sparse_ns_per_block_dim"] * 1e-6 + host_ms)
    gain = table.get("min_sparse_gain", MIN_SPARSE_GAIN)
    sparse = sparse_ms < (1.0 - gain) * dense_ms
    of_dense = f"{(1.0 - gain) * 100:.0f}% of dense" if gain > 0 else "dense"
    host = f" (host {_ms(host_ms)} of it)" if host_ms > 0 else ""
    reason = (f"predicted density {rho * 100:.0f}% at {len_k}: sparse {_ms(sparse_ms)}{host} "
              f"{'<' if sparse else '>='} {of_dense} {_ms(dense_ms)}")
    if not density.fitted:
        reason += " (profile has no density fit: calibrated density assumed)"
    return sparse, reason
