#!/usr/bin/env python3
"""Writes a Llama-3.1-8B-shaped checkpoint with random bfloat16 weights, for timing calibration.

32 layers, hidden 4096, 32 query / 8 KV heads (head_dim 128), MLP 14336, vocabulary 128256,
llama3 rope scaling; about 16 GB. Also writes random token ids (one per line) for --data.
--shape 70b writes the Llama-3.1-70B shape instead (hidden 8192, 64 query / 8 KV heads, MLP 28672,
80 layers by default; about 1.7 GB per layer plus 4.2 GB of embeddings and LM head).

    python3 scripts/make_random_llama.py OUT_DIR TOKENS_FILE [--tokens N] [--layers L] [--shape 8b|70b]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("tokens_file")
    parser.add_argument("--tokens", type=int, default=4 * 32768)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--shape", choices=["8b", "70b"], default="8b")
    args = parser.parse_args()
    if args.shape == "8b":
        hidden, inter, heads, kv, dim, vocab, layers = 4096, 14336, 32, 8, 128, 128256, 32
    else:
        hidden, inter, heads, kv, dim, vocab, layers = 8192, 28672, 64, 8, 128, 128256, 80
    if args.layers is None:
        args.layers = layers
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": args.layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": dim,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    g = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()

    tensors = {"model.embed_tokens.weight": rand(vocab, hidden), "lm_head.weight": rand(vocab, hidden),
               "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}
    for i in range(args.layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            p + "self_attn.q_proj.weight": rand(heads * dim, hidden),
            p + "self_attn.k_proj.weight": rand(kv * dim, hidden),
            p + "self_attn.v_proj.weight": rand(kv * dim, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, heads * dim),
            p + "mlp.gate_proj.weight": rand(inter, hidden),
            p + "mlp.up_proj.weight": rand(inter, hidden),
            p + "mlp.down_proj.weight": rand(hidden, inter),
        })
    save_file(tensors, os.path.join(args.out_dir, "model.safetensors"))
    ids = torch.randint(0, 128000, (args.tokens,), generator=torch.Generator().manual_seed(1))
    with open(args.tokens_file, "w") as f:
        f.write("\n".join(str(int(t)) for t in ids))
    print(f"wrote {args.out_dir} ({sum(t.numel() for t in tensors.values()) / 1e9:.2f} B parameters)")


if __name__ == "__main__":
    main()
