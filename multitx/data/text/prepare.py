"""Preparing a text corpus larger than memory: read in chunks, tokenised in worker processes,
written as memory-mapped token files; the memory it takes does not grow with the corpus.

    data.path=FILE | FOLDER | GLOB      .txt, .txt.gz, .jsonl, .jsonl.gz (one JSON object a line, its "text")
    data.val_path=...                   validation from its own files; else the last 10% of the input

One pass learns the tokenizer (the training part only, except a character vocabulary, which must
cover every character), a second encodes: chunks of about a megabyte, cut at a line's end, go to
`data.workers` processes a few at a time and come back in order, appended to train.bin.part and
val.bin.part. Only when both are complete are they renamed, the tokenizer and meta.pkl written
and, last, the stamp that says the folder is complete: a preparation killed or stopped by a full
disk leaves nothing a later run takes for complete. A later run with the same inputs (the same
files, sizes and modification times) finds the stamp and starts at once, without reading them.
"""

import errno
import fcntl
import gzip
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import numpy as np
from tqdm import tqdm

from multitx.data.text.tokenizers import TextTokenizer, tokenizer_from_state
from multitx.errors import UserError
from multitx.files import atomic_write_bytes

SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
CHUNK_BYTES = 1 << 18  # read and tokenised at once: a few MB of transient arrays in all
IN_PROCESS_BYTES = 16 << 20  # a smaller corpus is tokenised here: starting workers would take longer
TRAIN_FRACTION = 0.9


@dataclass
class Source:
    """One input of a corpus: `read()` yields (text, raw bytes it took), chunk by chunk."""
    name: str
    size: int  # raw bytes (compressed ones for .gz): what the progress bar and the split count
    read: Callable[[], Iterator[tuple[str, int]]]


def text_source(text: str, name: str) -> Source:
    """Text already in memory (the stdlib's source, tinyshakespeare)."""
    def read():
        for start in range(0, len(text), CHUNK_BYTES):
            piece = text[start:start + CHUNK_BYTES]
            yield piece, len(piece)
    return Source(name, len(text), read)


def file_sources(spec: str, key: str) -> list[Source]:
    """The files `spec` names (a file, a folder searched recursively, or a glob), each a Source."""
    path = Path(spec).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
    else:
        files = sorted(Path(p) for p in glob(str(path), recursive=True)
                       if Path(p).is_file() and p.endswith(SUFFIXES))
        if not files and not any(ch in spec for ch in "*?["):
            raise UserError(f"{key}={spec} does not exist; give an existing UTF-8 file, a folder of them or a glob")
    if not files:
        raise UserError(f"{key}={spec} holds no text files ({', '.join(SUFFIXES)}); give a file, a folder of "
                        f"them or a glob such as 'corpus/*.txt.gz'")
    return [Source(str(f), f.stat().st_size, reader(f)) for f in files]


def reader(path: Path) -> Callable[[], Iterator[tuple[str, int]]]:
    name = path.name
    jsonl = name.endswith((".jsonl", ".jsonl.gz"))
    packed = name.endswith(".gz")

    def read():
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if packed else raw
            position, rest, offset, line = raw.tell(), b"", 0, 0
            while True:
                try:
                    block = stream.read(CHUNK_BYTES)
                except (OSError, EOFError) as err:
                    raise UserError(f"{path} cannot be read to its end ({type(err).__name__}: {err}); is it a "
                                    f"complete {'gzip' if packed else 'text'} file?") from None
                data = rest + block
                cut = data.rfind(b"\n") + 1 if block else len(data)  # whole lines; the rest waits for the next
                whole, rest = data[:cut] if cut else b"", data[cut:] if cut else data
                if whole:
                    try:
                        text = whole.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise UserError(f"{path} is not UTF-8 text (byte {offset + err.start} cannot be decoded); "
                                        f"convert it (iconv -t UTF-8) or leave it out") from None
                    offset += len(whole)
                    if jsonl:
                        text, line = documents(text, path, line)
                    now = raw.tell()
                    yield text, (now - position) if packed else len(whole)
                    position = now
                if not block:
                    return
    return read


def documents(text: str, path: Path, line: int) -> tuple[str, int]:
    """The "text" of each JSON line, a blank line after each; (their text, the last line number read)."""
    out = []
    for row in text.splitlines():
        line += 1
        if not row.strip():
            continue
        try:
            document = json.loads(row)["text"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}, line {line}: not a JSON object with a \"text\" string; each line of a .jsonl "
                            f"file is one document, {{\"text\": \"...\"}}") from None
        if not isinstance(document, str):
            raise UserError(f"{path}, line {line}: \"text\" is a {type(document).__name__}, not a string")
        out.append(document + "\n\n")
    return "".join(out), line


def fingerprint(sources: list[Source]) -> list:
    """What says the inputs are unchanged without reading them: each file's path, size and modification time."""
    rows = []
    for s in sources:
        stat = Path(s.name).stat()
        rows.append([str(Path(s.name).resolve()), stat.st_size, stat.st_mtime_ns])
    return rows


def split_parts(sources: list[Source], val: list[Source] | None) -> Iterator[tuple[str, str, int]]:
    """("train" | "val", text, raw bytes): the val sources, or else the last 10% of the raw bytes of the
    input (a chunk that straddles the cut is split in proportion: exactly at 90% of a plain ASCII file)."""
    if val is not None:
        for s in sources:
            for text, size in s.read():
                yield "train", text, size
        for s in val:
            for text, size in s.read():
                yield "val", text, size
        return
    cut, done = int(sum(s.size for s in sources) * TRAIN_FRACTION), 0
    for s in sources:
        for text, size in s.read():
            if done >= cut:
                yield "val", text, size
            elif done + size <= cut:
                yield "train", text, size
            else:
                k = round(len(text) * (cut - done) / size)
                yield "train", text[:k], cut - done
                yield "val", text[k:], done + size - cut
            done += size


@contextmanager
def locked(folder: Path):
    """One preparation of a folder at a time (the processes of a DDP run all ask for it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "prepare.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


WORKER_TOKENIZER: TextTokenizer | None = None


def start_worker(state: str) -> None:
    global WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread a worker: the workers are the parallelism
    WORKER_TOKENIZER = tokenizer_from_state(json.loads(state))


def encode_in_worker(text: str, dtype: str) -> bytes:
    return WORKER_TOKENIZER.encode_array(text).astype(dtype).tobytes()


def workers_for(setting, total: int) -> int:
    if setting in (None, "auto"):
        return 0 if total < IN_PROCESS_BYTES else min(8, os.cpu_count() or 1)
    return int(setting)


def encoded(parts: Iterable[tuple[str, str, int]], vocab: TextTokenizer, dtype: str,
            workers: int) -> Iterator[tuple[str, bytes, int]]:
    """(part, token bytes, raw bytes) of each chunk, in order: here, or in `workers` processes with at most
    two chunks each in flight (so that memory does not grow with the corpus)."""
    if workers <= 0:
        for part, text, size in parts:
            yield part, vocab.encode_array(text).astype(dtype).tobytes(), size
        return
    context = multiprocessing.get_context("spawn")  # a clean process: the parent may hold threads (torch, rayon)
    with context.Pool(workers, initializer=start_worker, initargs=(json.dumps(vocab.state()),)) as pool:
        pending: deque = deque()
        for part, text, size in parts:
            pending.append((part, pool.apply_async(encode_in_worker, (text, dtype)), size))
            if len(pending) >= 2 * workers:
                part_, result, size_ = pending.popleft()
                yield part_, result.get(), size_
        while pending:
            part_, result, size_ = pending.popleft()
            yield part_, result.get(), size_


def prepare(folder: Path, sources: list[Source], val: list[Source] | None, tokenizer_class: type[TextTokenizer],
            data, stamp: str, *, workers=None, describe: str = "", timings: dict | None = None) -> None:
    """Tokenise the corpus into `folder` (train.bin, val.bin, vocab.json, meta.pkl, tokens.json, then the
    stamp), unless a complete preparation with the same stamp is there already. `timings`, if given, gets
    the seconds spent learning the tokenizer and encoding (benchmarks/text_prep.py)."""
    with locked(folder):
        if (folder / "stamp").is_file() and (folder / "stamp").read_text() == stamp:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("stamp", "train.bin", "val.bin", "train.bin.part", "val.bin.part"):
            (folder / name).unlink(missing_ok=True)
        everything = sources + (val or [])
        texts = (t for s in everything for t, _ in s.read()) if tokenizer_class.learns_from_val else \
            (t for part, t, _ in split_parts(sources, val) if part == "train")
        started = time.perf_counter()
        vocab = tokenizer_class.train(texts, data)
        learned = time.perf_counter()
        dtype = "uint16" if vocab.vocab_size <= 1 << 16 else "uint32"
        total = sum(s.size for s in everything)
        counts = {"train": 0, "val": 0}
        try:
            with open(folder / "train.bin.part", "wb") as train, open(folder / "val.bin.part", "wb") as held, \
                    tqdm(total=total, unit="B", unit_scale=True, desc=describe or f"preparing {folder.name}",
                         file=sys.stderr, disable=None, leave=False, dynamic_ncols=True) as bar:
                files = {"train": train, "val": held}
                for part, ids, size in encoded(split_parts(sources, val), vocab, dtype, workers_for(workers, total)):
                    files[part].write(ids)
                    counts[part] += len(ids) // np.dtype(dtype).itemsize
                    bar.update(size)
            if counts["train"] == 0 or counts["val"] == 0:
                empty = "training" if counts["train"] == 0 else "validation"
                raise UserError(f"the {empty} part of {describe or folder.name} holds no text; give more text"
                                + (" or another data.val_path" if val is not None else ""))
            if timings is not None:
                timings |= {"learn_s": learned - started, "encode_s": time.perf_counter() - learned,
                            "workers": workers_for(workers, total), "tokens": counts["train"] + counts["val"]}
            for name in ("train", "val"):
                os.replace(folder / f"{name}.bin.part", folder / f"{name}.bin")
            vocab.save(folder / "vocab.json")
            atomic_write_bytes(folder / "tokens.json", json.dumps({"dtype": dtype, **counts}).encode())
            from multitx.data.text.nanogpt import write_meta

            write_meta(folder, vocab)
            atomic_write_bytes(folder / "stamp", stamp.encode())  # last: the folder is complete
        except OSError as err:
            for name in ("train.bin.part", "val.bin.part", "train.bin", "val.bin"):
                (folder / name).unlink(missing_ok=True)
            if err.errno == errno.ENOSPC:
                raise UserError(f"the disk filled up while preparing {folder} ({err.filename or folder}); free "
                                f"some space or give data_dir=ANOTHER_FOLDER; nothing half-written was kept") from None
            raise
        except BaseException:
            for name in ("train.bin.part", "val.bin.part"):
                (folder / name).unlink(missing_ok=True)
            raise


def load_prepared(folder: Path):
    """(train ids, val ids, tokenizer) of a prepared folder, memory-mapped."""
    from multitx.data.text.tokenizers import load_tokenizer

    meta = folder / "tokens.json"
    dtype = json.loads(meta.read_text())["dtype"] if meta.is_file() else "uint16"
    return (np.memmap(folder / "train.bin", dtype=dtype, mode="r"),
            np.memmap(folder / "val.bin", dtype=dtype, mode="r"), load_tokenizer(folder / "vocab.json"))
