"""Token labels in the attention maps show real glyphs in Devanagari, CJK and Arabic, not boxes
(multitx/inspect/fonts.py). The Noto fonts come from Debian's fonts-noto-core and fonts-noto-cjk,
which .ci/run installs: without them these tests fail, telling so, rather than skip."""

import io
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from multitx.inspect import fonts, maps

LABELS = ["क", "ष", "你", "好", "م", "a"]  # Devanagari, CJK, Arabic, and Latin
NEEDED = {"Noto Sans Devanagari": "fonts-noto-core", "Noto Sans Arabic": "fonts-noto-core",
          "Noto Sans CJK JP": "fonts-noto-cjk"}


def label_fonts() -> list[str]:
    found = fonts.label_fonts()
    missing = {family: package for family, package in NEEDED.items() if family not in found}
    if missing:
        named = ", ".join(f"{family} (from {package})" for family, package in missing.items())
        pytest.fail(f"matplotlib finds no {named}: apt-get install fonts-noto-core fonts-noto-cjk "
                    f"(.ci/run installs them); found only {found}")
    return found


def test_the_label_fonts_start_with_matplotlibs_own_and_cover_the_scripts():
    found = label_fonts()
    assert found[0] == "DejaVu Sans", "Latin, Greek and Cyrillic labels look as they always did"
    assert len(found) == len(set(found))


def test_a_family_matplotlib_cannot_find_is_left_out(monkeypatch, caplog):
    """So no "findfont: Font family ... not found" warning where a font is not installed."""
    monkeypatch.setattr(fonts, "FAMILIES", ["DejaVu Sans", "No Such Family Sans", "Noto Sans Devanagari"])
    fonts.label_fonts.cache_clear()
    try:
        found = fonts.label_fonts()
        with caplog.at_level("WARNING", logger="matplotlib.font_manager"):
            maps.heatmap(np.eye(2), ["a", "b"], ["a", "b"], "t").savefig(io.BytesIO(), format="png")
    finally:
        fonts.label_fonts.cache_clear()
    assert "No Such Family Sans" not in found and found[0] == "DejaVu Sans"
    assert not [r.getMessage() for r in caplog.records if "findfont" in r.getMessage()]


def test_a_heatmap_of_devanagari_cjk_and_arabic_labels_misses_no_glyph():
    label_fonts()
    weights = np.full((len(LABELS), len(LABELS)), 1 / len(LABELS))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = maps.heatmap(weights, LABELS, LABELS, "attention over " + "".join(LABELS))
        figure.savefig(io.BytesIO(), format="png")  # drawn again, outside heatmap's rc_context
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing  # e.g. "Glyph 2325 (\N{DEVANAGARI LETTER KA}) missing from font(s) DejaVu Sans."


def render(text: str, families: list[str]) -> np.ndarray:
    """text drawn black on white with the given font.family list: (H, W) grey levels, 0 = ink."""
    figure = Figure(figsize=(1, 1), dpi=100)
    figure.text(0.5, 0.5, text, family=families, fontsize=48, ha="center", va="center")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].mean(-1)


def differing(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixels that differ, within the box around the ink of either."""
    rows, cols = np.nonzero((a < 128) | (b < 128))
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return float((np.abs(a[crop] - b[crop]) > 64).mean())


def test_a_devanagari_letter_is_drawn_as_itself_not_as_the_missing_glyph_box():
    """What a missing glyph looks like depends on matplotlib: DejaVu's empty box, or (3.10 on)
    a Last Resort box naming the Unicode block. The letter drawn with the label fonts is neither
    the box for the same letter without them nor the box for a code point no font has."""
    families = label_fonts()
    letter = render("क", families)
    with pytest.warns(UserWarning, match="missing from font"):
        without = render("क", ["DejaVu Sans"])
        unassigned = render("\u0378", families)  # no character at all
    assert (letter < 128).sum() > 50, "the letter is drawn at all"
    assert differing(letter, without) > 0.2, "the letter differs from its box without the label fonts"
    assert differing(letter, unassigned) > 0.2, "the letter differs from the box for no character"
