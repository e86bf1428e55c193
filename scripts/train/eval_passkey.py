#!/usr/bin/env python3
"""Dense-attention passkey accuracy of a byte-level model, by prompt length and needle depth.

Prompt (bytes; length counts the <bos> token):
  <bos> + H[:d] + "\\n" + "The pass key is K. Remember it. K is the pass key." + "\\n" + H[d:]
        + "\\nWhat is the pass key? The pass key is "
where H is a window of the haystack file sized so the prompt has exactly `length` tokens and
d = depth * len(H), moved forward to just after the next space or newline. K is a 5-digit key.
The model greedily generates 5 bytes; a prompt counts as correct when they equal K.

  python3 scripts/train/eval_passkey.py --model examples/models/xattn-byte \\
      --haystack examples/data/haystack.txt --out eval.json [--impl hf|own]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import BOS, load  # noqa: E402

NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is "


def build_prompt(haystack: bytes, length: int, depth: float, key: str, rng):
    needle = ("\n" + NEEDLE.format(key=key) + "\n").encode()
    question = ("\n" + QUESTION).encode()
    hay_len = length - 1 - len(needle) - len(question)
    if hay_len < 16 or hay_len > len(haystack):
        raise ValueError(f"length {length} does not fit the haystack of {len(haystack)} bytes")
    start = int(rng.integers(0, len(haystack) - hay_len + 1))
    hay = haystack[start:start + hay_len]
    d = int(round(depth * hay_len))
    for i in range(d, min(d + 64, hay_len)):
        if hay[i] in (0x20, 0x0A):
            d = i + 1
            break
    body = hay[:d] + needle + hay[d:] + question
    ids = [BOS] + list(body)
    assert len(ids) == length
    return ids


class HFRunner:
    def __init__(self, model_dir, device):
        from transformers import LlamaForCausalLM
        try:
            self.model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
        except TypeError:
            self.model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16)
        self.model = self.model.to(device).eval()
        self.device = device

    @torch.no_grad()
    def greedy(self, ids, n):
        x = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=x, use_cache=True)
        generated = []
        for i in range(n):
            nxt = int(out.logits[0, -1].argmax())
            generated.append(nxt)
            if i + 1 < n:
                out = self.model(input_ids=torch.tensor([[nxt]], device=self.device),
                                 past_key_values=out.past_key_values, use_cache=True)
        return generated


class OwnRunner:
    """The training program's own PyTorch model (no KV cache; for tests and cross-checks)."""

    def __init__(self, model_dir, device):
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.model = load(model_dir, device=device, dtype=dtype)
        self.device = device

    @torch.no_grad()
    def greedy(self, ids, n):
        ids = list(ids)
        generated = []
        for _ in range(n):
            logits = self.model(torch.tensor([ids], device=self.device), last_only=True)
            nxt = int(logits[0].argmax())
            generated.append(nxt)
            ids.append(nxt)
        return generated


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--haystack", default="examples/data/haystack.txt")
    p.add_argument("--out", required=True)
    p.add_argument("--impl", choices=("hf", "own"), default="hf")
    p.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    p.add_argument("--per-depth", type=int, default=4, help="prompts per length and depth")
    p.add_argument("--seed", type=int, default=20261128)
    p.add_argument("--max-seconds", type=float, default=0,
                   help="skip the remaining lengths once this much time is spent (0: no limit)")
    args = p.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    runner = (HFRunner if args.impl == "hf" else OwnRunner)(args.model, device)
    with open(args.haystack, "rb") as f:
        haystack = f.read()
    lengths = [int(x) for x in args.lengths.split(",")]
    depths = [float(x) for x in args.depths.split(",")]
    result = {"model": args.model, "impl": args.impl, "device": device,
              "haystack": args.haystack, "seed": args.seed, "per_depth": args.per_depth,
              "prompt": "<bos> H[:d] \\n NEEDLE \\n H[d:] \\n QUESTION, greedy 5 bytes",
              "needle": NEEDLE, "question": QUESTION, "lengths": {}}
    start = time.time()
    for length in lengths:
        if args.max_seconds and time.time() - start > args.max_seconds:
            result["lengths"][str(length)] = {"skipped": "time budget"}
            continue
        rng = np.random.default_rng([args.seed, length])
        t0 = time.time()
        by_depth, wrong, total_ok = {}, [], 0
        for depth in depths:
            ok = 0
            for _ in range(args.per_depth):
                key = str(int(rng.integers(10000, 100000)))
                ids = build_prompt(haystack, length, depth, key, rng)
                got = bytes(t if t < 256 else 63 for t in runner.greedy(ids, 5)).decode(
                    "latin-1")
                if got == key:
                    ok += 1
                elif len(wrong) < 8:
                    wrong.append({"depth": depth, "key": key, "got": got})
            by_depth[str(depth)] = ok / args.per_depth
            total_ok += ok
        n = args.per_depth * len(depths)
        result["lengths"][str(length)] = {"accuracy": total_ok / n, "prompts": n,
                                          "by_depth": by_depth, "wrong": wrong,
                                          "seconds": round(time.time() - t0, 2)}
        print(json.dumps({"length": length, "accuracy": total_ok / n, "by_depth": by_depth,
                          "seconds": round(time.time() - t0, 2)}), flush=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
