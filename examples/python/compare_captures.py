#!/usr/bin/env python3
"""Compares two captures of the same model and tokens, layer by layer (q, k and v).

    python3 examples/python/compare_captures.py A.h5 B.h5 [--max-relative 0.03]

Prints, per layer and tensor, the relative L2 difference ||a - b|| / ||b|| in float64 and exits
1 when one exceeds --max-relative. Used on the GPU machine to check the transformers capture hook
(``TransformersCaptureHook``) against ``xattn capture`` of the C++ runner.
"""
import argparse
import sys

import h5py
import numpy as np


def read(dataset):
    data = dataset[()]
    if dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16"):  # raw bits in uint16
        data = (data.astype(np.uint32) << 16).view(np.float32)
    return data.astype(np.float64)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-relative", type=float, default=0.03)
    args = p.parse_args()
    worst = 0.0
    with h5py.File(args.a, "r") as a, h5py.File(args.b, "r") as b:
        layers = sorted(a["layers"].keys(), key=int)
        if layers != sorted(b["layers"].keys(), key=int):
            print(f"layers differ: {layers} against {sorted(b['layers'].keys(), key=int)}")
            return 1
        for layer in layers:
            parts = []
            for name in ("q", "k", "v"):
                if name not in a["layers"][layer] or name not in b["layers"][layer]:
                    continue
                x, y = read(a["layers"][layer][name]), read(b["layers"][layer][name])
                if x.shape != y.shape:
                    print(f"layer {layer} {name}: shapes {x.shape} and {y.shape} differ")
                    return 1
                relative = float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))
                worst = max(worst, relative)
                parts.append(f"{name} {relative:.2e}")
            print(f"layer {layer}: " + ", ".join(parts))
    print(f"worst relative difference {worst:.2e} (limit {args.max_relative})")
    return 0 if worst <= args.max_relative else 1


if __name__ == "__main__":
    sys.exit(main())
