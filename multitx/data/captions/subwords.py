"""Captions in subword tokens (data.tokenizer=bpe): byte-level BPE, GPT-2's scheme.

    "A small red triangle." -> [<|endoftext|>, "A", "Ġsmall", "Ġred", "Ġtriangle", ".", <|endoftext|>]

The caption is kept as it is written (case and punctuation: a pretrained decoder knows them);
it is scored in normalised words, as the word vocabulary's captions are (vocab.normalize).

One special token, GPT-2's <|endoftext|>, plays every part: <bos> before the caption, <eos>
after it, the padding after that (the captioner reads a caption's end from its first <eos>,
not from the padding's id: models/captioner.py real_tokens), and the blank that word
dropout puts in place of a token. That is GPT-2's own convention, so the same code serves a
BPE learnt from the training captions (data.vocab_size tokens) and a pretrained decoder's
own tokenizer.json (model.decoder_pretrained, or data.tokenizer_file).
"""

from pathlib import Path

from multitx.data.captions.vocab import framed
from multitx.data.text.bpe import BytePairTokenizer
from multitx.data.text.tokenizers import visible
from multitx.errors import UserError

END = "<|endoftext|>"


class CaptionBPE:
    """What the caption task needs of a tokenizer (the same calls as WordVocab), over byte-level BPE."""

    def __init__(self, bpe: BytePairTokenizer, where: str = "the tokenizer"):
        end = bpe.tokenizer.token_to_id(END)
        if end is None:
            raise UserError(f"{where} has no {END} token; a caption tokenizer needs GPT-2's end-of-text token to "
                            f"begin and end captions")
        self.bpe = bpe
        self.pad_id = self.bos_id = self.eos_id = self.unk_id = end

    @classmethod
    def from_captions(cls, captions, vocab_size: int) -> "CaptionBPE":
        """A BPE of `vocab_size` tokens learnt from the training captions, one caption per line."""
        texts = ("\n".join(c.strip() for c in captions),)
        return cls(BytePairTokenizer.train(texts, {"vocab_size": vocab_size, "special_tokens": [END]}))

    @classmethod
    def from_file(cls, path: Path, where: str) -> "CaptionBPE":
        """A trained tokenizer.json: GPT-2's (the decoder folder's), or the user's."""
        return cls(BytePairTokenizer.from_file(Path(path)), where)

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """text -> [bos, t1 .. tn, eos]; with max_len, the tokens are cut so that the whole sequence fits."""
        ids = self.bpe.encode_batch([text.strip()])[0]  # byte-level: every text encodes
        return framed(ids, self.bos_id, self.eos_id, max_len)

    def decode(self, ids) -> str:
        """ids of the tokens written -> the caption's text, up to the first end-of-text."""
        out = []
        for i in ids:
            if int(i) == self.eos_id:
                break
            out.append(int(i))
        return self.bpe.decode(out).strip()

    def label(self, token: int) -> str:
        """One token as a label on an attention map: its text, spaces made visible."""
        return "<eos>" if int(token) == self.eos_id else visible(self.bpe.decode([int(token)]))

    def state(self) -> dict:
        return self.bpe.state()  # {"kind": "bpe", "tokenizer": <tokenizer.json>}

    @classmethod
    def from_state(cls, data: dict, where: str = "vocab.json") -> "CaptionBPE":
        return cls(BytePairTokenizer.from_state(data, where), where)
