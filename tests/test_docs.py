"""Every command in the README and the docs works as written.

Each line of a ```bash block is read as the shell reads it (quotes, `# comments`, `\\` continuations).
Every `multitx ...` command is then checked by the code that runs it:
  - `multitx train ...`: composed and checked as `multitx train` checks before it builds anything (each key,
    its type and value, the task's and the dataset's rules, the loggers);
  - a tool (`multitx sample ...`): its keys parsed and checked by the tool's own parse_args;
  - a benchmark (`multitx bench NAME ...`): its own keys the same way;
  - a sweep (`multitx train -m ...`): every combination, as `multitx train -m` checks them first;
the reader's own files the commands name (RUN_DIR, DIR, FILE, cat.png, ../nanoGPT/data/...) are stand-ins
made here, and docs/extending.md's `my_pkg` is that page's own Python blocks, written out as a package;
and the README's quick starts run for real, in order, in a scratch folder, with tiny settings added after
each train command (a later key=value wins): the char LM, the ViT and the captioner train, then are sampled,
evaluated, asked to predict and caption, and inspected. The other commands (pip, venv, pytest, mkdocs,
git clone, tensorboard) are the set-up ones, which .ci/run and the fresh-clone check run.
"""

import re
import shlex
from dataclasses import is_dataclass
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multitx import commands
from multitx.benchmarks import own_and_training
from multitx.cli import load_config, parse_args
from multitx.engine.trainer import check
from multitx.errors import UserError
from multitx.imports import installed
from multitx.train import check_every_job
from tests.conftest import REPO, registries_restored
from tests.helpers_vision import write_fashion_mnist

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FASHION = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist: four IDX files written here instead
USERS_PACKAGE = "my_pkg"  # docs/extending.md's package of the reader's own parts, made from that page's code


def bash_lines(page: Path) -> list[list[str]]:
    """The commands of a page's bash blocks, each as the shell would split it; `a && b` gives a and b."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(without_comment(line))
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                found.append(words[:end])
                words = words[end + 1:]
    return found


def without_comment(line: str) -> str:
    """The line up to a `#` that starts a word outside quotes, as bash reads it (mask_char=# is no comment)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def multitx_commands(page: Path) -> list[list[str]]:
    """[COMMAND, args...] for each `multitx COMMAND` or `python -m multitx.MODULE` line of a page."""
    found = []
    for words in bash_lines(page):
        if words and Path(words[0]).name == "multitx":
            found.append(words[1:])
        elif len(words) > 2 and Path(words[0]).name.startswith("python") and words[1] == "-m" and \
                words[2].startswith("multitx"):
            module = words[2].removeprefix("multitx").lstrip(".")
            found.append(["bench", module.split(".")[1], *words[3:]] if module.startswith("benchmarks.")
                         else [module or "--help", *words[3:]])
    return found


ALL = [(page.relative_to(REPO).as_posix(), argv) for page in PAGES for argv in multitx_commands(page)]


def test_the_pages_have_the_commands_this_check_reads():
    assert len(ALL) > 80
    assert {argv[0] for _, argv in ALL} >= {"train", "sample", "evaluate", "predict", "caption", "inspect", "bench"}


@pytest.fixture(scope="module")
def users_package(tmp_path_factory) -> Path:
    """my_pkg, as docs/extending.md writes it: the page's Python blocks, one after the other, in its __init__.py."""
    page = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
    root = tmp_path_factory.mktemp("site-packages")
    (root / USERS_PACKAGE).mkdir()
    (root / USERS_PACKAGE / "__init__.py").write_text(
        "\n\n".join(re.findall(r"```python\n(.*?)```", page, flags=re.S)), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def readers_folder(tmp_path_factory) -> Path:
    """A folder with what the pages' commands name of the reader's own: images, a tokenizer file, nanoGPT's
    data folder beside it, a run with a checkpoint; and DIR, a folder laid out the way every dataset wants."""
    tmp = tmp_path_factory.mktemp("reader")
    work = tmp / "work"
    for name in ("boot.png", "picture.png", "cat.png", "shapes.png"):
        (work / Path(name).parent).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (28, 28), (200, 40, 40)).save(work / name)
    (work / "gpt2").mkdir()
    for name in ("tokenizer.json", "gpt2/tokenizer.json"):
        (work / name).write_text("{}", encoding="utf-8")
    (work / "runs/a/checkpoints/step_0000500").mkdir(parents=True)
    (work / "file.txt").write_text("def fit(self, data):\n    return self.model(data)  # to be, or not\n" * 40,
                                   encoding="utf-8")  # text with the characters of prompt="def "
    for folder in (tmp / "nanoGPT/data/shakespeare_char", tmp / "nanoGPT/data/openwebtext", tmp / "DIR"):
        folder.mkdir(parents=True)
        for split in ("train.bin", "val.bin"):
            np.arange(60, dtype=np.uint16).tofile(folder / split)
    (tmp / "DIR/captions.txt").write_text("image,caption\na.png,a red square\n", encoding="utf-8")
    (tmp / "DIR/Images").mkdir()
    (tmp / "DIR/annotations").mkdir()
    (tmp / "DIR/annotations/captions_train2017.json").write_text("{}", encoding="utf-8")
    for cls in ("circle", "square"):
        (tmp / "DIR/train" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp / "DIR/train" / cls / "0.png")
    write_fashion_mnist(tmp / "fashion")
    (tmp / "nanoGPT-checkout").mkdir()
    return work


def placed(argv: list[str], work: Path) -> list[str]:
    """RUN_DIR, DIR and FILE (the reader's own run, folder, file) and the machine-wide paths, as stand-ins."""
    stand_ins = {"RUN_DIR": str(work.parent / "DIR"), "DIR": str(work.parent / "DIR"), "FILE": str(work / "file.txt"),
                 FASHION: str(work.parent / "fashion"), "/tmp/nanoGPT": str(work.parent / "nanoGPT-checkout")}

    def one(arg: str) -> str:
        key, sep, value = arg.partition("=")
        return f"{key}={stand_ins.get(value, value)}" if sep else arg
    return [one(arg) for arg in argv]


def args_class(module):
    """The dataclass of a tool's or benchmark's keys: SampleArgs, GPUArgs, ..."""
    found = [v for k, v in vars(module).items() if k.endswith("Args") and is_dataclass(v)
             and v.__module__ == module.__name__]
    assert len(found) == 1, f"{module.__name__} has {len(found)} *Args dataclasses"
    return found[0]


@pytest.mark.parametrize("page, argv", ALL, ids=[f"{p}:{' '.join(a)[:60]}" for p, a in ALL])
def test_every_command_is_one_its_tool_accepts(page, argv, readers_folder, users_package, monkeypatch):
    if not any(USERS_PACKAGE in arg for arg in argv):
        return accepted(argv, readers_folder, monkeypatch)
    monkeypatch.syspath_prepend(str(users_package))
    with registries_restored(USERS_PACKAGE):  # what my_pkg registers does not reach later tests
        accepted(argv, readers_folder, monkeypatch)


def accepted(argv: list[str], readers_folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(readers_folder)
    argv = placed(argv, readers_folder)
    module, _, args = commands.module_for(argv)
    if argv[0] == "train":
        flags = [a for a in args if a.startswith("-")]
        assert set(flags) <= {"--help", "--cfg", "-m"}, flags
        overrides = [a for a in args if not a.startswith("-") and a != "job"]
        if "-m" in flags:  # a sweep: every combination, as multitx train -m checks them before the first run
            sweeper = next((a.split("=", 1)[1] for a in overrides if a.startswith("hydra/sweeper=")), "basic")
            if sweeper != "basic" and not installed(f"hydra_plugins.hydra_{sweeper}_sweeper"):
                # a plugin the page tells the reader to install first; without it, the one line naming it
                with pytest.raises(UserError, match=f"pip install hydra-{sweeper}-sweeper"):
                    check_every_job(overrides, [])
                return
            check_every_job(overrides, [])
            return
        cfg = load_config(overrides)
        if "--help" in flags or "--cfg" in flags or any(a.startswith("model.pretrained=hf:") for a in args):
            # --help and --cfg compose and print, as here; hf:gpt2 is a Hugging Face folder of the reader's
            # (tests/test_gpt2.py builds one and trains from it)
            return  # a Hugging Face folder of the reader's (GPT-2's): tests/test_gpt2.py builds one and trains on it
        check(cfg)
    elif argv[0] == "launch":
        train_args = args[args.index("multitx.train") + 1:]
        check(load_config(train_args))
    elif argv[0] == "bench":
        tool = import_module(module)
        keys = args_class(tool)
        own, _ = own_and_training(args, keys)
        parse_args(own, keys)
    else:
        tool = import_module(module)
        parse_args([a for a in args if not a.startswith("run_dir=")] + [f"run_dir={readers_folder.parent / 'DIR'}"],
                   args_class(tool))


TINY = {  # added after a train command of the README: the same run, small enough for a test (text: a small file)
    "charlm": ["steps=2", "eval_every=2", "eval_batches=1", "show_tokens=0", "batch_size=4", "model.context=16",
               "model.trunk.dim=16", "model.trunk.layers=1", "model.trunk.heads=2"],
    "lm": ["steps=2", "eval_every=2", "eval_batches=1", "show_tokens=0", "batch_size=4", "model.context=16",
           "model.trunk.dim=16", "model.trunk.layers=1", "model.trunk.heads=2", "data.vocab_size=300"],
    "vit_fashion": ["steps=2", "eval_every=2", "eval_batches=1", "batch_size=8", "model.trunk.dim=16",
                    "model.trunk.layers=1", "model.trunk.heads=2", "model.image_size=16"],
    "caption": ["steps=2", "eval_every=2", "eval_batches=1", "eval_images=4", "batch_size=4", "data.num_train=40",
                "data.num_val=8", "data.num_test=8", "model.image_size=16", "model.patch_size=8",
                "model.encoder.dim=16", "model.encoder.layers=1", "model.encoder.heads=2", "model.decoder.dim=16",
                "model.decoder.layers=1", "model.decoder.heads=2", "show_captions=1"],
}
SLOW_ELSEWHERE = {"shakespeare", "vit_cifar"}  # tinyshakespeare's file, CIFAR-10: the trainings tested elsewhere


def test_the_readmes_quick_starts_run_in_order(readers_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(readers_folder)
    fashion = readers_folder.parent / "fashion"
    ran = []
    for argv in multitx_commands(REPO / "README.md"):
        if any(word in arg for arg in argv for word in (*SLOW_ELSEWHERE, "DIR")) or "train" not in argv[:1] and \
                not any(a.startswith("run_dir=runs/") for a in argv):
            continue
        argv = [a.replace(FASHION, str(fashion)) for a in argv]
        if argv[0] == "train":
            task = next(a.split("=", 1)[1] for a in argv if a.startswith("task="))
            text = ["data=textfile", f"data.path={readers_folder / 'file.txt'}"] if task in ("charlm", "lm") else []
            argv = [*argv, *TINY[task], *text, f"data_dir={tmp_path / 'datasets'}", "progress=false"]
        elif argv[0] == "sample":
            argv = [a if not a.startswith("max_new_tokens=") else "max_new_tokens=20" for a in argv]
        elif argv[0] == "explore":  # on a free port, its page asked for once, then stopped instead of serving on
            argv = [*argv, "port=0"]
            monkeypatch.setattr("multitx.explore.__main__.server", AnswersOnce)
        commands.main(argv)
        ran.append(argv[0])
    capsys.readouterr()
    assert ran.count("train") == 4, ran
    assert {"sample", "evaluate", "predict", "caption", "inspect", "explore"} <= set(ran), ran


class AnswersOnce:
    """multitx explore's server, for a test: answers the page and the run once, then returns."""

    def __init__(self, app):
        self.app = app

    def run(self, sockets) -> None:
        from starlette.testclient import TestClient

        client = TestClient(self.app, base_url="http://127.0.0.1")
        assert client.get("/").status_code == 200 and client.get("/api/run").json()["task"]
