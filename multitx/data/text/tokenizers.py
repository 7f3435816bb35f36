"""Text tokenizers by name: `data.tokenizer=NAME` picks how a text task's corpus becomes token ids.

A tokenizer learns its vocabulary from the training text once (train), turns text into ids and
back (encode, decode), and saves itself as a JSON object that every run and checkpoint folder
keeps as vocab.json (state, from_state). That object names its kind, and loading a run asks this
registry for the class of that name: nothing a vocab.json says is imported.

    @register_text_tokenizer("mine")          # data.module=my_pkg data.tokenizer=mine
    class MyTokenizer(TextTokenizer): ...
"""

import json
from pathlib import Path

import numpy as np

from multitx.errors import UserError
from multitx.files import atomic_write_bytes
from multitx.registry import Registry


class TextTokenizer:
    """What a text task needs of a tokenizer. Ids run from 0 to vocab_size - 1."""

    kind = ""  # its registered name, saved in vocab.json as "kind"
    learns_from_val = False  # True: train() reads the whole corpus, val too (a character vocabulary must cover it)

    @classmethod
    def train(cls, texts, data) -> "TextTokenizer":
        """Learn a vocabulary from the training text, given as one string or an iterable of pieces (a corpus
        larger than memory streams by); `data`: the run's data settings (e.g. a vocabulary size)."""
        raise NotImplementedError

    @classmethod
    def cache_tag(cls, data) -> str:
        """What the prepared token files depend on besides the text (they are cached under it): its name, and
        any of its settings that change the tokens."""
        return cls.kind

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """The ids of `text`; one line (a UserError) for text it cannot encode."""
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def encode_array(self, text: str) -> np.ndarray:
        """The ids of a long text (a chunk of a corpus being prepared) as an integer array."""
        return np.array(self.encode(text), dtype=np.int64)

    def decode(self, ids) -> str:
        raise NotImplementedError

    def state(self) -> dict:
        """The tokenizer as a JSON object with "kind": a run's vocab.json."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, data: dict, where: str = "vocab.json") -> "TextTokenizer":
        raise NotImplementedError

    def label(self, token: int) -> str:
        """One token as a label on an attention map: its text, whitespace made visible."""
        return visible(self.decode([token]))

    def save(self, path: Path) -> None:
        atomic_write_bytes(Path(path), json.dumps(self.state(), ensure_ascii=False).encode("utf-8"))


def pieces(text: str, size: int = 1 << 16):
    """The text in pieces of about `size` characters, each ending at a line's end: what a tokenizer reads in
    parallel (encode_batch), without cutting a word in two."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def visible(text: str) -> str:
    return text.replace("\n", "↵").replace(" ", "␣").replace("\t", "⇥")


TEXT_TOKENIZERS = Registry("text tokenizer", "data.tokenizer", TextTokenizer, "multitx.TextTokenizer",
                           module_key="data.module")
register_text_tokenizer = TEXT_TOKENIZERS.register


def tokenizer_from_state(data, where: str = "vocab.json") -> TextTokenizer:
    """The tokenizer a vocab.json describes, by the registered kind it names (a character vocabulary saved
    before kinds were written has none: "char")."""
    if not isinstance(data, dict):
        raise UserError(f"{where} is not a tokenizer (a JSON object with a 'kind')")
    kind = data.get("kind", "char")
    if kind not in TEXT_TOKENIZERS:
        raise UserError(f"{where} is a {kind!r} tokenizer, which is not registered here (registered: "
                        f"{', '.join(TEXT_TOKENIZERS)}); a tokenizer of your own package registers when data.module "
                        f"imports it")
    return TEXT_TOKENIZERS.get(kind).from_state(data, where)


def load_tokenizer(path: Path) -> TextTokenizer:
    """The tokenizer saved at `path` (a vocab.json), of whichever registered kind it names."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read as a tokenizer ({type(err).__name__}); delete it to prepare the "
                        f"corpus again") from None
    return tokenizer_from_state(data, str(path))
