#!/usr/bin/env python3
"""Trains the bundled byte-level long-context model (see README.md beside this file).

Time-budgeted: the curriculum stage and the learning rate follow the fraction of --seconds
spent, so the run fits a fixed slot of GPU time; the data stream depends only on --seed.
Each step holds about --tokens-per-step bytes: 128 x 512, 32 x 2K, ... 4 x 16K.

  python3 scripts/train/train.py --data .traindata/train.txt --out /tmp/model --seconds 280
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import MIX, SampleMaker, format_mix, parse_mix  # noqa: E402
from model import ByteLlama, ModelConfig, count_parameters, export  # noqa: E402

# (end of stage as a fraction of the time budget, sequence length in bytes)
CURRICULUM = ((0.08, 512), (0.22, 2048), (0.40, 4096), (0.62, 8192), (1.00, 16384))
SHORTER_STEP_SHARE = 0.25  # share of steps that revisit a shorter length of an earlier stage


def stage_length(fraction, curriculum, rng):
    for i, (end, length) in enumerate(curriculum):
        if fraction < end or i == len(curriculum) - 1:
            if i > 0 and rng.random() < SHORTER_STEP_SHARE:
                return curriculum[int(rng.integers(0, i))][1]
            return length
    raise AssertionError


def learning_rate(fraction, peak, warmup_fraction, final_ratio):
    if fraction < warmup_fraction:
        return peak * fraction / warmup_fraction
    progress = min(1.0, (fraction - warmup_fraction) / (1 - warmup_fraction))
    return peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".traindata/train.txt")
    p.add_argument("--out", required=True, help="folder for config.json + model.safetensors")
    p.add_argument("--seconds", type=float, default=280.0, help="training time budget")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (tests)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--tokens-per-step", type=int, default=65536)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=float, default=0.03, help="warm-up, fraction of the budget")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--log-tsv", default=None, help="loss curve as tab-separated values")
    p.add_argument("--tiny", action="store_true", help="tiny model and short contexts (CPU test)")
    shape = p.add_argument_group("model shape (defaults: the bundled model, or --tiny's)")
    shape.add_argument("--hidden-size", type=int)
    shape.add_argument("--layers", type=int, help="num_hidden_layers")
    shape.add_argument("--heads", type=int, help="query heads (num_attention_heads)")
    shape.add_argument("--kv-heads", type=int, help="num_key_value_heads; divides --heads")
    shape.add_argument("--head-dim", type=int, help="heads x head_dim may differ from hidden")
    shape.add_argument("--intermediate-size", type=int, help="MLP width")
    p.add_argument("--mix", default=format_mix(MIX),
                   help="sample shares, KIND=SHARE,... over text/passkey/kv/copy, summing to 1 "
                        "(default: %(default)s)")
    args = p.parse_args()
    try:
        mix = parse_mix(args.mix)
    except ValueError as e:
        p.error(str(e))

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    cfg = ModelConfig()
    curriculum = CURRICULUM
    if args.tiny:
        cfg = ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16, intermediate_size=128)
        curriculum = ((0.5, 256), (1.0, 512))
    overrides = {"hidden_size": args.hidden_size, "num_hidden_layers": args.layers,
                 "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads,
                 "head_dim": args.head_dim, "intermediate_size": args.intermediate_size}
    for name, value in overrides.items():
        if value is not None:
            if value <= 0:
                p.error(f"{name} must be positive")
            setattr(cfg, name, value)
    if cfg.num_attention_heads % cfg.num_key_value_heads or cfg.head_dim % 2:
        p.error("heads must be a multiple of kv-heads, and head-dim even")
    with open(args.data, "rb") as f:
        corpus = f.read()
    maker = SampleMaker(corpus, args.seed, mix)

    model = ByteLlama(cfg).to(device)
    n_params = count_parameters(model)
    # weight decay on the projection matrices only (not on the tied embedding, not on norms)
    decayed = {n for n, p_ in model.named_parameters() if p_.dim() == 2 and "embed" not in n}
    decay = [p_ for n, p_ in model.named_parameters() if n in decayed]
    no_decay = [p_ for n, p_ in model.named_parameters() if n not in decayed]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                                fused=(device == "cuda"))
    except TypeError:
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    print(json.dumps({"event": "start", "device": device, "torch": torch.__version__,
                      "params": n_params, "config": cfg.__dict__, "seed": args.seed,
                      "corpus_bytes": len(corpus), "seconds": args.seconds,
                      "curriculum": curriculum, "tokens_per_step": args.tokens_per_step,
                      "mix": format_mix(mix)}),
          flush=True)

    tsv = open(args.log_tsv, "w") if args.log_tsv else None
    if tsv:
        tsv.write("step\tseconds\tseq_len\tlr\ttokens_seen\tloss\ttext_nats_per_byte\t"
                  "answer_nats\tanswer_byte_acc\n")
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=(device == "cuda"))
    tokens_seen, step = 0, 0
    steps_by_length = {}
    last_row = None
    start = time.time()
    while True:
        fraction = (time.time() - start) / args.seconds
        if fraction >= 1.0 or (args.max_steps and step >= args.max_steps):
            break
        length = stage_length(fraction, curriculum, rng)
        batch = max(1, args.tokens_per_step // length)
        ids_np, w_np = maker.batch(batch, length)
        ids = torch.from_numpy(ids_np)
        w = torch.from_numpy(w_np)
        if device == "cuda":
            ids = ids.pin_memory().to(device, non_blocking=True)
            w = w.pin_memory().to(device, non_blocking=True)
        lr = learning_rate(fraction, args.lr, args.warmup, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast:
            logits = model(ids[:, :-1])
        targets = ids[:, 1:]
        ce = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), targets.reshape(-1),
                             reduction="none").view(batch, length)
        loss = (ce * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += batch * length
        steps_by_length[length] = steps_by_length.get(length, 0) + 1

        if step % args.log_every == 0 or step == 1:
            with torch.no_grad():
                answer = w > 1
                text = ~answer
                text_loss = (ce * text).sum() / text.sum()
                n_answer = int(answer.sum())
                if n_answer:
                    answer_loss = float((ce * answer).sum() / n_answer)
                    correct = (logits.argmax(-1) == targets) & answer
                    answer_acc = float(correct.sum()) / n_answer
                else:
                    answer_loss, answer_acc = None, None
            elapsed = time.time() - start
            row = {"step": step, "seconds": round(elapsed, 1), "seq_len": length,
                   "lr": round(lr, 6), "tokens_seen": tokens_seen,
                   "loss": round(float(loss.detach()), 4),
                   "text_nats_per_byte": round(float(text_loss), 4),
                   "answer_nats": None if answer_loss is None else round(answer_loss, 4),
                   "answer_byte_acc": None if answer_acc is None else round(answer_acc, 3)}
            print(json.dumps(row), flush=True)
            last_row = row
            if tsv:
                tsv.write("\t".join(str(v) for v in row.values()) + "\n")
                tsv.flush()

    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.time() - start
    export(model, args.out)
    summary = {"event": "done", "steps": step, "tokens_seen": tokens_seen,
               "train_seconds": round(elapsed, 1), "params": n_params,
               "steps_by_length": steps_by_length, "seed": args.seed,
               "config": cfg.__dict__, "mix": format_mix(mix), "last_logged": last_row,
               "argv": sys.argv[1:]}
    with open(os.path.join(args.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary), flush=True)
    if tsv:
        tsv.close()


if __name__ == "__main__":
    main()
