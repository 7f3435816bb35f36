"""Word-level caption tokenizer: a vocabulary of whole words plus four specials.

    "A small red Triangle, left of a circle." -> words: a small red triangle left of a circle
                                              -> ids:   [bos, 7, 12, 9, 31, 15, 11, 7, 5, eos]

Words are lower-cased and punctuation is dropped (as the usual COCO
preprocessing does), so references and generated captions are compared on
the same words. The vocabulary is built from the training captions only and
saved with the run (RUN_DIR/vocab.json), since the model's rows follow it.
"""

import json
import re
from collections import Counter
from pathlib import Path

from multitx.errors import UserError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """'A dog's ball, on the grass.' -> ['a', "dog's", 'ball', 'on', 'the', 'grass']"""
    return WORD.findall(text.lower())


def normalize(text: str) -> str:
    """The form captions are scored in: lower-case words joined by single spaces."""
    return " ".join(words(text))


def framed(ids: list[int], bos: int, eos: int, max_len: int | None) -> list[int]:
    """A caption's token ids -> [bos, *ids, eos], the ids cut so that the whole fits in max_len (if given)."""
    return [bos, *(ids if max_len is None else ids[: max_len - 2]), eos]


class WordVocab:
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, vocab: list[str]):
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a caption vocabulary starts with {SPECIALS}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def from_captions(cls, captions, min_count: int = 1) -> "WordVocab":
        """Every word seen at least `min_count` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for caption in captions for w in words(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if not kept:
            raise UserError("the training captions hold no words; check the dataset's caption files")
        return cls([*SPECIALS, *kept])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """text -> [bos, w1 .. wn, eos]; unknown words become <unk>. With max_len,
        the words are cut so that the whole sequence (bos and eos included) fits."""
        return framed([self.index.get(w, self.unk_id) for w in words(text)], self.bos_id, self.eos_id, max_len)

    def decode(self, ids) -> str:
        """ids -> words up to the first eos; bos and padding are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(self.vocab[i])
        return " ".join(out)

    def label(self, token: int) -> str:
        """One token as a label on an attention map: the word."""
        return self.vocab[int(token)]

    def state(self) -> dict:
        """The vocabulary as a JSON object (a run's vocab.json)."""
        return {"kind": "words", "vocab": self.vocab}

    @classmethod
    def from_state(cls, data: dict, where: str = "vocab.json") -> "WordVocab":
        if not isinstance(data, dict) or data.get("kind") != "words":
            kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise UserError(f"{where} is not a caption vocabulary (kind {kind!r})")
        return cls(data["vocab"])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.state(), indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "WordVocab":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path} is missing; it is written when a caption run starts") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON ({err}); it should be the vocabulary of a caption run") from None
        return cls.from_state(data, str(path))
