import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and do not fight other work for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextmanager
def torch_threads(count: int = 1):
    """As the one_thread fixture, for a module-scoped fixture: torch on `count` threads, then as it was."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def chromium() -> str:
    """Debian's chromium, for the tests that load a page in a real browser (.ci/run installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium here (apt-get install chromium)")
    return found


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """A small UTF-8 text file: enough for tiny models to train on in seconds."""
    lines = [f"{name}: {verb} the {thing}, good {name.lower()}!" for name in ("ROMEO", "JULIET", "MERCUTIO")
             for verb in ("speak", "hold", "take") for thing in ("sword", "rose", "light", "night")]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines * 20) + "\n", encoding="utf-8")
    return path


def write_line_corpus(path: Path) -> Path:
    """One short line of text, 40 times: a corpus for runs of a few steps in module-scoped fixtures."""
    path.write_text("To be, or not to be, that is the question.\n" * 40, encoding="utf-8")
    return path


def run_module(module: str, *args: str, cwd: Path | None = None, timeout: int = 180,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m module args...` in a fresh process, as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def tiny_charlm_args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["task=charlm", "data=textfile", f"data.path={corpus}", f"run_dir={run_dir}",
            f"data_dir={run_dir.parent / 'datasets'}", "steps=30", "eval_every=15", "eval_batches=2",
            "batch_size=8", "model.trunk.layers=2", "model.trunk.heads=2", "model.trunk.dim=32", "model.context=32",
            "show_tokens=20", "progress=false", "warmup_steps=5", *extra]


def tiny_caption_args(tmp, *extra: str) -> list[str]:
    return ["task=caption", f"run_dir={tmp / 'run'}", f"data_dir={tmp / 'datasets'}", "data.num_train=120",
            "data.num_val=12", "data.num_test=12", "model.image_size=16", "model.patch_size=4", "model.decoder.dim=32",
            "model.encoder.dim=32", "model.encoder.layers=1", "model.decoder.layers=1", "model.decoder.heads=2",
            "model.encoder.heads=2", "steps=24", "eval_every=12", "eval_batches=1", "eval_images=12",
            "batch_size=8", "captions_per_image=2", "warmup_steps=4", "lr=3e-3", "show_captions=2",
            "progress=false", *extra]


# The module each `python -m NAME` runs, where it is not NAME itself.
MAIN_OF = {"multitx.inspect": "multitx.inspect.__main__", "multitx.explore": "multitx.explore.__main__",
           "multitx": "multitx.commands"}


def run_here(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m module args...` run in this process, without the 5-7 s of starting Python and torch again:
    the command's own main() through multitx.cli.run_cli, as `python -m` runs it, with its exit code (0, or
    what it exited with), stdout, and stderr (the warnings a fresh process would print to it included). For
    tests that are about what a command does, not about a process of its own (signals, kills, imports)."""
    import importlib
    import io
    import warnings
    from contextlib import redirect_stderr, redirect_stdout

    from multitx.cli import run_cli

    main = importlib.import_module(MAIN_OF.get(module, module)).main
    out, err = io.StringIO(), io.StringIO()
    deterministic, here = torch.are_deterministic_algorithms_enabled(), os.getcwd()
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err):
        warnings.simplefilter("default")  # as a fresh process shows them: each once per place
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=hidden)  # hidden by default, as in a fresh process
        try:
            if cwd is not None:
                os.chdir(cwd)
            run_cli(main, list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
        finally:
            os.chdir(here)
            torch.use_deterministic_algorithms(deterministic)  # deterministic=true sets it for the process
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args], code, out.getvalue(),
                                       err.getvalue() + shown)


@contextmanager
def registries_restored(*modules: str, builtin_only: bool = False):
    """multitx's registries (tasks, datasets, text and patch tokenizers, loggers) and Hydra's config store as
    they were before the block, and `modules` (a user's package that the block's in-process commands imported)
    forgotten: what the block registered does not reach later tests, which see what a fresh process would.
    builtin_only: inside the block the registries hold multitx's own entries alone, as in a fresh process,
    whatever other tests in this process registered before."""
    from hydra.core.config_store import ConfigStore

    from multitx.config.compose import defaults_for
    from multitx.data.registry import DATASETS
    from multitx.data.text.tokenizers import TEXT_TOKENIZERS
    from multitx.engine.loggers import LOGGERS
    from multitx.engine.task import TASKS
    from multitx.nn.patches import PATCH_TOKENIZERS

    registries = (TASKS, DATASETS, TEXT_TOKENIZERS, LOGGERS, PATCH_TOKENIZERS)
    entries = [dict(registry.entries) for registry in registries]
    store = ConfigStore.instance()
    groups = {group: dict(store.repo.get(group, {})) for group in ("data", "settings")}  # what registering fills
    for name in modules:
        sys.modules.pop(name, None)
    if builtin_only:
        for registry, saved in zip(registries, entries, strict=True):
            registry.entries.clear()
            registry.entries.update({name: cls for name, cls in saved.items()
                                     if cls.__module__.split(".")[0] == "multitx"})
    try:
        yield
    finally:
        for name in modules:
            sys.modules.pop(name, None)
        for registry, saved in zip(registries, entries, strict=True):
            registry.entries.clear()
            registry.entries.update(saved)
        for group, nodes in groups.items():
            store.repo[group] = nodes
        defaults_for.cache_clear()
