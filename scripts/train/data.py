"""Training samples: plain text windows mixed with synthetic long-range retrieval tasks.

Every sample is <bos> followed by L bytes; the model is trained to predict each byte from those
before it. The tasks (answers always at the very end of the sample, their loss up-weighted):
  passkey  "The pass key is 12345. Remember it. 12345 is the pass key." hidden at a random depth
           of a text window; the sample ends "What is the pass key? The pass key is 12345".
  kv       2-6 facts "The code of the otter is 48213." at random depths; the sample ends
           "What is the code of the otter? The code of the otter is 48213".
  copy     "The secret word is <16-40 random letters and digits>." at a random depth; the sample
           ends "What is the secret word? The secret word is <the same string>".
  text     a plain window of the corpus.
"""
import numpy as np

from model import BOS

PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = "What is the pass key? The pass key is "
KV_FACT = "The code of the {name} is {value}."
KV_QUESTION = "What is the code of the {name}? The code of the {name} is "
COPY_NEEDLE = "The secret word is {word}."
COPY_QUESTION = "What is the secret word? The secret word is "

KV_NAMES = ("otter", "falcon", "badger", "heron", "lynx", "walrus", "beetle", "salmon", "raven",
            "weasel", "bison", "gecko", "marten", "osprey", "plover", "tapir", "viper", "wombat",
            "yak", "zebra", "camel", "donkey", "ferret", "gannet", "hornet", "ibis", "jackal",
            "kestrel", "lemur", "magpie", "newt", "ocelot", "puffin", "quail", "robin", "stoat")
COPY_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
SEPARATORS = (" ", "\n", "\n\n")

MIX = (("text", 0.35), ("passkey", 0.50), ("kv", 0.10), ("copy", 0.05))
PASSKEY_ANSWER_WEIGHT = 200.0
KV_ANSWER_WEIGHT = 200.0
COPY_ANSWER_WEIGHT = 50.0


def parse_mix(text):
    """'text=0.6,passkey=0.3,kv=0.05,copy=0.05' -> (("text", 0.6), ...) in the order given.
    Kinds left out get share 0; the shares must sum to 1."""
    kinds = {name for name, _ in MIX}
    mix = []
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in kinds or not value:
            raise ValueError(f"bad mix entry {item!r}: expected KIND=SHARE, "
                             f"KIND in {sorted(kinds)}")
        if any(name == n for n, _ in mix):
            raise ValueError(f"mix kind {name!r} given twice")
        share = float(value)
        if share < 0:
            raise ValueError(f"negative share in {item!r}")
        mix.append((name, share))
    total = sum(s for _, s in mix)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"mix shares sum to {total}, not 1")
    return tuple(mix)


def format_mix(mix):
    return ",".join(f"{name}={share:g}" for name, share in mix)


class SampleMaker:
    def __init__(self, corpus: bytes, seed: int, mix=MIX):
        """mix: ((kind, share), ...) over text/passkey/kv/copy, shares summing to 1."""
        self.corpus = corpus
        self.rng = np.random.default_rng(seed)
        self.mix = tuple(mix)
        # fallback for u landing past the last share by rounding: the last kind with a share
        self.last_kind = [name for name, share in self.mix if share > 0][-1]

    def window(self, n):
        start = int(self.rng.integers(0, len(self.corpus) - n))
        return self.corpus[start:start + n]

    def depth(self, hay_len):
        """Insertion point: uniform over the whole window, or over a random-length tail of it
        (so retrieval distances cover short prompts too); usually moved to a word boundary."""
        if self.rng.random() < 0.5:
            span = hay_len
        else:
            span = int(self.rng.integers(min(hay_len, max(64, hay_len // 8)), hay_len + 1))
        return hay_len - int(self.rng.integers(0, span + 1))

    def snap(self, hay, pos):
        if self.rng.random() < 0.7:
            for i in range(pos, min(pos + 64, len(hay))):
                if hay[i] in (0x20, 0x0A):
                    return i + 1
        return pos

    def sep(self):
        return SEPARATORS[int(self.rng.integers(0, len(SEPARATORS)))]

    def with_needles(self, length, needles, question, answer):
        """Text window of the right size with needles inserted, then question + answer."""
        pieces = [(self.sep() + n + self.sep()).encode() for n in needles]
        tail = (self.sep() + question).encode() + answer.encode()
        hay_len = length - sum(len(p) for p in pieces) - len(tail)
        if hay_len < 16:
            raise ValueError(f"sample length {length} too short for its needles")
        hay = self.window(hay_len)
        cuts = sorted(self.snap(hay, self.depth(hay_len)) for _ in pieces)
        order = self.rng.permutation(len(pieces))
        out, prev = [], 0
        for cut, i in zip(cuts, order):
            out.append(hay[prev:cut])
            out.append(pieces[i])
            prev = cut
        out.append(hay[prev:])
        out.append(tail)
        body = b"".join(out)
        assert len(body) == length, (len(body), length)
        return body

    def key(self):
        return str(int(self.rng.integers(10000, 100000)))

    def sample(self, length):
        """(bytes of length `length`, answer length, answer weight)."""
        u, kind = self.rng.random(), self.last_kind
        for name, share in self.mix:
            if u < share:
                kind = name
                break
            u -= share
        if kind == "text" or length < 384:
            return self.window(length), 0, 1.0
        if kind == "passkey":
            key = self.key()
            body = self.with_needles(length, [PASSKEY_NEEDLE.format(key=key)],
                                     PASSKEY_QUESTION, key)
            return body, len(key), PASSKEY_ANSWER_WEIGHT
        if kind == "kv":
            count = int(self.rng.integers(2, min(6, length // 128) + 1))
            names = self.rng.choice(len(KV_NAMES), size=count, replace=False)
            values = [self.key() for _ in range(count)]
            facts = [KV_FACT.format(name=KV_NAMES[n], value=v) for n, v in zip(names, values)]
            ask = int(self.rng.integers(0, count))
            body = self.with_needles(length, facts, KV_QUESTION.format(name=KV_NAMES[names[ask]]),
                                     values[ask])
            return body, len(values[ask]), KV_ANSWER_WEIGHT
        word_len = int(self.rng.integers(16, 41))
        word = COPY_ALPHABET[self.rng.integers(0, len(COPY_ALPHABET), size=word_len)]
        word = word.tobytes().decode()
        body = self.with_needles(length, [COPY_NEEDLE.format(word=word)], COPY_QUESTION, word)
        return body, len(word), COPY_ANSWER_WEIGHT

    def batch(self, batch_size, length):
        """ids (B, length + 1) int64 starting with <bos>; weights (B, length) float32 for the
        targets ids[:, 1:]."""
        ids = np.empty((batch_size, length + 1), dtype=np.int64)
        weights = np.ones((batch_size, length), dtype=np.float32)
        ids[:, 0] = BOS
        for b in range(batch_size):
            body, answer_len, weight = self.sample(length)
            ids[b, 1:] = np.frombuffer(body, dtype=np.uint8)
            if answer_len:
                weights[b, length - answer_len:] = weight
        return ids, weights
