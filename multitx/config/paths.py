"""Paths a user gives (run_dir, data.root, data.path): checked before anything is read or written,
so that a wrong one ends in one line that says what is wrong with it."""

import codecs
import os
from pathlib import Path

from multitx.errors import UserError


def check_folder(key: str, path: Path, must_exist: bool, hint: str = "") -> None:
    hint = f"; {hint}" if hint else ""
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{key}={path} is a file, not a folder{hint or '; give a folder'}")
        if not os.access(path, os.R_OK | os.X_OK) or (not must_exist and not os.access(path, os.W_OK)):
            raise UserError(f"{key}={path} cannot be {'read' if must_exist else 'written'}; check its permissions")
        return
    if must_exist:
        raise UserError(f"{key}={path} does not exist{hint or '; give an existing folder'}")
    parent = nearest_existing(path)
    if not writable_folder(parent):
        raise UserError(f"{key}={path} cannot be made: {parent} is not a writable folder; choose another place")


def nearest_existing(path: Path) -> Path:
    """The nearest folder above `path` that exists: where making it would start."""
    parent = Path(path).absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def writable_folder(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def check_file(key: str, path: Path, text: bool) -> None:
    if not path.exists():
        raise UserError(f"{key}={path} does not exist; give an existing {'UTF-8 ' if text else ''}file")
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder, not a file; give a file")
    try:
        with open(path, "rb") as f:
            if text:
                decoder = codecs.getincrementaldecoder("utf-8")()
                offset = 0
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    decoder.decode(chunk)
                    offset += len(chunk)
                decoder.decode(b"", final=True)
            else:
                f.read(1)
    except PermissionError:
        raise UserError(f"{key}={path} cannot be read; check its permissions") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{key}={path} is not UTF-8 text (byte {offset + err.start} cannot be decoded); "
                        f"convert it, e.g. iconv -t UTF-8, and try again") from None
