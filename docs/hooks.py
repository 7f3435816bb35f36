"""MkDocs hook (mkdocs.yml: hooks): a line `<!-- docstring: multitx/benchmarks/NAME.py -->` in a page becomes
that module's docstring, as written, in a text block. The benchmarks keep their tuning history in their
docstrings (next to the code that measured it); the site shows it from there, so the two cannot drift apart.
The module is read with ast, not imported: the build needs neither torch nor anything else of multitx's."""

import ast
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- docstring: (?P<path>[\w/.]+\.py) -->$", re.MULTILINE)


def docstring_block(match: re.Match, root: Path) -> str:
    path = root / match["path"]
    if not path.is_file():
        raise PluginError(f"docs: {match['path']} named in a docstring marker does not exist")
    text = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=True)
    if not text:
        raise PluginError(f"docs: {match['path']} has no module docstring")
    fence = "````" if "```" in text else "```"
    return f"{fence}text\n{text}\n{fence}"


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = Path(config["config_file_path"]).parent
    return MARKER.sub(lambda m: docstring_block(m, root), markdown)
