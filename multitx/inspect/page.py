"""One self-contained HTML page: the input, the output, the shape trace, and the maps
with selectors. Images are inline (data: URIs); the script is inline; nothing is
fetched from the network.

A gallery is a title, some selectors (layer, head, word...) and one picture for each
combination of their values. The page's script shows the picture of the chosen
combination; `#pick=last` in the address chooses the last value of every selector
(through the same change events a click sends), and `#selftest` also writes what
each change showed into the page, for tests in a headless browser.
"""

import base64
import html
import json
from dataclasses import dataclass, field


@dataclass
class Gallery:
    title: str
    selectors: list[tuple[str, list[str]]]  # (name, values), e.g. ("layer", ["0", "1"])
    pictures: dict[str, bytes] = field(default_factory=dict)  # "0|mean" -> PNG bytes
    note: str = ""

    def key(self, *values) -> str:
        return "|".join(str(v) for v in values)


SCRIPT = """
const galleries = JSON.parse(document.getElementById("galleries").textContent);
function show(g) {
  const box = document.getElementById("gallery" + g);
  const key = [...box.querySelectorAll("select")].map(s => s.value).join("|");
  const img = box.querySelector("img");
  img.src = galleries[g][key];
  img.dataset.shown = key;
  img.alt = box.dataset.title + ": " + key;
}
document.querySelectorAll(".gallery").forEach((box, g) => {
  box.querySelectorAll("select").forEach(s => s.addEventListener("change", () => show(g)));
  show(g);
});
const hash = location.hash;
if (hash.includes("pick=last") || hash.includes("selftest")) {
  const log = [];
  document.querySelectorAll(".gallery").forEach((box, g) => {
    const img = box.querySelector("img");
    box.querySelectorAll("select").forEach(s => {
      const before = img.dataset.shown, src = img.src;
      s.value = s.options[s.options.length - 1].value;
      s.dispatchEvent(new Event("change"));
      log.push(`gallery ${g} ${s.name}: ${before} -> ${img.dataset.shown} ${img.src !== src ? "changed" : "same"}`);
    });
  });
  if (hash.includes("selftest")) {
    const out = document.createElement("pre");
    out.id = "selftest";
    out.textContent = log.join("\\n");
    document.body.appendChild(out);
  }
}
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #222; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.gallery { border: 1px solid #ddd; padding: 0.8em; margin: 1em 0; }
.gallery img { max-width: 100%; display: block; margin-top: 0.6em; }
label { margin-right: 1em; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def page(title: str, facts: list[tuple[str, str]], output: str, shapes: str, galleries: list[Gallery],
         pictures: list[tuple[str, bytes]]) -> str:
    """The whole page as one string."""
    esc = html.escape
    rows = "".join(f"<tr><th align=left>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
             f"<style>{STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>", f"<table>{rows}</table>",
             "<h2>Output</h2>", f"<pre id=output>{esc(output)}</pre>"]
    for caption, png in pictures:
        parts.append(f"<figure><img src='{data_uri(png)}' alt='{esc(caption)}'><figcaption>{esc(caption)}"
                     f"</figcaption></figure>")
    parts += ["<h2>Attention</h2>"]
    for g, gallery in enumerate(galleries):
        selects = "".join(
            f"<label>{esc(name)} <select name='{esc(name)}'>"
            + "".join(f"<option value='{esc(v)}'>{esc(v)}</option>" for v in values) + "</select></label>"
            for name, values in gallery.selectors)
        parts.append(f"<div class=gallery id=gallery{g} data-title='{esc(gallery.title)}'><h3>{esc(gallery.title)}"
                     f"</h3><p>{esc(gallery.note)}</p>{selects}<img alt=''></div>")
    data = [{key: data_uri(png) for key, png in gallery.pictures.items()} for gallery in galleries]
    data_json = json.dumps(data).replace("</", "<\\/")  # never closes the script element early
    parts += ["<h2>Shapes</h2>", f"<pre id=shapes>{esc(shapes)}</pre>",
              f"<script type='application/json' id=galleries>{data_json}</script>",
              f"<script>{SCRIPT}</script></body></html>"]
    return "\n".join(parts)
