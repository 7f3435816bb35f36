"""Byte-level BPE (data.tokenizer=bpe), GPT-2's scheme, by Hugging Face `tokenizers`.

Text is first read as UTF-8 bytes, each byte one of 256 base tokens (so any text can be
encoded, and decode(encode(text)) == text); training then merges the most frequent
neighbouring pair, again and again, until the vocabulary has data.vocab_size tokens:

    "the cat"  ->  bytes t h e ␣ c a t  ->  merges: (t,h) (th,e) (␣,c) (␣c,a) ...  ->  "the" "␣cat"

It is trained on the training split only, once, and cached with the token files; or
data.tokenizer_file=tokenizer.json gives a trained one (GPT-2's, a user's) instead. A run
keeps it whole in vocab.json: {"kind": "bpe", "tokenizer": <the tokenizer.json object>}.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from multitx.data.text.tokenizers import TextTokenizer, pieces, register_text_tokenizer
from multitx.errors import UserError

BYTES = 256  # the base alphabet of byte-level BPE


@register_text_tokenizer("bpe")
class BytePairTokenizer(TextTokenizer):
    kind = "bpe"

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts, data) -> "BytePairTokenizer":
        if data.get("tokenizer_file"):
            return cls.from_file(Path(str(data["tokenizer_file"])).expanduser())
        vocab_size, specials = int(data.get("vocab_size") or 2048), [str(s) for s in data.get("special_tokens") or []]
        if vocab_size < BYTES + len(specials) + 1:
            raise UserError(f"data.vocab_size={vocab_size} is too small for byte-level BPE: the {BYTES} bytes and "
                            f"{len(specials)} special token(s) take {BYTES + len(specials)}, and merges need more; "
                            f"give data.vocab_size={max(512, BYTES + len(specials) + 1)} or more")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's word split, then bytes
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        texts = pieces(texts) if isinstance(texts, str) else (piece for text in texts for piece in pieces(text))
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def from_file(cls, path: Path) -> "BytePairTokenizer":
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"data.tokenizer_file={path} cannot be read ({type(err).__name__}); give a Hugging Face "
                            f"tokenizer.json") from None
        return cls.from_json(text, f"data.tokenizer_file={path}")

    @classmethod
    def from_json(cls, text: str, where: str) -> "BytePairTokenizer":
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as err:  # noqa: BLE001 - tokenizers raises its own exception kinds
            reason = " ".join(str(err).split())[:160]
            raise UserError(f"{where} is not a Hugging Face tokenizer.json ({reason}); give the tokenizer.json "
                            f"that tokenizers' Tokenizer.save wrote") from None

    @classmethod
    def cache_tag(cls, data) -> str:
        """What the prepared tokens depend on besides the text: the file given, or the training settings."""
        if data.get("tokenizer_file"):
            path = Path(str(data["tokenizer_file"])).expanduser()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "missing"
            return f"bpe-{digest}"
        specials = "".join(str(s) for s in data.get("special_tokens") or [])
        return f"bpe{int(data.get('vocab_size') or 2048)}-{hashlib.sha256(specials.encode()).hexdigest()[:6]}"

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """The ids of a prompt; one line for text the tokenizer cannot encode (a tokenizer.json without byte
        fallback, whose unknown token would stand for it)."""
        try:
            encoding = self.tokenizer.encode(text, add_special_tokens=False)
        except Exception as err:  # noqa: BLE001 - tokenizers raises its own exception kinds
            reason = " ".join(str(err).split())[:120]
            raise UserError(f"the prompt cannot be encoded by this model's tokenizer ({reason}); use text of the "
                            f"language it was trained on") from None
        unknown = getattr(self.tokenizer.model, "unk_token", None)
        if unknown is not None and unknown in encoding.tokens:
            words = [text[a:b] for (a, b), token in zip(encoding.offsets, encoding.tokens, strict=True)
                     if token == unknown]
            shown = ", ".join(map(repr, words[:5]))
            raise UserError(f"the prompt has text this model's tokenizer cannot encode ({shown} would become "
                            f"{unknown}); use words from its vocabulary of {self.vocab_size}")
        return encoding.ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def encode_array(self, text: str) -> np.ndarray:
        """A long text in pieces of about 1 KB of whole lines, encoded as one batch: twice as fast as 16 KB pieces
        (2.9 against 1.2 MB/s on one thread of the Zen 4 of 2026-12-06)."""
        return np.fromiter((i for ids in self.encode_batch(list(pieces(text, 1 << 10))) for i in ids), dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def state(self) -> dict:
        return {"kind": self.kind, "tokenizer": json.loads(self.tokenizer.to_str())}

    @classmethod
    def from_state(cls, data: dict, where: str = "vocab.json") -> "BytePairTokenizer":
        if not isinstance(data.get("tokenizer"), dict):
            raise UserError(f"{where} is not a BPE tokenizer (it has no 'tokenizer' object)")
        return cls.from_json(json.dumps(data["tokenizer"]), where)

