#!/usr/bin/env python3
"""Greedy passkey answers of a transformers Llama model: dense (sdpa) against xattn (patch_model).

Every prompt is answered twice with the same weights, greedily through ``model.generate``:
first with transformers' sdpa attention, then after
``xattn.patch_model`` with the profile's per-head thresholds. The output JSON
lists, per prompt length, how many answers are identical, how many are correct under each
attention, the prefill times, and which attention calls ran sparse or dense.

    python3 examples/python/passkey_transformers.py --profile profiles/xattn-byte.h5 \\
        --out passkey_transformers.json [--ops build/runtime/libxattn_ops.so]

The prompts are the bundled model's passkey prompts (scripts/train/eval_passkey.py: <bos>,
haystack window, needle at a depth, question; 5 greedy bytes). ``--crossover 0`` (the default
here) makes every prefill sparse, including the short ones the runtime would run dense.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "train"))


def answer(model, ids, new_tokens, device):
    """(greedy answer token ids, prefill seconds), the way an application calls the model.

    The answer comes from ``model.generate`` with a padding mask of ones, as a tokenizer would
    pass it; the prefill time from one forward pass over the prompt.
    """
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _: None)
    with torch.no_grad():
        x = torch.tensor([ids], device=device)
        ones = torch.ones_like(x)
        out = model.generate(input_ids=x, attention_mask=ones, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=258)
        sync(device)
        start = time.perf_counter()
        model(input_ids=x, attention_mask=ones, use_cache=False)
        sync(device)
        prefill_s = time.perf_counter() - start
    return out[0, len(ids):].tolist(), prefill_s


def as_text(tokens):
    return bytes(t if t < 256 else 63 for t in tokens).decode("latin-1")


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else None


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", required=True,
                   help="a profile (HDF5, or its `xattn profile export --json` copy)")
    p.add_argument("--model", default=os.path.join(ROOT, "examples", "models", "xattn-byte"))
    p.add_argument("--haystack", default=os.path.join(ROOT, "examples", "data", "haystack.txt"))
    p.add_argument("--ops", default=None,
                   help="the op library of a build tree (e.g. build/runtime/libxattn_ops.so): "
                        "use the xattn package from python/ without installing it; default: "
                        "the installed package")
    p.add_argument("--out", required=True)
    p.add_argument("--lengths", default="4096,8192,16384")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    p.add_argument("--per-depth", type=int, default=3)
    p.add_argument("--tokens", type=int, default=5)
    p.add_argument("--crossover", type=int, default=0,
                   help="key length below which xattn runs dense (0: always sparse)")
    p.add_argument("--seed", type=int, default=20261128)
    p.add_argument("--device", default=None, help="default: cuda when available")
    args = p.parse_args()
    if args.ops:
        os.environ["XATTN_OPS"] = args.ops
        sys.path.insert(0, os.path.join(ROOT, "python"))

    import numpy as np
    import torch
    import transformers
    from transformers import LlamaForCausalLM

    import xattn
    from eval_passkey import build_prompt

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa")
    except TypeError:  # transformers 4 spells it torch_dtype
        model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16,
                                                 attn_implementation="sdpa")
    model = model.to(device).eval()
    with open(args.haystack, "rb") as f:
        haystack = f.read()

    prompts = []  # (length, depth, key, ids)
    for length in (int(x) for x in args.lengths.split(",")):
        rng = np.random.default_rng([args.seed, length])
        for depth in (float(x) for x in args.depths.split(",")):
            for _ in range(args.per_depth):
                key = str(int(rng.integers(10000, 100000)))
                prompts.append((length, depth, key, build_prompt(haystack, length, depth, key,
                                                                 rng)))

    dense = [answer(model, ids, args.tokens, device) for (_, _, _, ids) in prompts]
    runtime = xattn.patch_model(model, args.profile, crossover_len=args.crossover,
                                model_dir=args.model)
    sparse = [answer(model, ids, args.tokens, device) for (_, _, _, ids) in prompts]

    by_length = {}
    for (length, depth, key, _), (d_tokens, d_s), (x_tokens, x_s) in zip(prompts, dense, sparse):
        row = by_length.setdefault(length, {"prompts": 0, "identical": 0, "dense_correct": 0,
                                            "xattn_correct": 0, "dense_prefill_s": [],
                                            "xattn_prefill_s": [], "differences": []})
        row["prompts"] += 1
        d_text, x_text = as_text(d_tokens), as_text(x_tokens)
        row["identical"] += d_tokens == x_tokens
        row["dense_correct"] += d_text == key
        row["xattn_correct"] += x_text == key
        row["dense_prefill_s"].append(d_s)
        row["xattn_prefill_s"].append(x_s)
        if d_tokens != x_tokens:
            row["differences"].append({"depth": depth, "key": key, "dense": d_text,
                                       "xattn": x_text})
    for row in by_length.values():
        # The first prompt of each attention pays one-time costs (kernel loading): medians.
        row["dense_prefill_ms_median"] = round(1e3 * median(row.pop("dense_prefill_s")), 3)
        row["xattn_prefill_ms_median"] = round(1e3 * median(row.pop("xattn_prefill_s")), 3)

    result = {"transformers": transformers.__version__, "torch": torch.__version__,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "model": args.model, "profile": args.profile, "crossover": args.crossover,
              "tokens": args.tokens, "per_depth": args.per_depth, "seed": args.seed,
              "calls": runtime.calls, "lengths": by_length}
    for length, row in by_length.items():
        print(f"{length:>6} tokens: {row['identical']}/{row['prompts']} identical answers; "
              f"correct dense {row['dense_correct']}, xattn {row['xattn_correct']}; prefill "
              f"median dense {row['dense_prefill_ms_median']} ms, "
              f"xattn {row['xattn_prefill_ms_median']} ms")
    print(runtime.summary())
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    # Two prefills a prompt (generate's, and the timed one), each through every layer.
    expected_sparse = 2 * len(prompts) * model.config.num_hidden_layers
    always_sparse = all(length >= args.crossover for (length, _, _, _) in prompts)
    if always_sparse and runtime.calls.get("sparse", 0) != expected_sparse:
        print(f"expected {expected_sparse} sparse prefill calls, got {runtime.calls}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
