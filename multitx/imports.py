"""Importing a class that a setting names by its path (package.module.Class), with one clear line if it fails;
whether an optional package is installed."""

import importlib.util
import logging
import sys

from hydra.utils import get_class

from multitx.errors import UserError


def named_class(target: str, key: str, wanted: type, public_name: str = "") -> type:
    """The subclass of `wanted` (known to users as `public_name`) at import path `target`, the value of `key`."""
    hydra_log = logging.getLogger("hydra.utils")
    quiet, hydra_log.disabled = hydra_log.disabled, True  # it logs the error too; one line is enough
    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001 - hydra wraps import errors in several types
        reason = " ".join(str(err).split())[:240] or type(err).__name__
        raise UserError(f"{key}={target}: cannot import it ({reason}); give a {wanted.__name__} subclass as "
                        f"package.module.Class, importable from here (installed, or its folder on PYTHONPATH)") \
            from None
    finally:
        hydra_log.disabled = quiet
    if not (isinstance(cls, type) and issubclass(cls, wanted)):
        name = public_name or f"{wanted.__module__}.{wanted.__name__}"
        raise UserError(f"{key}={target} is not a subclass of {name}")
    return cls


def installed(package: str) -> bool:
    """Whether `package` (or a dotted module) can be imported, without importing it."""
    if package in sys.modules:
        return sys.modules[package] is not None
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # its parent package is missing too
        return False
