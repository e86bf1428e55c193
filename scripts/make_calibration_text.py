#!/usr/bin/env python3
"""Builds examples/data/calibration.txt, the bundled calibration text of `xattn calibrate`.

Eight samples of exactly SAMPLE_BYTES bytes each (the calibration cuts the file into windows of
sample-len - 1 bytes and puts <bos> in front), taken from the held-out King James Bible text that
the bundled model never trained on (the first part of .traindata/heldout.txt, written by
scripts/train/prepare_data.py). Every other sample carries a passkey needle at a different depth
and ends with the question and its answer, so calibration sees retrieval as well as plain text.

    python3 scripts/make_calibration_text.py [--heldout .traindata/heldout.txt] [--force]
"""
import argparse
import os
import random

SAMPLE_BYTES = 4095
SAMPLES = 8
NEEDLE = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "\nWhat is the pass key? The pass key is {key}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", default=".traindata/heldout.txt")
    parser.add_argument("--out", default="examples/data/calibration.txt")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    if os.path.exists(args.out) and not args.force:
        raise SystemExit(f"{args.out} exists; pass --force to overwrite it")
    with open(args.heldout, "rb") as f:
        text = f.read()
    # The held-out Bible text comes first; the Austen haystack of the NIAH evaluation after it.
    bible = text[:200000]
    rng = random.Random(20261128)
    out = bytearray()
    position = 0
    for i in range(SAMPLES):
        if i % 2 == 0:
            sample = bible[position:position + SAMPLE_BYTES]
        else:
            key = f"{rng.randrange(10000, 100000)}"
            needle = NEEDLE.format(key=key).encode()
            question = QUESTION.format(key=key).encode()
            hay = bible[position:position + SAMPLE_BYTES - len(needle) - len(question)]
            depth = int(len(hay) * (i // 2) / (SAMPLES // 2))
            while depth < len(hay) and hay[depth] not in b" \n":
                depth += 1
            sample = hay[:depth] + needle + hay[depth:] + question
        assert len(sample) == SAMPLE_BYTES, len(sample)
        out += sample
        position += SAMPLE_BYTES
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {SAMPLES} samples of {SAMPLE_BYTES} bytes")


if __name__ == "__main__":
    main()
