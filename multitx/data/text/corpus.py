"""Text corpora, pre-tokenised once into memory-mapped arrays of token ids.

Sources (`data.name`):
  pysource     the Python standard library's own .py files: on every machine, no download
  shakespeare  tinyshakespeare (1,115,394 characters), downloaded once and sha256-checked
  textfile     UTF-8 text of any size: `data.path=FILE`, a folder or a glob (.txt, .txt.gz, .jsonl)
  bin          nanoGPT's train.bin and val.bin, `data.root=DIR` (data/text/nanogpt.py)

Split: the first 90% of the text trains, the last 10% validates (as nanoGPT), or
textfile's data.val_path. Cache: DATA_DIR/<name>/{train.bin,val.bin,vocab.json,meta.pkl,
tokens.json,stamp}, prepared as a stream (data/text/prepare.py) and prepared again when the
source changes. train.bin, val.bin and meta.pkl are nanoGPT's layout (data/text/nanogpt.py),
which also reads nanoGPT's own folders: data=bin data.root=DIR.
"""

import hashlib
import json
import sysconfig
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import multitx.data.text.bpe  # noqa: F401 - registers the bpe tokenizer
import multitx.data.text.vocab  # noqa: F401 - registers the char tokenizer
from multitx.config.rules import Text
from multitx.config.settings import setting
from multitx.data.registry import CorpusInputs, TextData, dataset, register_dataset
from multitx.data.sampler import BatchSampler
from multitx.data.text.prepare import file_sources, fingerprint, load_prepared, prepare
from multitx.data.text.tokenizers import TEXT_TOKENIZERS, TextTokenizer
from multitx.errors import UserError
from multitx.files import atomic_write_bytes, sha256_file

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9
PYSOURCE_SKIP = {"site-packages", "test", "tests", "idlelib", "__pycache__", "turtledemo"}
PYSOURCE_MAX_BYTES = 8_000_000


def read_utf8(path: Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"text file {path} does not exist; give an existing UTF-8 file as data.path=FILE") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start} cannot be decoded); "
                        f"convert it, e.g. iconv -t UTF-8, and try again") from None
    if not text:
        raise UserError(f"{path} is empty; a corpus needs text to learn from")
    return text


def pysource_text() -> str:
    """The standard library's .py files in sorted order, up to PYSOURCE_MAX_BYTES."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if PYSOURCE_SKIP & set(path.relative_to(root).parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size >= PYSOURCE_MAX_BYTES:
            break
    if not parts:
        raise UserError(f"found no Python source under {root}; use data=shakespeare or data=textfile data.path=FILE")
    return "\n\n".join(parts)


def shakespeare_path(data_dir: Path) -> Path:
    """tinyshakespeare under data_dir, downloaded and checked once, offline afterwards."""
    path = Path(data_dir) / "shakespeare" / "input.txt"
    if path.exists() and sha256_file(path) == SHAKESPEARE_SHA256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
            payload = response.read()
    except OSError as err:
        raise UserError(f"tinyshakespeare is not at {path} and could not be downloaded ({err}); "
                        f"copy input.txt (sha256 {SHAKESPEARE_SHA256[:12]}…) there") from None
    if hashlib.sha256(payload).hexdigest() != SHAKESPEARE_SHA256:
        raise UserError(f"the download from {SHAKESPEARE_URL} has the wrong sha256; put the right file at {path}")
    atomic_write_bytes(path, payload)
    return path


@register_dataset("pysource")
@dataclass
class PySource(TextData):
    """The Python standard library's own source: present on every machine."""

    @classmethod
    def text(cls, data, data_dir) -> str:
        return pysource_text()


@register_dataset("shakespeare")
@dataclass
class Shakespeare(TextData):
    """tinyshakespeare, downloaded once into DATA_DIR/shakespeare/ (sha256-checked)."""

    @classmethod
    def text(cls, data, data_dir) -> str:
        return read_utf8(shakespeare_path(Path(data_dir)))


@register_dataset("textfile")
@dataclass
class TextFile(TextData):
    """UTF-8 text of any size: data=textfile data.path=FILE, FOLDER or GLOB (.txt, .txt.gz, .jsonl, .jsonl.gz),
    prepared as a stream (data/text/prepare.py); data.val_path= gives validation its own files."""

    path: str | None = setting(None, Text(null=True), "a UTF-8 text file, a folder of them, or a glob "
                               "(.txt, .txt.gz, .jsonl with a \"text\" field, .jsonl.gz)")
    val_path: str | None = setting(None, Text(null=True), "validation's own files (file, folder or glob); "
                                   "null: the last 10% of data.path")

    @classmethod
    def check(cls, data: dict) -> None:
        if not data.get("path"):
            raise UserError("data=textfile needs a file: add data.path=FILE")

    @classmethod
    def inputs(cls, data, data_dir) -> CorpusInputs:
        cls.check(data)
        train = file_sources(str(data["path"]), "data.path")
        val = file_sources(str(data["val_path"]), "data.val_path") if data.get("val_path") else None
        if all(s.size == 0 for s in train):
            raise UserError(f"{data['path']} is empty; a corpus needs text to learn from")
        identity = json.dumps([fingerprint(train), fingerprint(val) if val else None])
        return CorpusInputs(train, val, hashlib.sha256(identity.encode()).hexdigest(),
                            f"textfile-{hashlib.sha256(identity.encode()).hexdigest()[:12]}")


@dataclass
class TokenizedCorpus:
    train: np.ndarray  # (N_train,) token ids (uint16, or uint32 past 65,536 tokens), memory-mapped
    val: np.ndarray  # (N_val,)
    vocab: TextTokenizer


def load_corpus(data, data_dir: Path, path: str | None = None) -> TokenizedCorpus:
    """Tokenise a corpus into DATA_DIR/<name>/ once (streamed: data/text/prepare.py); memory-map it afterwards.
    data: the run's data settings (data.name names a registered text dataset, data.tokenizer a registered text
    tokenizer), or just the name, with `path` for textfile."""
    data = {"name": data, "path": path} if isinstance(data, str) else data
    name, tokenizer = str(data["name"]), str(data.get("tokenizer") or "char")
    source = dataset(name, "text")
    ready = source.prepared(data, data_dir)
    if ready is not None:  # ids prepared elsewhere (nanoGPT's train.bin), with the tokenizer they came from
        return TokenizedCorpus(*ready)
    tokenizer_class = TEXT_TOKENIZERS.get(tokenizer)
    inputs = source.inputs(data, data_dir)
    tag = tokenizer_class.cache_tag(data)
    folder = Path(data_dir) / (inputs.folder if tag == "char" else f"{inputs.folder}-{tag}")
    prepare(folder, inputs.train, inputs.val, tokenizer_class, data, f"{inputs.identity} {tag}",
            workers=data.get("workers"), describe=f"preparing {name} ({tokenizer})")
    return TokenizedCorpus(*load_prepared(folder))


class TokenWindows:
    """Batches of random contiguous windows: inputs (B, T) and targets (B, T), the
    same windows shifted by one token. The window starts come from a BatchSampler
    (data/sampler.py) drawing with replacement: under DDP every process draws the
    same global batch of B * world_size starts and keeps its slice, and its state
    of plain ints lets a resumed run draw exactly the batches it would have drawn.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, context: int, seed: int, *, rank: int = 0,
                 world_size: int = 1):
        if len(tokens) <= context + 1:
            raise UserError(f"the corpus split has {len(tokens)} tokens, fewer than context {context} + 1; "
                            f"use a longer text or a smaller model.context")
        self.tokens = tokens
        # A window is context + 1 tokens: its inputs and, one further on, its targets.
        self.sampler = BatchSampler(len(tokens) - context, batch_size, seed=seed, replacement=True, rank=rank,
                                    world_size=world_size)
        self.offsets = np.arange(context + 1)  # (T+1,)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = next(self.sampler).indices.numpy()  # (B,) this process's share
        windows = torch.from_numpy(self.tokens[starts[:, None] + self.offsets].astype(np.int64))  # (B, T+1)
        return windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
