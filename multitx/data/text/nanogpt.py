"""nanoGPT's data files, both ways.

    data=bin data.root=DIR     trains on DIR/train.bin and DIR/val.bin as nanoGPT's prepare.py writes
                               them: token ids, uint16, one after the other, nothing else in the file

The vocabulary comes from DIR/meta.pkl when there is one (nanoGPT's shakespeare_char:
{"vocab_size": 65, "itos": {0: "\\n", ...}, "stoi": {...}}), else from data.tokenizer_file
(GPT-2's tokenizer.json, for nanoGPT's openwebtext and shakespeare). meta.pkl is a pickle,
and unpickling can run code: it is read by an unpickler that builds plain dicts, lists,
strings and numbers only, and a file that names anything else is refused in one line.

The other way, multitx's own prepared corpora (DATA_DIR/NAME/) are nanoGPT's layout:
train.bin and val.bin of uint16 ids, and a meta.pkl of plain data (vocab_size; the
characters' itos and stoi for a character vocabulary), so nanoGPT's train.py reads them
as they are with dataset=... pointing there.
"""

import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multitx.config.rules import Folder
from multitx.config.settings import setting
from multitx.data.registry import TextData, register_dataset
from multitx.data.text.bpe import BytePairTokenizer
from multitx.data.text.tokenizers import TextTokenizer
from multitx.data.text.vocab import CharVocab
from multitx.errors import UserError
from multitx.files import atomic_write_bytes

META_MAX_BYTES = 64 << 20  # a vocabulary; nothing nanoGPT writes comes near
CHUNK = 1 << 24  # ids read at once when checking a .bin against the vocabulary


class PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, strings, bytes and numbers; any class or function a pickle names
    (the way a pickle runs code) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent reference")


def read_meta(path: Path) -> dict:
    """nanoGPT's meta.pkl as plain data; one line if it is anything else."""
    if path.stat().st_size > META_MAX_BYTES:
        raise UserError(f"{path} is {path.stat().st_size >> 20} MB, too large for a vocabulary; remove it and give "
                        f"data.tokenizer_file=tokenizer.json instead")
    try:
        meta = PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as err:
        raise UserError(f"{path} is refused: {err}, and multitx reads only plain dicts, strings and numbers from a "
                        f"pickle (anything else could run code); remove it and give data.tokenizer_file="
                        f"tokenizer.json, or use the meta.pkl nanoGPT's prepare.py wrote") from None
    except Exception as err:  # noqa: BLE001 - a damaged pickle raises many kinds
        raise UserError(f"{path} cannot be read as nanoGPT's meta.pkl ({type(err).__name__}); remove it and give "
                        f"data.tokenizer_file=tokenizer.json instead") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} holds a {type(meta).__name__}, not nanoGPT's dict (vocab_size, itos, stoi)")
    return meta


def meta_tokenizer(meta: dict, where: Path) -> CharVocab | None:
    """The character vocabulary of a meta.pkl with itos (id -> character), or None without one."""
    itos = meta.get("itos")
    if itos is None:
        return None
    size = meta.get("vocab_size", len(itos))
    if not (isinstance(itos, dict) and sorted(itos) == list(range(size))
            and all(isinstance(c, str) and len(c) == 1 for c in itos.values())):
        raise UserError(f"{where}: itos must map each id 0..vocab_size-1 to one character, as nanoGPT's "
                        f"shakespeare_char prepare.py writes it")
    return CharVocab("".join(itos[i] for i in range(size)))


def write_meta(folder: Path, vocab: TextTokenizer) -> None:
    """nanoGPT's meta.pkl beside multitx's own train.bin and val.bin: plain data only."""
    meta = {"vocab_size": vocab.vocab_size}
    if isinstance(vocab, CharVocab):
        meta |= {"itos": dict(enumerate(vocab.chars)), "stoi": dict(vocab.index)}
    atomic_write_bytes(folder / "meta.pkl", pickle.dumps(meta, protocol=4))


def largest_id(path: Path) -> int:
    ids = np.memmap(path, dtype=np.uint16, mode="r")
    return max((int(ids[i:i + CHUNK].max()) for i in range(0, len(ids), CHUNK)), default=-1)


def checked(root: Path, vocab_size: int, data_dir: Path) -> None:
    """Every id of train.bin and val.bin is below vocab_size (read once; remembered by the files' sizes and
    modification times in DATA_DIR/bin/)."""
    files = [root / "train.bin", root / "val.bin"]
    fingerprint = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files] + [vocab_size]
    stamp = Path(data_dir) / "bin" / (hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()[:16] + ".ok")
    if stamp.exists():
        return
    for f in files:
        if f.stat().st_size % 2:
            raise UserError(f"{f} has an odd number of bytes: it is not nanoGPT's uint16 token file (cut short?)")
        largest = largest_id(f)
        if largest >= vocab_size:
            raise UserError(f"{f} holds token id {largest}, beyond the vocabulary of {vocab_size}; give the "
                            f"tokenizer it was prepared with (data.tokenizer_file=, or its meta.pkl)")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(stamp, b"ok\n")


@register_dataset("bin")
@dataclass
class NanoGPTBin(TextData):
    """nanoGPT's prepared data: data=bin data.root=DIR (train.bin, val.bin, and meta.pkl or data.tokenizer_file)."""

    root: str | None = setting(None, Folder(null=True, hint="nanoGPT's data/NAME folder: train.bin, val.bin"),
                               "the folder with train.bin and val.bin")

    @classmethod
    def check(cls, data: dict) -> None:
        if not data.get("root"):
            raise UserError("data=bin needs nanoGPT's data folder: add data.root=DIR (train.bin, val.bin)")

    @classmethod
    def prepared(cls, data, data_dir):
        """(train ids, val ids, tokenizer) straight from the folder: nothing to prepare."""
        cls.check(data)
        root = Path(str(data["root"])).expanduser()
        for name in ("train.bin", "val.bin"):
            if not (root / name).is_file():
                raise UserError(f"{root} has no {name}; data.root is the folder nanoGPT's prepare.py wrote "
                                f"train.bin and val.bin into")
        vocab = None
        if (root / "meta.pkl").is_file():
            vocab = meta_tokenizer(read_meta(root / "meta.pkl"), root / "meta.pkl")
        if vocab is None and data.get("tokenizer_file"):
            vocab = BytePairTokenizer.from_file(Path(str(data["tokenizer_file"])).expanduser())
        if vocab is None:
            raise UserError(f"{root} has no meta.pkl with the characters (itos); give the tokenizer its ids came "
                            f"from: data.tokenizer_file=tokenizer.json (GPT-2's for nanoGPT's openwebtext)")
        checked(root, vocab.vocab_size, Path(data_dir))
        return (np.memmap(root / "train.bin", dtype=np.uint16, mode="r"),
                np.memmap(root / "val.bin", dtype=np.uint16, mode="r"), vocab)
