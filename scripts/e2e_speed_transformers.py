#!/usr/bin/env python3
"""Prefill time (one forward over the prompt, the time to first token) of a transformers Llama
model with dense sdpa attention against xattn.patch_model with the density-aware dispatch, at
several lengths; one JSON object per length on stdout. Used by scripts/gpu-e2e-speed.sh.

    PYTHONPATH=python XATTN_OPS=build/runtime/libxattn_ops.so \\
      python3 scripts/e2e_speed_transformers.py --model examples/models/xattn-byte \\
      --profile profiles/xattn-byte.h5 --lengths 8192,16384 [--cost-table FILE] [--repeat N]

Dense and patched forwards run in back-to-back pairs (the order alternating); "speedup" is the
median of the pairs' dense / patched ratios, which cancels drift of the machine between pairs.
"""

import argparse
import json
import statistics
import time


def prefill_seconds(model, ids):
    """One timed forward over the prompt (the time to first token), synchronised around it."""
    import torch
    extra = {"logits_to_keep": 1} if _keeps_logits(model) else {}
    with torch.no_grad():
        torch.cuda.synchronize()
        start = time.perf_counter()
        model(ids, **extra)
        torch.cuda.synchronize()
    return time.perf_counter() - start


def use_attention(model, name):
    if hasattr(model, "set_attn_implementation"):  # newer transformers
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name


def paired_times(model, ids, repeat):
    """repeat back-to-back (dense, patched) pairs, the order alternating between pairs so that
    neither side always runs first; returns (dense times, patched times)."""
    import torch
    with torch.no_grad():  # first-call costs untimed
        for name in ("sdpa", "xattn"):
            use_attention(model, name)
            model(ids)
    dense, patched = [], []
    for i in range(repeat):
        for name in (("sdpa", "xattn") if i % 2 == 0 else ("xattn", "sdpa")):
            use_attention(model, name)
            (dense if name == "sdpa" else patched).append(prefill_seconds(model, ids))
    use_attention(model, "xattn")
    return dense, patched


def _keeps_logits(model):
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--lengths", default="8192,16384,32768")
    parser.add_argument("--cost-table", default=None)
    parser.add_argument("--repeat", type=int, default=0,
                        help="pairs per length (default: 31 up to 16K, 15 at 32K, 7 above)")
    args = parser.parse_args()

    import torch
    from transformers import LlamaForCausalLM

    import xattn

    try:
        model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa")
    except TypeError:  # transformers 4 spells it torch_dtype
        model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16,
                                                 attn_implementation="sdpa")
    model = model.cuda().eval()
    lengths = [int(x) for x in args.lengths.split(",")]
    generator = torch.Generator().manual_seed(7)
    prompts = {n: torch.randint(32, 127, (1, n), generator=generator).cuda() for n in lengths}
    runtime = xattn.patch_model(model, args.profile, crossover_len=0, model_dir=args.model,
                                cost_table=args.cost_table)
    for n in lengths:
        runtime.calls.clear()
        pairs = args.repeat or (31 if n <= 16384 else 15 if n <= 32768 else 7)
        dense, patched = paired_times(model, prompts[n], pairs)
        ratio = statistics.median(d / p for d, p in zip(dense, patched))
        print(json.dumps({"runner": "transformers", "model": args.model, "length": n,
                          "dense_ms": round(statistics.median(dense) * 1e3, 3),
                          "patched_ms": round(statistics.median(patched) * 1e3, 3),
                          "speedup": round(ratio, 3),
                          "speedup_of_medians": round(statistics.median(dense) /
                                                      statistics.median(patched), 3),
                          "calls": dict(runtime.calls),
                          "sparse_layers": f"{runtime.calls.get('sparse', 0)}/"
                                           f"{sum(runtime.calls.values())} calls",
                          "decisions": {str(k): v for k, v in sorted(runtime.decisions.items())}}),
              flush=True)


if __name__ == "__main__":
    main()
