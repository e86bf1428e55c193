#!/usr/bin/env python3
"""Host and GPU time of one attention call, dense against XAttention, as the transformers adapter
makes them: q/k/v arrive as [batch, heads, len, d] views of [batch, len, heads, d] projections and
the output goes back to [batch, len, heads, d]. bf16, batch 1, causal, uniform τ.

host us: launch time per call (30 calls back to back, no synchronisation in between; what a
forward pass that is bound by the host pays); GPU ms: median of 10 CUDA-event timings.

    PYTHONPATH=python XATTN_OPS=build/runtime/libxattn_ops.so python3 bench/op_overhead.py
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cuda_timing import median_ms


def gpu_ms(fn):
    return median_ms(fn, reps=10, warmup=1)


def host_us(fn, calls=30, rounds=5):
    fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - start) / calls * 1e6)
        torch.cuda.synchronize()
    return statistics.median(per_call)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="8192,16384,32768")
    parser.add_argument("--tau", type=float, default=0.9)
    args = parser.parse_args()
    import xattn  # noqa: F401  (loads the op library)

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, tau {args.tau}")
    print("heads q/kv  d      L | dense host us  GPU ms | xattn host us  GPU ms | host extra us")
    for hq, hkv, d in ((6, 2, 64), (32, 8, 128)):
        tau = torch.full((hq,), args.tau, dtype=torch.float32)  # on the CPU, as the adapter
        for length in (int(x) for x in args.lengths.split(",")):
            q = torch.randn(1, length, hq, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
            k = torch.randn(1, length, hkv, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
            v = torch.randn_like(k)

            def dense():
                return F.scaled_dot_product_attention(
                    q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2).contiguous()

            def sparse():
                out = torch.ops.xattn.prefill(q.contiguous(), k.contiguous(), v.contiguous(),
                                              tau, 8, 128, True, False, None)
                return out.transpose(1, 2).contiguous()

            dh, dg = host_us(dense), gpu_ms(dense)
            sh, sg = host_us(sparse), gpu_ms(sparse)
            print(f"{hq:>5}/{hkv:<4} {d:>3} {length:>6} | {dh:>13.1f} {dg:>7.3f} | {sh:>13.1f} "
                  f"{sg:>7.3f} | {sh - dh:>13.1f}", flush=True)


if __name__ == "__main__":
    main()
