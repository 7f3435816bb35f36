"""The live explorer's page in a real browser (Debian's chromium driven by Playwright), against the explorer
served on 127.0.0.1 for tiny trained runs: typing, uploading, the temperature, Generate, comparing two
checkpoints, saving an offline copy, bad input, and Devanagari glyphs. No test may leave an error in the
browser's console."""

import io
import re
from contextlib import ExitStack

import pytest
from PIL import Image, ImageChops, ImageStat
from playwright import sync_api

from multitx.explore.analysis import Explorer
from tests.conftest import chromium, torch_threads
from tests.helpers_explore import serving, tiny_runs

READY = "() => document.body.dataset.state === 'ready' && Number(document.body.dataset.draws) > {n}"
BAD_REQUEST = re.compile(r"Failed to load resource: the server responded with a status of 400")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with torch_threads(1):
        yield tiny_runs(tmp_path_factory.mktemp("explore_page"))


@pytest.fixture(scope="module")
def served(runs):
    """The explorer of each run, served on demand: served["charlm"] -> its base URL."""
    with ExitStack() as stack, torch_threads(1):
        urls: dict[str, str] = {}

        class Served:
            def __getitem__(self, name: str) -> str:
                if name not in urls:
                    urls[name] = stack.enter_context(serving(Explorer(runs[name])))
                return urls[name]

        yield Served()


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        yield launched
        launched.close()


class Tab:
    """One page at 1280 x 900, with every console error and uncaught exception it shows collected."""

    def __init__(self, page):
        self.page, self.errors, self.allowed = page, [], []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function(READY.format(n=0), timeout=60_000)

    def draws(self) -> int:
        return int(self.page.evaluate("document.body.dataset.draws"))

    def redraws(self, action) -> None:
        """Do `action`, then wait until the page has drawn again and nothing is in flight."""
        before = self.draws()
        action()
        self.page.wait_for_function(READY.format(n=before), timeout=60_000)

    def fails(self, action) -> str:
        """Do `action`, then wait for the status line's error; returns it."""
        action()
        self.page.wait_for_selector("#status.error", timeout=60_000)
        self.page.wait_for_function("document.body.dataset.state === 'ready'")
        return self.page.inner_text("#status")


@pytest.fixture
def tab(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = Tab(context.new_page())
    yield opened
    context.close()
    unexpected = [e for e in opened.errors if not any(p.search(e) for p in opened.allowed)]
    assert not unexpected, f"errors in the browser's console: {unexpected}"


def png(color: tuple[int, int, int], box: tuple[int, int, int, int]) -> bytes:
    image = Image.new("RGB", (48, 48), (20, 20, 20))
    image.paste(color, box)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def shot(locator) -> Image.Image:
    return Image.open(io.BytesIO(locator.screenshot())).convert("L")


def query_labels(page) -> list[str]:
    return page.eval_on_selector_all("#head-view .query-token", "nodes => nodes.map(n => n.textContent)")


def test_typing_a_prompt_changes_the_maps_and_generate_adds_a_character(tab, served):
    page = tab.page
    tab.open(served["charlm"])
    before_labels, before_maps = query_labels(page), page.locator("#model-view").screenshot()
    assert page.locator("#model-view canvas.head-map").count() == 4, "2 layers x 2 heads"
    tab.redraws(lambda: page.fill("#prompt", "be, that is"))
    assert query_labels(page) == ["b", "e", ",", "␣", "t", "h", "a", "t", "␣", "i", "s"]
    assert before_labels != query_labels(page)
    assert page.locator("#model-view").screenshot() != before_maps, "the maps are drawn again"
    assert "be, that is" in page.inner_text("#output")
    assert page.locator("#predictions .bar-row").count() == 5, "the most likely next tokens, as bars"

    tab.redraws(lambda: page.click("#generate"))
    grown = page.input_value("#prompt")
    assert grown.startswith("be, that is") and len(grown) == len("be, that is") + 1
    assert len(query_labels(page)) == 12, "the views follow the longer prompt"
    assert "Generate added" in page.inner_text("#generated")


def test_the_temperature_slider_recomputes_the_softmax_row(tab, served):
    page = tab.page
    tab.open(served["charlm"])
    head = "#model-view canvas.head-map[data-layer='1'][data-head='1']"
    tab.redraws(lambda: page.click(head))
    assert "layer 1, head 1" in page.inner_text("#head-view h2")
    assert page.get_attribute(head, "class") == "head-map selected", "the clicked head is highlighted"

    def weights() -> list[float]:
        return [float(w) for w in page.eval_on_selector_all(
            "#softmax-row .weight", "cells => cells.map(c => c.dataset.weight)")]

    prompt = page.input_value("#prompt")
    assert page.evaluate("S.neuron.query") == len(prompt) - 1, "the last token by default"
    tab.redraws(lambda: page.click("#head-view .query-token[data-index='3']"))  # a query that may not see it all
    assert "«b»" in page.inner_text("#neuron-view .explain")
    answer = page.request.post(served["charlm"] + "/api/neuron", data={
        "prompt": prompt, "layer": 1, "head": 1, "query": 3}).json()
    at_one = weights()
    assert at_one == pytest.approx(answer["weights"], abs=1e-5), "at temperature 1: the model's own weights"
    page.eval_on_selector("#temperature", "t => { t.value = '0.2'; t.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#temperature-value") == "0.20"
    sharp = weights()
    assert sharp != pytest.approx(at_one, abs=1e-3) and sum(sharp) == pytest.approx(1, abs=1e-6)
    assert max(sharp) > max(at_one), "a lower temperature sharpens the weights"
    masked = [i for i, ok in enumerate(answer["allowed"]) if not ok]
    assert masked and all(sharp[i] == 0 for i in masked), "the causal mask holds at any temperature"


def test_comparing_checkpoints_draws_a_second_grid_and_save_works_offline(tab, served, tmp_path, browser):
    page = tab.page
    tab.open(served["charlm"])
    assert page.is_hidden("#model-view-b")
    tab.redraws(lambda: page.select_option("#compare", "step_0000003"))
    maps = page.locator("#model-view canvas.head-map").count()
    assert maps == 4 and page.locator("#model-view-b canvas.head-map").count() == maps
    assert page.locator("#model-view-b .delta").count() == maps, "each head labelled with its change"
    assert "step 3" in page.inner_text("#model-view-b .grid-title")
    assert "step 6" in page.inner_text("#model-view .grid-title")
    shown = {sel: page.inner_text(sel) for sel in ("#output", "#shapes", "#model-view-b .grid-title")}
    rows = page.eval_on_selector_all("#softmax-row .weight", "cells => cells.map(c => c.dataset.weight)")

    with page.expect_download() as download:
        page.click("#save")
    assert download.value.suggested_filename == "explore-charlm.html"
    saved = tmp_path / "explore-charlm.html"
    download.value.save_as(saved)
    html = saved.read_text(encoding="utf-8")
    assert 'id="saved-state"' in html and "<style>" in html, "the state, the CSS and the JS inline"
    assert 'href="static/explorer.css"' not in html and 'src="static/explorer.js"' not in html

    offline = Tab(browser.new_page(viewport={"width": 1280, "height": 900}))
    offline.open(saved.as_uri())
    copy = offline.page
    assert copy.is_visible("#saved-note") and "saved copy" in copy.inner_text("#saved-note")
    assert copy.is_disabled("#prompt") and copy.is_disabled("#generate") and copy.is_disabled("#compare")
    assert copy.locator("#model-view canvas.head-map").count() == maps
    assert copy.locator("#model-view-b canvas.head-map").count() == maps
    assert {sel: copy.inner_text(sel) for sel in shown} == shown
    assert copy.eval_on_selector_all("#softmax-row .weight", "cells => cells.map(c => c.dataset.weight)") == rows
    copy.locator("#model-view canvas.head-map[data-layer='1'][data-head='0']").click()
    assert "layer 1, head 0" in copy.inner_text("#head-view h2"), "the saved views still answer clicks"
    copy.close()
    assert not offline.errors, f"errors in the saved copy's console: {offline.errors}"


def test_a_bad_prompt_says_why_and_the_page_keeps_working(tab, served):
    page = tab.page
    tab.allowed.append(BAD_REQUEST)  # the browser logs the refused request itself
    tab.open(served["charlm"])
    drawn = tab.draws()
    message = tab.fails(lambda: page.fill("#prompt", "To bé ☃"))
    assert "never saw" in message and "é" in message
    assert tab.draws() == drawn, "the views keep the last good answer"
    tab.redraws(lambda: page.fill("#prompt", "To be"))
    assert page.get_attribute("#status", "class") in (None, "")
    assert query_labels(page) == ["T", "o", "␣", "b", "e"]


def test_an_uploaded_image_is_drawn_under_its_maps_and_a_bad_file_is_refused(tab, served, tmp_path):
    page = tab.page
    tab.allowed.append(BAD_REQUEST)
    tab.open(served["vit"])
    example = page.get_attribute("#head-view img.picture", "src")
    picture = tmp_path / "square.png"
    picture.write_bytes(png((230, 40, 40), (8, 8, 30, 30)))
    tab.redraws(lambda: page.set_input_files("#image-file", str(picture)))
    answer = page.evaluate("S.a")
    assert page.get_attribute("#head-view img.picture", "src") == answer["image"] != example
    assert answer["source"].endswith("square.png")
    overlay = page.locator("#head-view canvas.overlay")
    drawn_on = overlay.evaluate("""c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
    assert drawn_on > 0 and overlay.get_attribute("data-query") == "0", "CLS's weights drawn over the picture"
    assert overlay.bounding_box() == page.locator("#head-view img.picture").bounding_box()
    box = overlay.bounding_box()
    overlay.hover(position={"x": box["width"] * 0.9, "y": box["height"] * 0.9})  # the last patch of the 4 x 4 grid
    assert overlay.get_attribute("data-query") == "16" and "patch (3,3)" in page.inner_text("#head-view figcaption")
    assert page.locator("#model-view canvas.head-map").count() == 4
    assert page.locator("#head-view canvas.small-map").count() == 2, "the CLS map and the rollout"
    assert "%" in page.inner_text("#output")

    drawn = tab.draws()
    message = tab.fails(lambda: page.set_input_files("#image-file", files=[
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image at all"}]))
    assert "notes.txt" in message and "not an image" in message
    assert tab.draws() == drawn
    other = tmp_path / "other.png"
    other.write_bytes(png((40, 200, 60), (20, 4, 44, 24)))
    tab.redraws(lambda: page.set_input_files("#image-file", str(other)))
    assert "error" not in (page.get_attribute("#status", "class") or "")
    assert page.evaluate("S.a.source").endswith("other.png")


def test_the_captioner_writes_word_by_word(tab, served):
    page = tab.page
    tab.open(served["caption"])
    assert page.locator(".caption-words .word").count() == 1, "the caption starts at its first word"
    assert page.locator("#caption-view table canvas").count() == 3, "the word's mean over the 2 heads, and each"
    assert page.evaluate("S.a.layers[S.sel.layer].kind") == "cross"
    tab.redraws(lambda: page.click("#generate"))
    assert page.locator(".caption-words .word").count() == 2
    assert page.locator("#caption-view table canvas").count() == 6
    assert page.evaluate("S.neuron.query") == 1, "the neuron view follows the newest word"
    tab.redraws(lambda: page.click("#write-all"))
    assert page.is_disabled("#generate"), "the caption is complete"
    tab.redraws(lambda: page.click("#restart"))
    assert page.locator(".caption-words .word").count() == 1 and page.is_enabled("#generate")


def test_devanagari_labels_render_as_glyphs(tab, served):
    page = tab.page
    tab.open(served["devanagari"])
    tab.redraws(lambda: page.fill("#prompt", "नमस्ते दुनिया"))
    assert query_labels(page)[:2] == ["न", "म"]
    label = page.locator("#head-view .query-token[data-index='1']")
    glyph = shot(label)
    label.evaluate("node => { node.textContent = '\\u0378'; }")  # a code point no font has
    missing = shot(label)
    assert ImageStat.Stat(glyph).stddev[0] > 10, "the glyph is drawn, not blank"
    if missing.size != glyph.size:
        missing = missing.resize(glyph.size)
    difference = ImageStat.Stat(ImageChops.difference(glyph, missing)).mean[0]
    assert difference > 3, f"a Devanagari letter looks like a missing glyph (mean difference {difference:.1f})"
