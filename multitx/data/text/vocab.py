"""Character-level tokenizer: every distinct character of the corpus is one token."""

import json
from pathlib import Path

from multitx.errors import UserError


class CharVocab:
    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

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

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"kind": "char", "chars": self.chars}, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "CharVocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["chars"])
