#!/usr/bin/env python3
"""Writes a Llama-3-kind tokenizer with the real vocabulary size (128256) into a model folder.

The merges are those of the tiny trained byte-level BPE tokenizer in tests/data/tokenizers/llama3
(Llama-3 split regex, byte-level pre-tokenizer); the vocabulary is laid out like Llama 3's:
ordinary tokens from id 0, unreachable filler tokens up to id 127999 (no merge produces them, so
encodings are unchanged), then 256 special tokens from 128000 (<|begin_of_text|> = 128000,
<|end_of_text|> = 128001, <|eot_id|> = 128009, the rest reserved). With the Python `tokenizers`
library present (the GPU machine), the padded tokenizer is checked against the tiny one: the same
texts give the same tokens, renumbered.

    python3 scripts/make_llama3_tokenizer.py MODEL_DIR [--source tests/data/tokenizers/llama3]
"""
import argparse
import json
import os

VOCAB = 128256
FIRST_SPECIAL = 128000
NAMED_SPECIALS = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eot_id|>": 128009}


def special_name(token_id):
    for name, named_id in NAMED_SPECIALS.items():
        if named_id == token_id:
            return name
    return f"<|reserved_special_token_{token_id - FIRST_SPECIAL}|>"


def pad(tiny):
    specials = {t["content"] for t in tiny["added_tokens"]}
    unknown = specials - set(NAMED_SPECIALS)
    if unknown:
        raise SystemExit(f"source has special tokens this script does not place: {sorted(unknown)}")
    ordinary = sorted((i, tok) for tok, i in tiny["model"]["vocab"].items() if tok not in specials)
    vocab = {tok: new_id for new_id, (_, tok) in enumerate(ordinary)}
    filler = 0
    while len(vocab) < FIRST_SPECIAL:
        name = f"<filler_{filler}>"
        filler += 1
        if name not in vocab:
            vocab[name] = len(vocab)
    added = []
    template = dict(tiny["added_tokens"][0])
    for token_id in range(FIRST_SPECIAL, VOCAB):
        name = special_name(token_id)
        vocab[name] = token_id
        added.append(dict(template, id=token_id, content=name))
    out = dict(tiny)
    out["added_tokens"] = added
    out["model"] = dict(tiny["model"], vocab=vocab)
    post = json.loads(json.dumps(tiny["post_processor"]))
    for entry in post.get("special_tokens", {}).values():
        entry["ids"] = [NAMED_SPECIALS[t] for t in entry["tokens"]]
    out["post_processor"] = post
    return out


def check(source_path, padded_path, texts):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("tokenizers not importable: padded tokenizer not cross-checked")
        return
    tiny, padded = Tokenizer.from_file(source_path), Tokenizer.from_file(padded_path)
    for text in texts:
        a, b = tiny.encode(text), padded.encode(text)
        if a.tokens != b.tokens or [padded.token_to_id(t) for t in a.tokens] != b.ids:
            raise SystemExit(f"padded tokenizer differs from the tiny one on {text[:40]!r}")
    print(f"padded tokenizer matches the tiny one on {len(texts)} texts "
          f"(vocabulary {padded.get_vocab_size()})")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--source", default=os.path.join(here, "..", "tests", "data", "tokenizers",
                                                         "llama3"))
    args = parser.parse_args()
    source = os.path.join(args.source, "tokenizer.json")
    with open(source, encoding="utf-8") as f:
        padded = pad(json.load(f))
    os.makedirs(args.model_dir, exist_ok=True)
    path = os.path.join(args.model_dir, "tokenizer.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(padded, f, ensure_ascii=False)
    os.replace(path + ".tmp", path)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|end_of_text|>", "add_bos_token": True}
    with open(os.path.join(args.model_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(args.model_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 128000, "eos_token_id": [128001, 128009]}, f, indent=1)
    with open(os.path.join(args.source, "golden.json"), encoding="utf-8") as f:
        texts = [case["text"] for case in json.load(f)["cases"]]
    check(source, path, texts)
    print(f"wrote {path} ({len(padded['model']['vocab'])} tokens, "
          f"{len(padded['model']['merges'])} merges)")


if __name__ == "__main__":
    main()
