#!/usr/bin/env python3
"""Captures q/k/v of a transformers Llama model over a byte-level text with
xattn.capture.TransformersCaptureHook.

    python3 examples/python/capture_transformers.py --text examples/data/calibration.txt \\
        --len 4096 --out hf_capture.h5 [--ops build/runtime/libxattn_ops.so]

The bundled byte-level model's tokens: <bos> (256), then one token per byte of the text, cut to
--len tokens; the same tokens `xattn capture --text FILE --max-len N` gives the C++ runner.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "train"))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "examples", "models", "xattn-byte"))
    p.add_argument("--text", required=True)
    p.add_argument("--len", type=int, default=4096, help="tokens, <bos> included")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default=None, help="default: cuda when available")
    p.add_argument("--ops", default=None,
                   help="the op library of a build tree (e.g. build/runtime/libxattn_ops.so): "
                        "use the xattn package from python/ without installing it; default: "
                        "the installed package")
    args = p.parse_args()
    if args.ops:
        os.environ["XATTN_OPS"] = args.ops
        sys.path.insert(0, os.path.join(ROOT, "python"))

    import torch
    from transformers import LlamaForCausalLM

    from model import BOS  # the bundled model's token ids (scripts/train/model.py)
    from xattn.capture import CaptureWriter, TransformersCaptureHook

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    except TypeError:  # transformers 4 spells it torch_dtype
        model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)
    model = model.to(device).eval()
    with open(args.text, "rb") as f:
        ids = [BOS] + list(f.read(args.len - 1))
    writer = CaptureWriter(args.out, model_name=os.path.basename(os.path.normpath(args.model)),
                           num_layers=model.config.num_hidden_layers,
                           description=f"{args.text}, first {len(ids)} tokens, transformers hook")
    hook = TransformersCaptureHook(writer)
    hook.install(model)
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        model(input_ids=x, attention_mask=torch.ones_like(x))
    hook.uninstall(model)
    writer.commit()
    print(f"wrote {args.out}: layers {writer.recorded_layers}, {len(ids)} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
