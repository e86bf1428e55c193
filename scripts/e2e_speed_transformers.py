#!/usr/bin/env python3
"""Prefill time (one forward over the prompt, the time to first token) of a transformers Llama
model with dense sdpa attention against xattn.patch_model with the density-aware dispatch, at
several lengths; one JSON object per length on stdout. Used by scripts/gpu-e2e-speed.sh.

    PYTHONPATH=python XATTN_OPS=build/runtime/libxattn_ops.so \\
      python3 scripts/e2e_speed_transformers.py --model examples/models/xattn-byte \\
      --profile profiles/xattn-byte.h5 --lengths 8192,16384 [--cost-table FILE] [--repeat N]

Three arms run in back-to-back rounds (the order rotating): sdpa, the patched model, and the
patched model with every call dense by the crossover rule ("all_dense_speed": what the adapter's
own work costs on top of sdpa). "speedup" is the median of the rounds' sdpa / patched ratios,
which cancels drift of the machine between rounds; "masks_seen" what the attention function
received as attention_mask in one untimed forward.
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


# The arms timed against each other: transformers' sdpa; the patched model with the dispatch;
# the patched model with every call dense by the crossover rule (only the adapter's own work on
# top of sdpa, the cost rule not even consulted).
ARMS = ("sdpa", "xattn", "xattn, all dense")


def use_arm(model, runtime, arm):
    use_attention(model, "sdpa" if arm == "sdpa" else "xattn")
    runtime.crossover_len = 1 << 40 if arm == "xattn, all dense" else 0


def arm_times(model, runtime, ids, repeat):
    """repeat back-to-back rounds of every arm, the order rotating between rounds so that no
    arm always runs first; returns ({arm: [seconds]}, the dispatch arm's call counts)."""
    import torch
    with torch.no_grad():  # first-call costs untimed
        for arm in ARMS:
            use_arm(model, runtime, arm)
            model(ids)
    times = {arm: [] for arm in ARMS}
    calls = {}
    for i in range(repeat):
        for j in range(len(ARMS)):
            arm = ARMS[(i + j) % len(ARMS)]
            use_arm(model, runtime, arm)
            runtime.calls.clear()
            times[arm].append(prefill_seconds(model, ids))
            if arm == "xattn":
                for what, n in runtime.calls.items():
                    calls[what] = calls.get(what, 0) + n
    use_arm(model, runtime, "xattn")
    return times, calls


def masks_seen(model, runtime, ids):
    """What the attention function receives as attention_mask in one untimed forward of the
    patched model: {"None": n} or {"Tensor [shape]": n}."""
    import torch
    from transformers import AttentionInterface

    from xattn import transformers_adapter as xt

    seen = {}

    def recording(module, query, key, value, attention_mask, **kwargs):
        kind = "None" if attention_mask is None else \
            f"{type(attention_mask).__name__} {list(getattr(attention_mask, 'shape', []))}"
        seen[kind] = seen.get(kind, 0) + 1
        return xt.xattn_attention(module, query, key, value, attention_mask, **kwargs)

    use_arm(model, runtime, "xattn")
    AttentionInterface.register(xt.ATTENTION_NAME, recording)
    try:
        with torch.no_grad():
            model(ids)
    finally:
        AttentionInterface.register(xt.ATTENTION_NAME, xt.xattn_attention)
    return seen


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
                        help="rounds per length (default: 31 up to 16K, 15 at 32K, 7 above)")
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
        pairs = args.repeat or (31 if n <= 16384 else 15 if n <= 32768 else 7)
        times, calls = arm_times(model, runtime, prompts[n], pairs)
        dense = times["sdpa"]

        def paired(arm):
            return round(statistics.median(d / p for d, p in zip(dense, times[arm])), 3)

        patched = times["xattn"]
        print(json.dumps({"runner": "transformers", "model": args.model, "length": n,
                          "dense_ms": round(statistics.median(dense) * 1e3, 3),
                          "patched_ms": round(statistics.median(patched) * 1e3, 3),
                          "speedup": paired("xattn"),
                          "speedup_of_medians": round(statistics.median(dense) /
                                                      statistics.median(patched), 3),
                          "all_dense_ms": round(statistics.median(times["xattn, all dense"]) * 1e3,
                                                3),
                          "all_dense_speed": paired("xattn, all dense"),
                          "rounds": pairs,
                          "calls": calls,
                          "sparse_layers": f"{calls.get('sparse', 0)}/"
                                           f"{sum(calls.values())} calls",
                          "masks_seen": masks_seen(model, runtime, prompts[n]),
                          "decisions": {str(k): v for k, v in sorted(runtime.decisions.items())}}),
              flush=True)


if __name__ == "__main__":
    main()
