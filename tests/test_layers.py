"""The README's picture of the layers is true: no module imports from a layer above its own, counting
imports inside functions. The layers are read from the picture itself (docs/architecture.md, "Where the code is"),
top layer first, so that the picture and this test cannot drift apart."""

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "multitx"


def readme_layers(readme: str) -> list[set[str]]:
    """The top-level entries (`name.py`, `folder/`) of each layer of the README's picture, top layer first.
    Layers are separated by a line holding only the arrow (│)."""
    section = readme.split("### Where the code is", 1)[1]
    picture = section.split("```", 2)[1]
    layers, current = [], set()
    for line in picture.splitlines():
        if line.strip() == "│":
            layers.append(current)
            current = set()
            continue
        current |= {name.rstrip("/").removesuffix(".py") for name in re.findall(r"(?<![\w./])(\w+(?:\.py|/))", line)}
    return [*layers, current]


LAYERS = readme_layers((REPO / "docs" / "architecture.md").read_text(encoding="utf-8"))
RANK = {name: len(LAYERS) - i for i, names in enumerate(LAYERS) for name in names}  # higher: further up


def top(module: str) -> str:
    """multitx.nn.trunk -> nn; multitx.train -> train; multitx -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, multitx module) of every import in a file, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "multitx":  # from multitx import train (a module) or load (from __init__)
                found += [(node.lineno, f"multitx.{alias.name}" if is_module(alias.name) else "multitx")
                          for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "multitx" or name.startswith("multitx.")]


def is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()


def upward_imports(package: Path = PACKAGE) -> list[str]:
    wrong = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).parts
        here = top("multitx." + ".".join(parts).removesuffix(".py")) if len(parts) > 1 or parts[0] != \
            "__init__.py" else "__init__"
        for line, module in imported(path):
            there = top(module)
            if RANK[there] > RANK[here]:
                wrong.append(f"multitx/{'/'.join(parts)}:{line} imports {module} ({there}, a layer above {here})")
    return wrong


def test_the_readme_draws_every_top_level_module_and_folder_in_one_layer():
    entries = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
               if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    drawn = [name for layer in LAYERS for name in layer]
    assert sorted(entries - set(drawn)) == [] and sorted(set(drawn) - entries) == []
    assert len(drawn) == len(set(drawn)), "a module is drawn in two layers"


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports() == []


def test_an_upward_import_is_found_even_inside_a_function(tmp_path):
    copy = tmp_path / "multitx"
    (copy / "nn").mkdir(parents=True)
    (copy / "nn" / "__init__.py").write_text("")
    (copy / "nn" / "leaky.py").write_text("def f():\n    from multitx.engine.trainer import train\n")
    assert upward_imports(copy) == ["multitx/nn/leaky.py:2 imports multitx.engine.trainer (engine, a layer above nn)"]


# Which task a run is, and what follows from it, is the task's own business (engine/task.py: `tools`, `inspect`,
# `exportable`): no module outside multitx/tasks/ compares a task name. The exceptions say why.
NAMES_TASKS_BECAUSE = {
    "engine/migrate.py": "reads release 0.1's run folders, whose layout depended on the task's name",
}


def task_name_comparisons(package: Path = PACKAGE) -> list[str]:
    """`x == "vit"`, `x in ("charlm", "mlm")`, `x.startswith("vit")`: a registered task's name compared,
    outside multitx/tasks/ (benchmarks choose their recipes by name, as a user does on the command line)."""
    import multitx.tasks  # noqa: F401 - the built-in tasks register
    from multitx.engine.task import TASKS

    names = set(TASKS)
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package).as_posix()
        if where.split("/")[0] in ("tasks", "benchmarks") or where in NAMES_TASKS_BECAUSE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                compared = [node.left, *node.comparators]
                compared += [e for op, c in zip(node.ops, node.comparators, strict=True)  # x in ("charlm", ...)
                             if isinstance(op, (ast.In, ast.NotIn)) and isinstance(c, (ast.Tuple, ast.List, ast.Set))
                             for e in c.elts]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("startswith", "endswith"):
                compared = node.args
            else:
                continue
            found += [f"multitx/{where}:{node.lineno} compares {c.value!r}" for c in compared
                      if isinstance(c, ast.Constant) and c.value in names]
    return found


def test_no_module_outside_tasks_decides_by_a_task_name():
    assert task_name_comparisons() == []


def test_a_task_name_compared_outside_tasks_is_found(tmp_path):
    (tmp_path / "export.py").write_text("def f(cfg):\n    return cfg.task.name.startswith('vit')\n")
    assert task_name_comparisons(tmp_path) == ["multitx/export.py:2 compares 'vit'"]
