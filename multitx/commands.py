"""The `multitx` command: every tool and benchmark behind one name, each taking key=value options.

    multitx                               what there is (also: python -m multitx)
    multitx train task=charlm steps=100   = python -m multitx.train task=charlm steps=100
    multitx sample run_dir=runs/first     = python -m multitx.sample run_dir=runs/first
    multitx bench gpu --smoke             = python -m multitx.benchmarks.gpu --smoke
    multitx TOOL --help                   the tool's keys: default and help of each
"""

import ast
import functools
import importlib
import os
import sys
from importlib.resources import files

from multitx.cli import run_cli
from multitx.errors import UserError

TOOLS = {  # name: (module, what it does)
    "train": ("multitx.train", "train a task (a sweep with -m): multitx train task=charlm"),
    "sample": ("multitx.sample", "write text with a trained LM: run_dir=DIR prompt=..."),
    "caption": ("multitx.caption", "caption an image with a trained captioner: run_dir=DIR image=FILE"),
    "fill": ("multitx.fill", "fill in masked characters with a trained mlm: run_dir=DIR prompt=..."),
    "predict": ("multitx.predict", "classify images with a trained ViT: run_dir=DIR image=FILE"),
    "evaluate": ("multitx.evaluate", "score a trained run on a split: run_dir=DIR split=test"),
    "export": ("multitx.export", "export a trained model: run_dir=DIR format=onnx|pt2|hf"),
    "inspect": ("multitx.inspect.__main__", "see inside a trained run: attention maps, shapes, a web page"),
    "explore": ("multitx.explore.__main__", "a live explorer of a trained run in the browser: run_dir=DIR"),
    "launch": ("multitx.launch", "torchrun with clear exits: launch --standalone --nproc_per_node=2 -m multitx.train"),
}
NOT_BENCHMARKS = ("budget", "peaks")  # helpers the benchmarks share


@functools.cache
def benchmarks() -> dict[str, str]:
    """Each benchmark module's name and the first line of its docstring, read without importing it."""
    found = {}
    for entry in sorted(files("multitx.benchmarks").iterdir(), key=lambda p: p.name):
        name = entry.name.removesuffix(".py")
        if not entry.name.endswith(".py") or name.startswith("_") or name in NOT_BENCHMARKS:
            continue
        doc = ast.get_docstring(ast.parse(entry.read_text(encoding="utf-8"))) or ""
        found[name] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def listing() -> str:
    width = max(map(len, [*TOOLS, *(f"bench {b}" for b in benchmarks())]))
    tools = [f"  {name:<{width}}  {about}" for name, (_, about) in TOOLS.items()]
    benches = [f"  {'bench ' + name:<{width}}  {about}" for name, about in benchmarks().items()]
    return "\n".join([
        "usage: multitx COMMAND [key=value ...]    (multitx COMMAND --help: its keys, defaults and help)", "",
        "tools:", *tools, "", "benchmarks (each prints its figures):", *benches])


def module_for(argv: list[str]) -> tuple[str, str, list[str]]:
    """(module, the command's name, its arguments) for `multitx NAME ...` or `multitx bench NAME ...`."""
    name, rest = argv[0], argv[1:]
    if name in TOOLS:
        return TOOLS[name][0], name, rest
    if name in ("bench", "benchmark"):
        known = benchmarks()
        if not rest or rest[0] in ("-h", "--help"):
            raise UserError(f"say which benchmark: multitx bench NAME [key=value ...]; NAME is one of "
                            f"{', '.join(known)}")
        if rest[0] not in known:
            raise UserError(f"unknown benchmark {rest[0]!r}; the benchmarks are: {', '.join(known)}")
        return f"multitx.benchmarks.{rest[0]}", f"bench {rest[0]}", rest[1:]
    raise UserError(f"unknown command {name!r}; the commands are: {', '.join(TOOLS)}, bench NAME "
                    f"(multitx --help lists them)")


def completion_line() -> None:
    """Hydra's bash completion asks `multitx -sc query=bash` about the line `multitx train ...`: drop
    the word `train`, so that Hydra completes the keys of the training config."""
    line = os.environ.get("COMP_LINE", "")
    head, _, tail = line.partition(" train ")
    if tail or line.endswith(" train"):
        os.environ["COMP_LINE"] = f"{head} {tail}"
        point = int(os.environ.get("COMP_POINT", len(line)))
        os.environ["COMP_POINT"] = str(max(len(head) + 1, point - len(" train")))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(listing())
        return
    if argv[0] in ("-sc", "--shell-completion"):  # from the completion function Hydra installed
        completion_line()
        argv = ["train", *argv]

    def command(args: list[str]) -> None:
        module, _, rest = module_for(args)
        sys.argv = [sys.argv[0], *rest]  # as if the tool were run itself (Hydra reads sys.argv[0])
        importlib.import_module(module).main(rest)

    run_cli(command, argv)


if __name__ == "__main__":
    main()
