"""How captions become token ids (data.tokenizer): whole words (WordVocab, the default) or subwords
(CaptionBPE: byte-level BPE learnt from the training captions, or a trained tokenizer.json such as a
pretrained decoder's own). A run keeps its tokenizer as RUN_DIR/vocab.json, whose "kind" picks the class
here when the run is loaded: nothing it says is imported."""

import json
from pathlib import Path

from multitx.data.captions.subwords import CaptionBPE
from multitx.data.captions.vocab import WordVocab
from multitx.errors import UserError

CAPTION_TOKENIZERS = {"words": WordVocab, "bpe": CaptionBPE}


def learn_tokens(data, captions, tokenizer_file: Path | None = None) -> WordVocab | CaptionBPE:
    """The tokenizer data.tokenizer names, learnt from the training `captions` (an iterable of texts), or read
    from `tokenizer_file` (data.tokenizer_file, or the pretrained decoder's tokenizer.json) for bpe."""
    kind = str(data.get("tokenizer") or "words")
    if kind == "words":
        return WordVocab.from_captions(captions, data.min_word_count)
    if kind != "bpe":
        raise UserError(f"data.tokenizer={kind}: a caption run's tokens are words or bpe")
    if tokenizer_file is not None:
        return CaptionBPE.from_file(tokenizer_file, f"data.tokenizer_file={tokenizer_file}")
    return CaptionBPE.from_captions(captions, int(data.vocab_size))


def tokens_from_state(data, where: str = "vocab.json") -> WordVocab | CaptionBPE:
    """The caption tokenizer a run's vocab.json describes, by its "kind"."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in CAPTION_TOKENIZERS:
        raise UserError(f"{where} is not a caption tokenizer (kind {kind!r}; a caption run's is "
                        f"{' or '.join(CAPTION_TOKENIZERS)})")
    return CAPTION_TOKENIZERS[kind].from_state(data, where)


def load_tokens(path: Path) -> WordVocab | CaptionBPE:
    """The caption tokenizer saved at `path` (a run's vocab.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; it is written when a caption run starts") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read ({type(err).__name__}); it should be the vocabulary of a caption "
                        f"run") from None
    return tokens_from_state(data, str(path))
