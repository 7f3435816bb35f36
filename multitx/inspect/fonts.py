"""The fonts token labels are drawn with, so a corpus in any script shows its glyphs, not boxes.

matplotlib (>= 3.6) falls back glyph by glyph along a list of families: DejaVu Sans,
its own, for Latin, Greek and Cyrillic, then Noto fonts for other scripts. Debian's
fonts-noto-core (Noto Sans Devanagari, Arabic, Hebrew, Thai, ...) and fonts-noto-cjk
(Noto Sans CJK, .ttc) provide them; without them, labels in those scripts are boxes.
Only the families matplotlib finds are named, so a missing one costs no warning.
"""

import functools
import os

from matplotlib import font_manager

FAMILIES = [
    "DejaVu Sans",
    "Noto Sans",
    "Noto Sans Devanagari", "Noto Sans Bengali", "Noto Sans Gurmukhi", "Noto Sans Gujarati",
    "Noto Sans Tamil", "Noto Sans Telugu", "Noto Sans Kannada", "Noto Sans Malayalam", "Noto Sans Sinhala",
    "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Armenian", "Noto Sans Georgian", "Noto Sans Ethiopic",
    "Noto Sans Thai", "Noto Sans Lao", "Noto Sans Khmer", "Noto Sans Myanmar",
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",  # last: they cover Latin too
]


@functools.cache
def label_fonts() -> list[str]:
    """The families of FAMILIES that matplotlib finds, in order: a font.family list."""
    if any(family not in known() for family in FAMILIES):
        add_uncached()
    found = known()
    return [family for family in FAMILIES if family in found]


def known() -> set[str]:
    return {font.name for font in font_manager.fontManager.ttflist}


def add_uncached() -> None:
    """matplotlib caches its font list once (~/.cache/matplotlib) and never looks again, so
    fonts installed after that are unknown to it: add the files on the system whose name
    (NotoSansDevanagari-Regular.ttf, NotoSansCJK-Regular.ttc) starts a family we want."""
    wanted = [family.replace(" ", "") for family in FAMILIES]
    cached = {os.path.realpath(font.fname) for font in font_manager.fontManager.ttflist}
    for path in sorted(font_manager.findSystemFonts()):
        stem = os.path.basename(path).split("-")[0].split(".")[0]
        if os.path.realpath(path) not in cached and any(name.startswith(stem) for name in wanted):
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):  # an unreadable font file is skipped
                pass
