#!/usr/bin/env python3
"""Tiny random-weight checkpoints of each model family the runner supports, with golden logits
from Hugging Face transformers (tests/data/models/, checked by tests/cpu/test_model_families.cpp).

For every case below: a config built here in code (nothing is downloaded), a model with seeded
random weights rounded to bfloat16 (stored as BF16, so the float32 reference and the runner start
from the same numbers), eager attention in float32 on the CPU, and fixed token ids. Writes
OUT/<case>/config.json, OUT/<case>/model.safetensors and OUT/<case>/golden.safetensors:
  input_ids               I64 [64]          the tokens
  logits                  F32 [64, vocab]   all positions, the whole input
  logits_prefix           F32 [24, vocab]   a fresh model on the first 24 tokens (dynamic and
                                            longrope scaling pick their short-context settings)
  inv_freq, inv_freq_prefix          F32    the rotary inverse frequencies transformers used
  attention_scaling, attention_scaling_prefix  F32 [1]   its cos/sin factor
and OUT/report.txt (versions, each case's config as transformers saw it, the layer types).

  python3 scripts/gpu-goldens-models.py --out OUT
"""
import argparse
import inspect
import json
import math
import os
import sys
import traceback

import torch

LENGTH = 64
PREFIX = 24


def rope_kwargs(config_class, params):
    """rope_parameters (transformers 5) or rope_theta + rope_scaling (transformers 4)."""
    accepted = inspect.signature(config_class.__init__).parameters
    if "rope_parameters" in accepted:
        return {"rope_parameters": dict(params)}
    params = {k: v for k, v in params.items() if k != "original_max_position_embeddings"
              or params.get("rope_type") != "longrope"}
    rest = dict(params)
    theta = rest.pop("rope_theta")
    out = {"rope_theta": theta}
    if rest.get("rope_type", "default") != "default":
        rest["type"] = rest["rope_type"]
        out["rope_scaling"] = rest
    return out


def cases():
    import transformers as tf
    base = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                tie_word_embeddings=False, hidden_act="silu")
    theta = {"rope_theta": 10000.0, "rope_type": "default"}

    def make(name, cls, model_cls, rope=theta, **extra):
        kw = dict(base)
        kw.update(extra)
        kw.update(rope_kwargs(cls, rope))
        return name, cls, model_cls, kw

    L, LM = tf.LlamaConfig, tf.LlamaForCausalLM
    half = 8  # rotary pairs of head_dim 16
    yield make("llama", L, LM)
    yield make("llama-bias-tied", L, LM, attention_bias=True, mlp_bias=True,
               tie_word_embeddings=True, vocab_size=320)
    yield make("llama3", L, LM, rope={"rope_theta": 10000.0, "rope_type": "llama3",
                                     "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64})
    yield make("llama-linear", L, LM, rope={"rope_theta": 10000.0, "rope_type": "linear",
                                           "factor": 4.0})
    yield make("llama-dynamic", L, LM, max_position_embeddings=32,
               rope={"rope_theta": 10000.0, "rope_type": "dynamic", "factor": 2.0})
    yield make("llama-yarn", L, LM, max_position_embeddings=64,
               rope={"rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0,
                     "original_max_position_embeddings": 16})
    yield make("llama-yarn-mscale", L, LM, max_position_embeddings=64,
               rope={"rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0,
                     "original_max_position_embeddings": 16, "beta_fast": 8.0,
                     "beta_slow": 2.0, "mscale": 1.0, "mscale_all_dim": 0.5,
                     "truncate": False})
    yield make("mistral-window", tf.MistralConfig, tf.MistralForCausalLM, head_dim=32,
               sliding_window=16)
    yield make("qwen2", tf.Qwen2Config, tf.Qwen2ForCausalLM, tie_word_embeddings=True,
               use_sliding_window=False, sliding_window=None)
    yield make("qwen2-window", tf.Qwen2Config, tf.Qwen2ForCausalLM, use_sliding_window=True,
               sliding_window=16, max_window_layers=1)
    yield make("qwen3", tf.Qwen3Config, tf.Qwen3ForCausalLM, head_dim=32,
               use_sliding_window=False, sliding_window=None)
    yield make("qwen3-window", tf.Qwen3Config, tf.Qwen3ForCausalLM, head_dim=16,
               use_sliding_window=True,
               sliding_window=16, max_window_layers=0,
               layer_types=["sliding_attention", "full_attention"])
    yield make("phi3", tf.Phi3Config, tf.Phi3ForCausalLM)
    yield make("phi3-partial-window", tf.Phi3Config, tf.Phi3ForCausalLM,
               partial_rotary_factor=0.5, sliding_window=16)
    short = [1.0 + 0.25 * i for i in range(half)]
    long = [1.0 + 2.0 * i for i in range(half)]
    yield make("phi3-longrope", tf.Phi3Config, tf.Phi3ForCausalLM, max_position_embeddings=128,
               original_max_position_embeddings=32,
               rope={"rope_theta": 10000.0, "rope_type": "longrope", "short_factor": short,
                     "long_factor": long, "original_max_position_embeddings": 32})


def randomise(model, seed):
    """Seeded weights of a useful scale, rounded to bfloat16 values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight"):
                value = 1.0 + 0.2 * noise
            elif name.endswith(".bias"):
                value = 0.2 * noise
            elif "embed_tokens" in name:
                value = noise
            else:
                # Linear [out, in]: unit gain, q/k sharper so attention is far from uniform.
                gain = 2.0 if any(k in name for k in ("q_proj", "k_proj", "qkv_proj")) else 1.0
                value = noise * gain / math.sqrt(p.shape[-1])
            p.copy_(value.bfloat16().float())


def rotary_state(model):
    rotary = model.model.rotary_emb
    inv = rotary.inv_freq.detach().float().cpu().clone()
    scale = torch.tensor([float(getattr(rotary, "attention_scaling", 1.0))], dtype=torch.float32)
    return inv, scale


def run_case(name, cls, model_cls, kw, out_dir, index, report):
    from safetensors.torch import save_file
    config = cls(**kw)
    try:
        config._attn_implementation = "eager"
    except Exception:  # the default (sdpa) computes the same on the CPU in float32
        pass
    torch.manual_seed(1000 + index)
    model = model_cls(config).eval()
    randomise(model, 2000 + index)
    ids = torch.randint(3, config.vocab_size, (LENGTH,),
                        generator=torch.Generator().manual_seed(3000 + index))
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    config.architectures = [model_cls.__name__]
    config.save_pretrained(folder)
    state = {k: v.detach().to(torch.bfloat16).contiguous()
             for k, v in model.state_dict().items()
             if not (config.tie_word_embeddings and k == "lm_head.weight")
             and "rotary_emb" not in k}
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    # Prefix first: dynamic scaling only grows its cache within one model.
    with torch.no_grad():
        prefix = model(input_ids=ids[None, :PREFIX]).logits[0].float().contiguous()
        inv_p, scale_p = rotary_state(model)
        full = model(input_ids=ids[None]).logits[0].float().contiguous()
        inv, scale = rotary_state(model)
    save_file({"input_ids": ids.to(torch.int64).contiguous(), "logits": full,
               "logits_prefix": prefix, "inv_freq": inv, "inv_freq_prefix": inv_p,
               "attention_scaling": scale, "attention_scaling_prefix": scale_p},
              os.path.join(folder, "golden.safetensors"),
              metadata={"transformers_class": model_cls.__name__,
                        "reference": "float32 eager attention on the CPU, bf16-rounded weights"})
    saved = json.load(open(os.path.join(folder, "config.json")))
    report.write(f"== {name}: {model_cls.__name__}, logits |max| {full.abs().max():.3f}, "
                 f"scaling {scale.item():.6f} / prefix {scale_p.item():.6f}\n")
    report.write(f"   layer_types {getattr(config, 'layer_types', None)} sliding_window "
                 f"{getattr(config, 'sliding_window', None)}\n")
    report.write(f"   inv_freq {inv.tolist()}\n   inv_freq_prefix {inv_p.tolist()}\n")
    report.write("   config.json " + json.dumps(saved, sort_keys=True) + "\n")
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    report.write(f"   files {sizes}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--only", default="", help="comma-separated case names")
    args = p.parse_args()
    import transformers
    import safetensors
    torch.set_num_threads(4)
    os.makedirs(args.out, exist_ok=True)
    failures = 0
    with open(os.path.join(args.out, "report.txt"), "w") as report:
        report.write(f"torch {torch.__version__} transformers {transformers.__version__} "
                     f"safetensors {safetensors.__version__} python {sys.version.split()[0]}\n")
        wanted = set(filter(None, args.only.split(",")))
        for index, (name, cls, model_cls, kw) in enumerate(cases()):
            if wanted and name not in wanted:
                continue
            try:
                run_case(name, cls, model_cls, kw, args.out, index, report)
                print("ok", name, flush=True)
            except Exception:
                failures += 1
                report.write(f"== {name}: FAILED\n{traceback.format_exc()}\n")
                print("FAILED", name, traceback.format_exc(), flush=True)
            report.flush()
    print(open(os.path.join(args.out, "report.txt")).read())
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
