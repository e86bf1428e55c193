#!/usr/bin/env python3
"""Dense causal attention with grouped K/V heads, two ways, on the GPU: SDPA with enable_gqa=True
against K/V expanded to the query heads (what transformers and xattn's dense paths do), bf16,
batch 1, medians of 10 CUDA-event timings. Prints one line per shape.

    python3 bench/sdpa_gqa.py [--lengths 8192,16384,65536]
"""
import argparse

import torch
import torch.nn.functional as F

from cuda_timing import median_ms


def timed(fn):
    return median_ms(fn, reps=10, warmup=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="8192,16384,32768,65536")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("heads q/kv  d      L   enable_gqa ms   expanded ms   gqa / expanded")
    for hq, hkv, d in ((6, 2, 64), (32, 8, 128)):
        for length in (int(x) for x in args.lengths.split(",")):
            q = torch.randn(1, hq, length, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(1, hkv, length, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            group = hq // hkv

            def expanded():
                ke = k.unsqueeze(2).expand(1, hkv, group, length, d).reshape(1, hq, length, d)
                ve = v.unsqueeze(2).expand(1, hkv, group, length, d).reshape(1, hq, length, d)
                return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)

            def gqa():
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

            a, b = timed(gqa), timed(expanded)
            print(f"{hq:5d}/{hkv:<4d} {d:4d} {length:7d} {a:14.3f} {b:13.3f} {a / b:15.2f}x")
            del q, k, v


if __name__ == "__main__":
    main()
