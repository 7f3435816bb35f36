"""Character-level tokenizer (data.tokenizer=char): every distinct character of the corpus is one token."""

import json
from pathlib import Path

import numpy as np

from multitx.data.text.tokenizers import TextTokenizer, register_text_tokenizer, visible
from multitx.errors import UserError


@register_text_tokenizer("char")
class CharVocab(TextTokenizer):
    kind = "char"
    learns_from_val = True  # every character of the corpus is a token, val's too (as nanoGPT's char prep)

    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls.train(text)

    @classmethod
    def train(cls, texts, data=None) -> "CharVocab":
        seen: set[str] = set()
        for text in [texts] if isinstance(texts, str) else texts:
            seen.update(text)
        return cls("".join(sorted(seen)))

    def encode_array(self, text: str) -> np.ndarray:
        """encode() for a long text, by table lookup: (len(text),) int32."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if not hasattr(self, "table"):
            self.table = np.full(max(map(ord, self.chars), default=0) + 1, -1, dtype=np.int32)
            self.table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        ids = self.table[np.minimum(codes, len(self.table) - 1)]
        if (ids < 0).any() or (codes >= len(self.table)).any():
            self.encode(text)  # says which characters, in one line
        return ids

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:5])
            raise UserError(f"the prompt has characters this model never saw in training ({shown}); "
                            f"use only characters from its vocabulary of {self.vocab_size}")
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def label(self, token: int) -> str:
        return visible(self.chars[token])

    def state(self) -> dict:
        """The vocabulary as a JSON object (a run's vocab.json)."""
        return {"kind": self.kind, "chars": self.chars}

    @classmethod
    def from_state(cls, data: dict, where: str = "vocab.json") -> "CharVocab":
        if not isinstance(data, dict) or not isinstance(data.get("chars"), str):
            raise UserError(f"{where} is not a character vocabulary (it has no 'chars')")
        return cls(data["chars"])

    @classmethod
    def load(cls, path: Path) -> "CharVocab":
        return cls.from_state(json.loads(Path(path).read_text(encoding="utf-8")), str(path))
