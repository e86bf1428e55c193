#!/usr/bin/env python3
"""Builds the training corpus and the held-out haystack for the bundled byte-level model.

Sources (public-domain English, from Debian packages):
  * King James Bible: package bible-kjv-text, read with the `bible` program of package bible-kjv.
    Verse numbers are stripped; each chapter keeps its heading ("Genesis 1") and its verses,
    one per line, chapters separated by a blank line.
  * Jane Austen's six novels: package r-cran-janeaustenr, whose data sits in R's lazy-load
    database (data/Rdata.rdx + Rdata.rdb: gzip/zlib-compressed R serialisation). It is read here
    with a small XDR unserialiser, so R itself is not needed.

Split: the last 5 % of every document (the Bible and each novel, cut at a line start) is held
out and never used for training. The held-out Austen text becomes examples/data/haystack.txt
(the needle-in-a-haystack filler); all held-out text is also written to OUT_DIR/heldout.txt.

Writes (OUT_DIR defaults to .traindata/, ignored by git):
  train.txt    training corpus, documents separated by a blank line
  heldout.txt  held-out text of every document
and, with --haystack, the bundled haystack file (not overwritten unless --force).

Install the packages first:
  apt-get install -y bible-kjv bible-kjv-text r-cran-janeaustenr
"""
import argparse
import gzip
import os
import re
import struct
import subprocess
import sys
import zlib

JANEAUSTENR_DATA = "/usr/lib/R/site-library/janeaustenr/data"
NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma",
          "northangerabbey", "persuasion"]
HELD_OUT_FRACTION = 0.05
HAYSTACK_BYTES = 131072


# ---------------------------------------------------------------- R serialisation (XDR, v2/v3)

class RReader:
    """Minimal reader of R's XDR serialisation: enough for vectors, pairlists and symbols."""

    NILVALUE, REF, GLOBALENV, UNBOUND, MISSING, BASENS = 254, 255, 253, 252, 251, 250
    EMPTYENV, BASEENV = 242, 241

    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.refs = []
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialisation (expected 'X\\n' header)")
        self.pos = 2
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            name_length = self.int()  # native encoding name follows
            self.pos += name_length
        elif version != 2:
            raise ValueError(f"unsupported R serialisation version {version}")

    def int(self):
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if kind == self.NILVALUE or kind in (self.GLOBALENV, self.UNBOUND, self.MISSING,
                                             self.BASENS, self.EMPTYENV, self.BASEENV):
            return None
        if kind == self.REF:
            index = flags >> 8
            if index == 0:
                index = self.int()
            return self.refs[index - 1]
        if kind == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if kind in (2, 3, 5, 6, 17):  # pairlist-like: attr?, tag?, car, cdr
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            node = [(tag, car)]
            if isinstance(cdr, list):
                node.extend(cdr)
            return node
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            raw = self.data[self.pos:self.pos + n]
            self.pos += n
            latin1 = bool(flags & (1 << 14))  # LATIN1_MASK in the 'levels' bits
            return raw.decode("latin-1" if latin1 else "utf-8", errors="replace")
        if kind in (10, 13):  # LGLSXP, INTSXP
            n = self.length()
            values = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == 14:  # REALSXP
            n = self.length()
            values = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        elif kind in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            n = self.length()
            values = [self.item() for _ in range(n)]
        else:
            raise ValueError(f"unsupported R object type {kind} in serialisation")
        attributes = self.item() if has_attr else None
        if attributes:
            names = dict(attributes).get("names")
            if names is not None and kind == 19:
                return dict(zip(names, values))
        return values


def read_lazyload(data_dir, names):
    """Returns {name: R object} for the named objects of a package's lazy-load database."""
    with open(os.path.join(data_dir, "Rdata.rdx"), "rb") as f:
        index = RReader(gzip.decompress(f.read())).item()
    variables = index["variables"]
    out = {}
    with open(os.path.join(data_dir, "Rdata.rdb"), "rb") as f:
        rdb = f.read()
    for name in names:
        offset, length = variables[name]
        chunk = rdb[offset:offset + length]
        (expected,) = struct.unpack(">I", chunk[:4])
        raw = zlib.decompress(chunk[4:])
        if len(raw) != expected:
            raise ValueError(f"{name}: decompressed {len(raw)} bytes, header says {expected}")
        out[name] = RReader(raw).item()
    return out


# ---------------------------------------------------------------- sources

def bible_text():
    """The whole KJV, verse numbers stripped, one verse per line, blank line between chapters."""
    try:
        raw = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], check=True,
                             capture_output=True).stdout.decode("utf-8")
    except FileNotFoundError:
        sys.exit("prepare_data: the `bible` program is missing: "
                 "apt-get install -y bible-kjv bible-kjv-text")
    verse = re.compile(r"^ +\d+ (.*)$")
    chapters, current = [], None
    verses = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        match = verse.match(line)
        if match:
            if current is None:
                raise ValueError("bible output: verse before any chapter heading")
            current.append(match.group(1).strip())
            verses += 1
        else:  # chapter heading, e.g. "Genesis 1" or "1 Samuel 3"
            current = [line.strip()]
            chapters.append(current)
    if verses != 31102 or len(chapters) != 1189:
        raise ValueError(f"bible output: {len(chapters)} chapters and {verses} verses, "
                         "expected 1189 and 31102 (KJV)")
    return "\n\n".join("\n".join(c) for c in chapters) + "\n"


def austen_texts():
    """{novel: text}, lines joined with newlines, as stored by janeaustenr."""
    if not os.path.isdir(JANEAUSTENR_DATA):
        sys.exit(f"prepare_data: {JANEAUSTENR_DATA} is missing: "
                 "apt-get install -y r-cran-janeaustenr")
    objects = read_lazyload(JANEAUSTENR_DATA, NOVELS)
    texts = {}
    for name in NOVELS:
        lines = ["" if line is None else line for line in objects[name]]
        texts[name] = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
    return texts


def split_held_out(text):
    """(train, held_out): held_out is the last 5 % of text, starting at a line start."""
    cut = int(len(text) * (1 - HELD_OUT_FRACTION))
    cut = text.index("\n", cut) + 1
    return text[:cut], text[cut:]


def write_atomically(path, data, force):
    if os.path.exists(path) and not force:
        sys.exit(f"prepare_data: {path} exists; pass --force to overwrite it")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=".traindata")
    parser.add_argument("--haystack", default=None,
                        help="also write the held-out Austen haystack here "
                             "(e.g. examples/data/haystack.txt)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = parser.parse_args()

    documents = [("bible", bible_text())] + list(austen_texts().items())
    train_parts, held_parts, austen_held = [], [], []
    for name, text in documents:
        train, held = split_held_out(text)
        train_parts.append(train)
        held_parts.append(held)
        if name != "bible":
            austen_held.append(held)
        print(f"{name:18s} {len(text.encode()):9d} bytes, held out {len(held.encode()):7d}")

    train_bytes = "\n".join(train_parts).encode("utf-8")
    held_bytes = "\n".join(held_parts).encode("utf-8")
    write_atomically(os.path.join(args.out_dir, "train.txt"), train_bytes, args.force)
    write_atomically(os.path.join(args.out_dir, "heldout.txt"), held_bytes, args.force)
    print(f"train.txt {len(train_bytes)} bytes, heldout.txt {len(held_bytes)} bytes")

    if args.haystack:
        haystack = "\n".join(austen_held).encode("utf-8")
        if len(haystack) < HAYSTACK_BYTES:
            sys.exit(f"prepare_data: only {len(haystack)} held-out Austen bytes")
        end = haystack.rindex(b"\n", 0, HAYSTACK_BYTES) + 1
        write_atomically(args.haystack, haystack[:end], args.force)
        print(f"{args.haystack}: {end} bytes")


if __name__ == "__main__":
    main()
