/* multitx explorer, saving: the page, its styles, its scripts and its state as one HTML file that draws
   with no server. */
"use strict";

// ---------------------------------------------------------------- saving

// The page's own script tags, in the order it loads them: each becomes its script, inline.
const SCRIPT_TAG = /<script src="(static\/[\w.]+\.js)"><\/script>/g;

// Download this page as one file: the CSS and every script inline, in order, after the state as JSON;
// it draws with no server.
async function save() {
  busy(true);
  try {
    const read = async (url) => {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`cannot read ${url} from the server to save the page`);
      return response.text();
    };
    const page = await read("./");
    const [style, ...scripts] = await Promise.all(
      ["static/explorer.css", ...Array.from(page.matchAll(SCRIPT_TAG), (tag) => tag[1])].map(read));
    const state = {
      run: S.run, checkpoint: S.checkpoint, compare: S.compare, prompt: S.prompt, image: goodImage, words: S.words,
      a: S.a, b: S.b, neuron: S.neuron, sel: S.sel, temperature: S.temperature, generated: S.generated,
    };
    const json = JSON.stringify(state).replace(/</g, "\\u003c");
    const inline = scripts.map((script) => `<script>\n${script.replace(/<\/script/gi, "<\\/script")}\n<\/script>`);
    inline[0] = `<script type="application/json" id="saved-state">${json}<\/script>\n${inline[0]}`;
    let next = 0;
    const html = page
      .replace(/<link rel="stylesheet" href="static\/explorer.css">/, () => `<style>\n${style}\n</style>`)
      .replace(SCRIPT_TAG, () => inline[next++]);
    const link = h("a", {href: URL.createObjectURL(new Blob([html], {type: "text/html"})), download: `explore-${S.run.run}.html`});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    say(`saved explore-${S.run.run}.html: open it from disk, no server needed`);
  } catch (err) {
    failed(err);
  } finally {
    busy(false);
  }
}
