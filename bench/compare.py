#!/usr/bin/env python3
"""Side-by-side attention benchmark on one GPU, in one process, on the same tensors and masks.

Times, per length and block-mask density:
  ours-sm90   torch.ops.xattn.block_sparse_attention_compact, sm_90a kernel (XATTN_CUDA_KERNEL=sm90)
  ours-sm80   the same op on the sm_80 kernel
  flex        torch.compile(flex_attention) with a BlockMask of the same blocks (diagonal blocks
              partial with a causal mask_mod, the others full), enable_gqa=True
  cudnn/flash torch SDPA dense (causal) on those backends, K/V expanded to the query heads
and once per length the dense mode of our kernels (every allowed block), and the estimate op
(antidiagonal scoring + selection) at S = 8 and 16 on both scoring kernels, so estimate + sparse
can be compared with dense. Masks are random: sink and diagonal blocks kept, each other allowed block kept with the
probability that gives the target density (kept / causally allowed blocks).

Writes JSON and markdown:  python3 bench/compare.py --ops build-gpu/runtime/libxattn_ops.so --out DIR
"""
import argparse
import json
import os
import sys
import time

import torch

from cuda_timing import median_ms


def timed(fn, warmup, reps):
    return median_ms(fn, reps, warmup)


def random_block_mask(heads, nqb, density, generator):
    """[1, heads, nqb, nqb] bool: causal, sink and diagonal kept, others with probability p."""
    allowed = torch.ones(nqb, nqb, dtype=torch.bool, device="cuda").tril()
    diag = torch.eye(nqb, dtype=torch.bool, device="cuda")
    forced = diag.clone()
    forced[:, 0] = True
    n_allowed = allowed.sum().item()
    n_forced = forced.sum().item()
    p = max(0.0, min(1.0, (density * n_allowed - n_forced) / max(1, n_allowed - n_forced)))
    draw = torch.rand(1, heads, nqb, nqb, device="cuda", generator=generator) < p
    return (draw & allowed) | forced


def compact(mask):
    """count [B, H, nQB] and ascending indices [B, H, nQB, nKB] (padding -1), int32."""
    nkb = mask.shape[-1]
    count = mask.sum(-1, dtype=torch.int32)
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    slot = torch.arange(nkb, device=mask.device, dtype=torch.int32)
    index = torch.where(slot < count.unsqueeze(-1), order, torch.full_like(order, -1))
    return count.contiguous(), index.contiguous()


def computed_flops(mask, d, block):
    """FLOPs of the kept blocks (QK^T and PV); diagonal blocks count half (causal)."""
    nqb = mask.shape[-1]
    diag = torch.eye(nqb, dtype=torch.bool, device=mask.device)
    n_diag = (mask & diag).sum().item()
    n_full = (mask & ~diag).sum().item()
    return 4.0 * d * block * block * (n_full + 0.5 * n_diag)


def write_json(folder, results):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "compare.json.tmp"), "w") as f:
        json.dump(results, f, indent=1)
    os.replace(os.path.join(folder, "compare.json.tmp"), os.path.join(folder, "compare.json"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", required=True, help="path of libxattn_ops.so")
    parser.add_argument("--out", required=True, help="output folder (JSON + markdown)")
    parser.add_argument("--lengths", default="16384,32768,65536,131072")
    parser.add_argument("--densities", default="0.05,0.1,0.2,0.5")
    parser.add_argument("--heads-q", type=int, default=32)
    parser.add_argument("--heads-kv", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-flash", action="store_true")
    parser.add_argument("--estimate-only", action="store_true",
                        help="time only the estimate op on both scoring kernels (prints JSON)")
    args = parser.parse_args()

    torch.ops.load_library(args.ops)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    block = 128
    hq, hkv, d = args.heads_q, args.heads_kv, args.head_dim
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    results = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "shape": {"batch": 1, "heads_q": hq, "heads_kv": hkv, "head_dim": d, "dtype": "bfloat16",
                  "causal": True, "block_size": block},
        "rows": [],
        "per_length": [],
    }

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def ours(q, k, v, count, index, kernel):
        os.environ["XATTN_CUDA_KERNEL"] = kernel
        return torch.ops.xattn.block_sparse_attention_compact(q, k, v, count, index, block, True)[0]

    for length in [int(x) for x in args.lengths.split(",")]:
        nqb = length // block
        q = torch.randn(1, hq, length, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(1, hkv, length, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn(1, hkv, length, d, device="cuda", dtype=torch.bfloat16, generator=gen)
        ke = k.repeat_interleave(hq // hkv, dim=1)
        ve = v.repeat_interleave(hq // hkv, dim=1)
        dense_flops = 4.0 * d * hq * length * length / 2
        per = {"length": length}
        if args.estimate_only:
            tau = torch.full((hq,), 0.9, device="cuda", dtype=torch.float32)
            for stride in (8, 16):
                for kernel in ("sm80", "sm90"):
                    os.environ["XATTN_CUDA_KERNEL"] = kernel
                    per[f"estimate_s{stride}_{kernel}_ms"] = timed(
                        lambda: torch.ops.xattn.estimate(q, k, tau, stride, block, True),
                        args.warmup, args.reps)
            print(json.dumps(per), flush=True)
            continue
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            per["cudnn_ms"] = timed(lambda: torch.nn.functional.scaled_dot_product_attention(
                q, ke, ve, is_causal=True), args.warmup, args.reps)
        if not args.skip_flash:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                per["flash_ms"] = timed(lambda: torch.nn.functional.scaled_dot_product_attention(
                    q, ke, ve, is_causal=True), args.warmup, args.reps)
        full = torch.ones(1, hq, nqb, nqb, dtype=torch.bool, device="cuda").tril()
        fc, fi = compact(full)
        for kernel in ("sm90", "sm80"):
            ms = timed(lambda: ours(q, k, v, fc, fi, kernel), args.warmup, args.reps)
            per[f"ours_dense_{kernel}_ms"] = ms
            per[f"ours_dense_{kernel}_tflops"] = dense_flops / ms / 1e9
        per["cudnn_tflops"] = dense_flops / per["cudnn_ms"] / 1e9
        tau = torch.full((hq,), 0.9, device="cuda", dtype=torch.float32)
        for stride in (8, 16):
            scores = {}
            for kernel in ("sm80", "sm90"):
                os.environ["XATTN_CUDA_KERNEL"] = kernel
                scores[kernel] = torch.ops.xattn.estimate(q, k, tau, stride, block, True)[0]
                name = "" if kernel == "sm90" else "_sm80"
                per[f"estimate_s{stride}{name}_ms"] = timed(
                    lambda: torch.ops.xattn.estimate(q, k, tau, stride, block, True), args.warmup,
                    args.reps)
            per[f"estimate_s{stride}_max_abs_diff_sm90_vs_sm80"] = (
                scores["sm90"] - scores["sm80"]).abs().max().item()
        os.environ["XATTN_CUDA_KERNEL"] = "auto"
        results["per_length"].append(per)
        print(json.dumps(per), flush=True)

        for density in [float(x) for x in args.densities.split(",")]:
            mask = random_block_mask(hq, nqb, density, gen)
            count, index = compact(mask)
            diag = torch.eye(nqb, dtype=torch.bool, device="cuda")
            pc, pi = compact(mask & diag)
            fcnt, fidx = compact(mask & ~diag)
            bm = BlockMask.from_kv_blocks(pc, pi, fcnt, fidx, BLOCK_SIZE=block, mask_mod=causal,
                                          seq_lengths=(length, length))
            flops = computed_flops(mask, d, block)
            row = {"length": length, "target_density": density,
                   "density": mask.sum().item() / (hq * nqb * (nqb + 1) / 2)}
            out90 = ours(q, k, v, count, index, "sm90")
            out80 = ours(q, k, v, count, index, "sm80")
            outfx = flex(q, k, v, block_mask=bm, enable_gqa=True)
            row["max_abs_diff_sm90_vs_flex"] = (out90.float() - outfx.float()).abs().max().item()
            row["max_abs_diff_sm90_vs_sm80"] = (out90.float() - out80.float()).abs().max().item()
            row["sm90_ms"] = timed(lambda: ours(q, k, v, count, index, "sm90"), args.warmup, args.reps)
            row["sm80_ms"] = timed(lambda: ours(q, k, v, count, index, "sm80"), args.warmup, args.reps)
            row["flex_ms"] = timed(lambda: flex(q, k, v, block_mask=bm, enable_gqa=True),
                                   args.warmup, args.reps)
            row["sm90_tflops"] = flops / row["sm90_ms"] / 1e9
            row["flex_tflops"] = flops / row["flex_ms"] / 1e9
            row["flex_over_sm90"] = row["flex_ms"] / row["sm90_ms"]
            row["sm80_over_sm90"] = row["sm80_ms"] / row["sm90_ms"]
            row["cudnn_over_sm90"] = per["cudnn_ms"] / row["sm90_ms"]
            for stride in (8, 16):
                row[f"cudnn_over_estimate_s{stride}_plus_sm90"] = per["cudnn_ms"] / (
                    per[f"estimate_s{stride}_ms"] + row["sm90_ms"])
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
        del q, k, v, ke, ve
        torch.cuda.empty_cache()
        write_json(args.out, results)  # after every length: a run cut short keeps what it measured

    write_json(args.out, results)
    lines = [f"# Attention side by side ({results['device']}, torch {results['torch']}, {results['date']})",
             "", f"Command: `{results['command']}`", "",
             f"bf16, batch 1, Hq {hq}, Hkv {hkv}, d {d}, causal, block 128, medians of {args.reps}.",
             "", "| L | density | ours sm90 ms | ours sm80 ms | Flex ms | Flex / sm90 | sm90 TFLOP/s | cuDNN dense ms | cuDNN / (est S8 + sm90) | cuDNN / (est S16 + sm90) | max diff vs Flex |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    per_len = {p["length"]: p for p in results["per_length"]}
    for r in results["rows"]:
        p = per_len[r["length"]]
        lines.append(f"| {r['length'] // 1024}K | {100 * r['density']:.1f} % | {r['sm90_ms']:.2f} | "
                     f"{r['sm80_ms']:.2f} | {r['flex_ms']:.2f} | {r['flex_over_sm90']:.2f}x | "
                     f"{r['sm90_tflops']:.0f} | {p['cudnn_ms']:.2f} | "
                     f"{r['cudnn_over_estimate_s8_plus_sm90']:.2f}x | "
                     f"{r['cudnn_over_estimate_s16_plus_sm90']:.2f}x | {r['max_abs_diff_sm90_vs_flex']:.3g} |")
    lines += ["", "| L | cuDNN dense ms (TFLOP/s) | flash dense ms | ours dense sm90 ms (TFLOP/s) | ours dense sm80 ms | sm90 dense / cuDNN | estimate S8 ms (sm80) | estimate S16 ms (sm80) |",
              "|---|---|---|---|---|---|---|---|"]
    for p in results["per_length"]:
        lines.append(f"| {p['length'] // 1024}K | {p['cudnn_ms']:.2f} ({p['cudnn_tflops']:.0f}) | "
                     f"{p.get('flash_ms', float('nan')):.2f} | {p['ours_dense_sm90_ms']:.2f} "
                     f"({p['ours_dense_sm90_tflops']:.0f}) | {p['ours_dense_sm80_ms']:.2f} | "
                     f"{p['ours_dense_sm90_ms'] / p['cudnn_ms']:.2f}x | {p['estimate_s8_ms']:.2f} "
                     f"({p['estimate_s8_sm80_ms']:.2f}) | {p['estimate_s16_ms']:.2f} "
                     f"({p['estimate_s16_sm80_ms']:.2f}) |")
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
