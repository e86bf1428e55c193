#!/usr/bin/env python3
"""Trains tiny tokenizers of every kind the C++ tokenizer reads and writes golden ids.

Run on the GPU machine (tokenizers, sentencepiece and transformers are installed there; nothing is
downloaded): scripts/gpu-goldens-tokenizers.sh OUT_DIR. Every tokenizer is trained on the bundled
text (examples/data) plus the test cases below, with a few hundred merges, so the files stay small.
For each kind OUT_DIR/<kind>/ gets the tokenizer file(s), tokenizer_config.json and golden.json:
    {"kind": ..., "library": "tokenizers 0.x" | "sentencepiece 0.x",
     "cases": [{"text": str, "ids": [int], "ids_special": [int], "decoded": str}]}
`ids` is the encoding without special tokens, `ids_special` with them (BOS where the tokenizer
adds one), `decoded` the library's decode of `ids` (skipping special tokens).
The files are committed under tests/data/tokenizers/ and tests/cpu/test_tokenizer.cpp requires
the C++ ids to equal these exactly.
"""
import json
import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Multilingual, whitespace-, digit- and emoji-heavy cases; escapes keep every byte exact.
CASES = [
    "Hello world! It's a truth universally acknowledged.",
    "I'LL say you're right, they'd've known; we've SEEN it, don't you?",
    "Numbers: 1 12 123 1234 12345 1234567890, 3.14159, -42, 1,000,000 and 2026-12-01.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\t\tmore\ttabs\n\nnew lines\r\nCRLF\rCR only\n\n\n",
    "multiple     spaces   between\u00a0no-break\u3000ideographic",
    "Grüße aus München: Äpfel, Öl, Übermut, straße.",
    "Ça va? Élève, naïve café, cœur, déjà vu.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε· αλφάβητο.",
    "中文分词测试：我们今天去公园散步，天气很好。",
    "日本語のテキスト、カタカナとひらがな。東京タワー",
    "한국어 텍스트입니다. 안녕하세요!",
    "مرحبا بالعالم، هذا نص عربي.",
    "हिन्दी में पाठ: नमस्ते दुनिया।",
    "Emoji: 😀😃 👍🏽 👨‍👩‍👧‍👦 🇩🇪🇯🇵 ❤️ ✨🚀🔥",
    "Full-width １２３ digits, Roman Ⅻ, superscript x² and ½ fractions, Arabic-Indic ٣٤٥.",
    "Combining: e\u0301 a\u0308 A\u030a n\u0303, precomposed é ä Å ñ; Hangul jamo \u1100\u1161\u11a8.",
    "Code: def f(x):\n    return x**2 + 1  # comment\n\tif (a && b) { c++; }",
    "Punctuation!!! ... ??? --- *** ((( ))) [[]] {{}} <<>> \"quotes\" 'single' `back`",
    "mixed123abc ABC123 a1b2c3 __init__ http://example.com/path?q=1&r=2",
    "",
    " ",
    "\n",
    "a",
    "😀",
    "\u0000 NUL and \u0007 bell and \u007f delete",
    "a  \n  b\n \n c   \t \t\n\n   d",
    "zero\u200bwidth joiner\u200d soft\u00adhyphen",
    "word's 'quoted' O'Neil 's 'S 'Ll",
]


def corpus():
    parts = []
    for name in ("calibration.txt", "haystack.txt"):
        with open(os.path.join(ROOT, "examples", "data", name), encoding="utf-8") as f:
            parts.append(f.read()[:60000])
    parts.append("\n".join(CASES[:15]))
    text = "\n".join(parts)
    return [line for line in text.split("\n") if line]


def special_cases(specials):
    """Cases holding special-token strings, to test that they are split out first."""
    a, b = specials[0], specials[-1]
    return [f"{a}Hello{b}", f"text {a} in the middle {b}\n{b}", f"{a}{a} {b}"]


def write_golden(out_dir, kind, library, cases, encode, encode_special, decode):
    rows = []
    for text in cases:
        ids = encode(text)
        rows.append({"text": text, "ids": ids, "ids_special": encode_special(text),
                     "decoded": decode(ids)})
    with open(os.path.join(out_dir, "golden.json"), "w", encoding="utf-8") as f:
        json.dump({"kind": kind, "library": library, "cases": rows}, f, ensure_ascii=True,
                  indent=0)


def hf_kind(out, kind, build):
    import tokenizers
    d = os.path.join(out, kind)
    os.makedirs(d, exist_ok=True)
    tok, config, specials = build()
    tok.save(os.path.join(d, "tokenizer.json"))
    tok = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    cases = CASES + special_cases(specials) + ["\n".join(CASES)]
    write_golden(d, kind, "tokenizers " + tokenizers.__version__, cases,
                 lambda t: tok.encode(t, add_special_tokens=False).ids,
                 lambda t: tok.encode(t, add_special_tokens=True).ids,
                 lambda ids: tok.decode(ids, skip_special_tokens=True))
    print(kind, "vocab", tok.get_vocab_size(), flush=True)


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level_bpe(split, specials, normalizer=None, gpt2=False, bos=None, ignore_merges=False):
    from tokenizers import Tokenizer, Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors, trainers
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges) if ignore_merges else models.BPE())
    if normalizer == "NFC":
        tok.normalizer = normalizers.NFC()
    if gpt2:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + 400, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def build_llama3():
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok = byte_level_bpe(LLAMA3_SPLIT, specials, bos=specials[0], ignore_merges=True)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": specials[0],
              "eos_token": specials[1], "add_bos_token": True}
    return tok, config, specials


def build_qwen2():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = byte_level_bpe(QWEN2_SPLIT, specials, normalizer="NFC")
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None,
              "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    return tok, config, specials


def build_gpt2():
    specials = ["<|endoftext|>"]
    tok = byte_level_bpe(None, specials, gpt2=True)
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
              "eos_token": "<|endoftext|>"}
    return tok, config, specials


def metaspace_bpe(mistral):
    """Llama-2 / Mistral style: BPE over '▁'-joined text, <0xNN> byte fallback, <unk>/<s>/</s>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers
    # Train on Metaspace words (SentencePiece does not merge across spaces either).
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                         prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=900, min_frequency=2, show_progress=False)
    trainer_tok.train_from_iterator(corpus(), trainer)
    trained = json.loads(trainer_tok.to_str())
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {}
    for s in specials:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for token, _ in sorted(trained["model"]["vocab"].items(), key=lambda kv: kv[1]):
        if token not in vocab:
            vocab[token] = len(vocab)
    merges = trained["model"]["merges"]
    model = models.BPE(vocab=vocab, merges=[tuple(m) if not isinstance(m, str) else
                                            tuple(m.split(" ", 1)) for m in merges],
                       unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    tok.add_special_tokens(specials)
    if mistral:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                     prepend_scheme="first", split=False)
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first",
                                         split=False)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                               normalizers.Replace(" ", "\u2581")])
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    config = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}
    return tok, config, specials


def spm_kind(out, kind, model_type):
    import sentencepiece as spm
    d = os.path.join(out, kind)
    os.makedirs(d, exist_ok=True)
    text_path = os.path.join(d, "train.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write("\n".join(corpus()))
    spm.SentencePieceTrainer.train(
        input=text_path, model_prefix=os.path.join(d, "tokenizer"), model_type=model_type,
        vocab_size=700, byte_fallback=True, character_coverage=0.9995, bos_id=1, eos_id=2,
        unk_id=0, pad_id=-1, num_threads=4, add_dummy_prefix=True,
        split_digits=(model_type == "bpe"),
        # Llama's tokenizer.model has no normalization; the unigram one keeps nmt_nfkc.
        normalization_rule_name="identity" if model_type == "bpe" else "nmt_nfkc")
    os.remove(text_path)
    os.remove(os.path.join(d, "tokenizer.vocab"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "add_bos_token": True}, f, indent=1)
    cases = CASES + ["\n".join(CASES)]
    write_golden(d, kind, "sentencepiece " + spm.__version__, cases,
                 lambda t: sp.encode(t), lambda t: [sp.bos_id()] + sp.encode(t),
                 lambda ids: sp.decode(ids))
    print(kind, "vocab", sp.get_piece_size(), flush=True)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    jobs = [
        ("llama3", lambda: hf_kind(out, "llama3", build_llama3)),
        ("qwen2", lambda: hf_kind(out, "qwen2", build_qwen2)),
        ("gpt2", lambda: hf_kind(out, "gpt2", build_gpt2)),
        ("llama2", lambda: hf_kind(out, "llama2", lambda: metaspace_bpe(False))),
        ("mistral", lambda: hf_kind(out, "mistral", lambda: metaspace_bpe(True))),
        ("spm-bpe", lambda: spm_kind(out, "spm-bpe", "bpe")),
        ("spm-unigram", lambda: spm_kind(out, "spm-unigram", "unigram")),
    ]
    failed = 0
    for name, job in jobs:
        try:
            job()
        except Exception:
            failed += 1
            print("FAILED", name, flush=True)
            traceback.print_exc()
    # transformers' view of one tokenizer folder, to confirm BOS handling from tokenizer_config.
    try:
        import transformers
        t = transformers.AutoTokenizer.from_pretrained(os.path.join(out, "llama3"))
        print("transformers", transformers.__version__, "llama3 'Hello world' ->",
              t("Hello world").input_ids, flush=True)
        t = transformers.AutoTokenizer.from_pretrained(os.path.join(out, "llama2"))
        print("transformers llama2 'Hello world' ->", t("Hello world").input_ids, flush=True)
    except Exception:
        traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
