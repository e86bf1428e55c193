#!/usr/bin/env python3
"""Golden logits of the bundled model from Hugging Face transformers' LlamaForCausalLM.

Input: <bos> followed by the first 63 bytes of GOLDEN_TEXT (64 tokens). Reference: the
bfloat16 weights upcast to float32, eager attention, on the CPU. Writes one safetensors file:
  input_ids          I64 [64]
  positions          I64 [P]       positions whose logits are stored
  logits             F32 [P, 259]  float32 reference at those positions
  nll                F32 [63]      -log p(input_ids[t+1] | input_ids[..t]) in float32
  logits_bf16_cuda   F32 [P, 259]  same positions from the bfloat16 model with SDPA on CUDA
                                   (only when a GPU is present)
and checks that the training program's own model (scripts/train/model.py) agrees with
transformers, on the 64-token input and on a 4096-byte one (prints the differences).

  python3 scripts/train/make_golden.py --model examples/models/xattn-byte \\
      --out tests/data/golden/xattn_byte_logits.safetensors
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import BOS, load, save_safetensors  # noqa: E402

GOLDEN_TEXT = ("It is a truth universally acknowledged, that a single man in possession "
               "of a good fortune, must be in want of a wife.")
POSITIONS = (0, 1, 2, 7, 15, 31, 47, 62, 63)


def load_hf(model_dir, dtype, attn):
    from transformers import LlamaForCausalLM
    try:
        model, info = LlamaForCausalLM.from_pretrained(
            model_dir, dtype=dtype, attn_implementation=attn, output_loading_info=True)
    except TypeError:
        model, info = LlamaForCausalLM.from_pretrained(
            model_dir, torch_dtype=dtype, attn_implementation=attn, output_loading_info=True)
    print("transformers loading info:", {k: sorted(v) if isinstance(v, (set, list)) else str(v)
                                         for k, v in info.items()}, flush=True)
    missing = [k for k in info.get("missing_keys", []) if k != "lm_head.weight"]
    if missing or info.get("unexpected_keys"):
        raise SystemExit(f"make_golden: transformers did not load every tensor: {info}")
    cfg = model.config
    theta = getattr(cfg, "rope_theta", None)
    params = getattr(cfg, "rope_parameters", None)
    print("transformers rope_theta:", theta, "rope_parameters:", params, flush=True)
    return model.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--haystack", default="examples/data/haystack.txt",
                   help="source of the 4096-byte cross-check input")
    p.add_argument("--report", default=None, help="write the agreement figures here (JSON)")
    args = p.parse_args()

    import transformers
    text = GOLDEN_TEXT.encode()[:63]
    ids = torch.tensor([[BOS] + list(text)])
    positions = torch.tensor(POSITIONS)
    report = {"transformers": transformers.__version__, "torch": torch.__version__}

    with torch.no_grad():
        hf32 = load_hf(args.model, torch.float32, "eager")
        ref = hf32(input_ids=ids).logits[0].float()
        own32 = load(args.model, dtype=torch.float32)
        mine = own32(ids)[0].float()
        report["own_vs_hf_fp32_cpu_64_max_abs"] = float((mine - ref).abs().max())
        logp = torch.log_softmax(ref, dim=-1)
        nll = -logp[:-1].gather(1, ids[0, 1:, None])[:, 0]
        tensors = {"input_ids": ids[0].to(torch.int64), "positions": positions,
                   "logits": ref[positions].contiguous(), "nll": nll.contiguous()}

        with open(args.haystack, "rb") as f:
            long_ids = torch.tensor([[BOS] + list(f.read(4095))])
        own_last = own32(long_ids, last_only=True)[0]
        hf_last = hf32(input_ids=long_ids).logits[0, -1]
        report["own_vs_hf_fp32_cpu_4096_last_max_abs"] = float((own_last - hf_last).abs().max())

        if torch.cuda.is_available():
            hf16 = load_hf(args.model, torch.bfloat16, "sdpa").cuda()
            out16 = hf16(input_ids=ids.cuda()).logits[0].float().cpu()
            tensors["logits_bf16_cuda"] = out16[positions].contiguous()
            report["hf_bf16_cuda_vs_fp32_64_max_abs"] = float((out16 - ref).abs().max())
            own16 = load(args.model, device="cuda", dtype=torch.bfloat16)
            a = own16(long_ids.cuda(), last_only=True)[0].float().cpu()
            b = hf16(input_ids=long_ids.cuda()).logits[0, -1].float().cpu()
            c = hf32(input_ids=long_ids).logits[0, -1]
            report["own_vs_hf_bf16_cuda_4096_last_max_abs"] = float((a - b).abs().max())
            report["hf_bf16_cuda_vs_fp32_4096_last_max_abs"] = float((b - c).abs().max())
            report["logit_scale_4096_last_max_abs"] = float(c.abs().max())

    meta = {"format": "pt", "model": "examples/models/xattn-byte",
            "text": text.decode(), "reference": "transformers LlamaForCausalLM, bf16 weights "
            "upcast to float32, eager attention, CPU", "transformers": transformers.__version__,
            "torch": torch.__version__}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_safetensors(tensors, args.out, metadata=meta)
    print(json.dumps(report, indent=2), flush=True)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
