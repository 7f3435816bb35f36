/* multitx explorer, talking to the server (explorer.js tells the story): the update flow, which asks for the
   answers and draws only the newest; the status line and the test hooks; the selection kept inside
   the answer; the whole page drawn again from `S` (the header, the output and its bars). */
"use strict";

// ---------------------------------------------------------------- talking to the server

// POST (or GET without a body) one API path; an answer with an error throws its one line.
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error("the explorer's server does not answer: is it still running?");
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) throw new Error(data && data.error ? data.error : `the server answered HTTP ${response.status}`);
  return data;
}

// The request body naming the current input, for checkpoint `name`.
function inputOf(name) {
  const body = {checkpoint: name};
  if (S.run.input === "text") body.prompt = S.prompt;
  else Object.assign(body, {image: S.image.url, name: S.image.name});
  if (S.run.view === "caption") body.words = S.words;
  return body;
}

const hasInput = () => (S.run.input === "text" ? S.prompt.length > 0 : S.image !== null);

// An image from a data URL, loaded (so that canvases can draw it at once).
function loadImage(url) {
  if (images.has(url)) return Promise.resolve(images.get(url));
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => { images.set(url, img); resolve(img); };
    img.onerror = () => reject(new Error("the browser cannot show the image the server sent back"));
    img.src = url;
  });
}

// Ask the server again for `parts` ("a": both checkpoints' attention and the neuron; "b": the compared
// checkpoint's; "neuron": the selected query's), then draw. Only the newest call's answers are drawn:
// a newer call also asks for whatever older ones still wanted.
async function update(...parts) {
  parts.forEach((p) => pending.add(p));
  if (S.saved) { pending.clear(); fixSelection(); drawAll(); return; }
  if (!hasInput()) {
    pending.clear();
    say(S.run.input === "text" ? "type a prompt to begin" : "drop an image to begin");
    return;
  }
  const want = new Set(pending);
  const mine = ++serial;
  busy(true);
  try {
    const fresh = want.has("a") || !S.a;
    const input = fresh ? inputOf(S.checkpoint) : asked;
    const a = fresh ? await api("api/attention", input) : S.a;
    let b = null;
    if (S.compare !== "none") {
      b = fresh || want.has("b") || !S.b ? await api("api/attention", {...input, checkpoint: S.compare}) : S.b;
    }
    if (a.image) await loadImage(a.image);
    if (mine !== serial) return;
    S.a = a;
    S.b = b;
    asked = input;
    if (fresh) goodImage = S.image;
    fixSelection();
    if (fresh || want.has("neuron") || !S.neuron) {
      try {
        const n = await api("api/neuron", {...input, layer: S.sel.layer, head: S.sel.head, query: S.sel.query});
        if (mine !== serial) return;
        S.neuron = n;
      } catch (err) {
        if (mine !== serial) return;
        S.neuron = null;
        throw err;
      }
    }
    pending.clear();
    drawAll();
    say(readyText());
  } catch (err) {
    if (mine !== serial) return;
    pending.clear();
    failed(err);
  } finally {
    busy(false);
  }
}

// One more token (text) or one more word (captioner).
async function generate() {
  if (S.run.view === "caption") {
    S.words += 1;
    update("a");
    return;
  }
  busy(true);
  try {
    const answer = await api("api/generate", {checkpoint: S.checkpoint, prompt: S.prompt});
    S.generated = answer;
    S.prompt = answer.prompt;
    $("#prompt").value = answer.prompt;
    if (S.sel) S.sel.chosen = false;
    update("a");
  } catch (err) {
    failed(err);
  } finally {
    busy(false);
  }
}

// A request starts (on) or ends: the body's data-state (a test hook) and the status line say so.
function busy(on) {
  inFlight += on ? 1 : -1;
  document.body.dataset.state = inFlight > 0 ? "busy" : "ready";
  if (on) say("computing…");
}

// A drawing is complete (a test hook).
function drawn() {
  draws += 1;
  document.body.dataset.draws = String(draws);
  document.body.dataset.state = inFlight > 0 ? "busy" : "ready";
}

// A plain message in the status line.
function say(text) {
  const status = $("#status");
  status.textContent = text;
  status.classList.remove("error");
}

// An error: its one line in the status; the views keep showing the last good answer.
function failed(err) {
  const status = $("#status");
  status.textContent = String(err && err.message ? err.message : err);
  status.classList.add("error");
  if (S.run && S.run.input === "image") S.image = goodImage;
}

// The status line once drawn: what the model view shows.
function readyText() {
  const layers = S.a.layers.length;
  const heads = Math.max(...S.a.layers.map((l) => l.heads));
  const kind = S.run.input === "text" ? `T=${S.a.layers[0].queries} tokens` : "image";
  return `${layers} attention layers × ${heads} heads · ${kind}`;
}

// Keep the selection inside the newest answer; the default query follows the input until one is chosen.
function fixSelection() {
  const layers = S.a.layers;
  if (!S.sel || !(S.sel.layer < layers.length)) S.sel = defaultSelection(S.a);
  const layer = layers[S.sel.layer];
  S.sel.head = clamp(S.sel.head, 0, layer.heads - 1);
  if (!S.sel.chosen || !(S.sel.query < layer.queries)) {
    S.sel.query = defaultQuery(layer);
    S.sel.chosen = false;
  }
}

// The head shown first: the captioner's first cross-attention (words looking at the picture), or with prefix
// fusion its decoder's first self-attention (the one map of the picture and the words), else layer 0.
function defaultSelection(answer) {
  const cross = answer.layers.find((l) => l.kind === "cross" || fused(answer, l));
  return {layer: cross && answer.view === "caption" ? cross.index : 0, head: 0, query: 0, chosen: false};
}

// The query shown first: CLS (or the first patch) for image queries, else the last token / written word.
function defaultQuery(layer) {
  return layer.query_labels === "patches" ? 0 : layer.queries - 1;
}

// Select a head (and maybe a query), draw what needs no server at once, then ask for the neuron view.
function select(layer, head, query) {
  const before = S.a.layers[S.sel.layer];
  const after = S.a.layers[layer];
  S.sel.layer = layer;
  S.sel.head = head;
  if (query !== undefined) {
    S.sel.query = query;
    S.sel.chosen = true;
  } else if (before.query_labels !== after.query_labels || !(S.sel.query < after.queries)) {
    S.sel.query = defaultQuery(after);
    S.sel.chosen = false;
  }
  drawModelViews();
  drawHeadView();
  drawCaptionView();
  update("neuron");
}

// ---------------------------------------------------------------- drawing: the whole page

// Every view again from S, then the test hook.
function drawAll() {
  drawHeader();
  drawOutput();
  drawModelViews();
  drawHeadView();
  drawCaptionView();
  drawNeuronView();
  $("#shapes").textContent = S.a.shapes;
  drawn();
}

// The header's selects and the input's controls, as the state says.
function drawHeader() {
  $("#checkpoint").value = S.checkpoint;
  $("#compare").value = S.compare;
  if (S.run.input === "image" && goodImage) $("#input-image").src = goodImage.url;
  if (S.run.view === "caption" && S.a.caption) {
    const done = S.a.caption.done;
    $("#generate").disabled = S.saved || done;
    $("#generate").textContent = done ? "Caption complete" : "Write the next word";
    $("#write-all").disabled = S.saved || done;
    $("#restart").disabled = S.saved || S.words <= 1;
  }
}

// The model's output, and its most likely next tokens (or classes) as bars.
function drawOutput() {
  const a = S.a;
  $("#output").textContent = a.output;
  const box = $("#predictions");
  box.replaceChildren();
  const items = a.next || (a.classes && a.classes.map((c) => ({label: c.name, p: c.p})));
  if (items) {
    box.append(h("h3", {text: a.next ? "Most likely next token" : "Most likely classes"}));
    for (const item of items) box.append(bar(item.label, item.p));
  }
  const gen = $("#generated");
  gen.replaceChildren();
  if (S.generated && S.run.view === "tokens") {
    gen.append("Generate added ", h("b", {class: "chip", text: S.generated.token}),
               ` (p ${pct(S.generated.p)}, drawn at temperature 0.8 from the top 40), from: `,
               ...S.generated.candidates.map((c) => h("span", {class: "chip", text: `${c.label} ${pct(c.p)}`})));
  }
}

// One labelled probability bar.
function bar(label, p) {
  return h("div", {class: "bar-row"},
    h("span", {class: "bar-label", text: label, title: label}),
    h("span", {class: "bar-track"}, h("span", {class: "bar-fill", style: `display:block;width:${(100 * p).toFixed(1)}%`})),
    h("span", {class: "bar-value", text: pct(p)}));
}
