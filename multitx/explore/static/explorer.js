/* multitx explorer: the page. Plain JS, no framework, nothing fetched from the network but its own server.

   The story it tells: attention is message passing. Each token's query meets every key it may read
   (dot products = scores), softmax turns a row of scores into weights, and the weights mix the values.
   Letters: B batch (1 here), H heads, T tokens that ask (queries), S tokens that answer (keys, values),
   Dh channels per head.

   Flow: GET api/run once; then every change of the input, checkpoint or selection asks the server
   (api/attention, api/neuron, api/generate) and draws everything again from the answers in `S`.
   Only the newest request's answers are drawn. A saved copy (Save) carries `S` inside itself as JSON
   and draws from it with no server.

   Test hooks: <body data-state="busy"|"ready">, and data-draws counting completed drawings. */
"use strict";

// ---------------------------------------------------------------- state

const S = {
  run: null,          // GET api/run: the run, its checkpoints, the first input
  checkpoint: null,   // the checkpoint drawn in the model view
  compare: "none",    // the other checkpoint drawn beside it, or "none"
  prompt: "",         // text models: the prompt
  image: null,        // image models: {url: data URL, name}
  words: 1,           // captioner: how many written words to show
  a: null,            // POST api/attention for `checkpoint`
  b: null,            // POST api/attention for `compare`
  neuron: null,       // POST api/neuron for the selection
  sel: null,          // the selected head and query: {layer, head, query, chosen (by the learner)}
  temperature: 1,     // the neuron view's softmax temperature (drawn in the page only)
  generated: null,    // the last POST api/generate answer (text)
  saved: false,       // a saved copy: no server behind it
};

let serial = 0;        // number of the newest request; older answers are dropped
let inFlight = 0;      // requests not yet answered
let draws = 0;         // completed drawings (a test hook)
let goodImage = null;  // the last image the server accepted
let asked = null;      // the input (request body) that S.a answered: the neuron and compare requests reuse it
const pending = new Set();          // what the next answer must bring: "a", "b", "neuron"
const images = new Map();           // data URL -> loaded HTMLImageElement
const unpacked = new WeakMap();     // layer -> its weights as Uint8Array (H*T*S)
const TINY = 0.02;                  // lines for weights below this are not drawn

// ---------------------------------------------------------------- small helpers

const $ = (selector, root = document) => root.querySelector(selector);

// An element: h("div", {class: "x", text: "hi", onclick: f, "data-index": 3}, child, ...).
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  setProps(node, props);
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// An SVG element with attributes.
function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// Attributes, text, style and listeners of an element from one object.
function setProps(node, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
}

const fmt = (x) => (Number.isFinite(x) ? x.toFixed(3) : x > 0 ? "inf" : "-inf");
const pct = (p) => `${(100 * p).toFixed(1)}%`;
const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
const short = (label) => String(label).replace(/^patch /, "");
const maxAbs = (xs) => xs.reduce((m, x) => Math.max(m, Math.abs(x)), 1e-12);

// A canvas of css size w x h, sharp on high-density screens; returns [canvas, context].
function makeCanvas(w, h, cls) {
  const ratio = window.devicePixelRatio || 1;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  if (cls) canvas.className = cls;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  return [canvas, ctx];
}

// ---------------------------------------------------------------- colours

// Weight 0 -> white, 1 -> deep blue; on a square-root scale so that small weights still show.
// (stops of the ramp)
const RAMP = [[255, 255, 255], [222, 235, 247], [158, 202, 225], [66, 146, 198], [8, 81, 156], [8, 38, 94]];
function weightRGB(w) {
  const x = Math.sqrt(clamp(w, 0, 1)) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const t = x - i;
  return RAMP[i].map((c, k) => Math.round(c + (RAMP[i + 1][k] - c) * t));
}

// x in [-1, 1]: blue for negative, white for 0, red for positive.
function divergingRGB(x) {
  const t = clamp(x, -1, 1);
  const end = t < 0 ? [33, 102, 172] : [178, 24, 43];
  const mid = t < 0 ? [146, 197, 222] : [244, 165, 130];
  const a = Math.abs(t);
  const [from, to, f] = a < 0.5 ? [[255, 255, 255], mid, a / 0.5] : [mid, end, (a - 0.5) / 0.5];
  return from.map((c, k) => Math.round(c + (to[k] - c) * f));
}

const css = (rgb) => `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
const inkOn = (rgb) => (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140 ? "#fff" : "#1f2430");

// ---------------------------------------------------------------- reading the answers

// A layer's weights as uint8 (round(255 w)), row-major H x T x S, decoded once.
function weightsOf(layer) {
  let w = unpacked.get(layer);
  if (!w) {
    const bytes = atob(layer.weights);
    w = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) w[i] = bytes.charCodeAt(i);
    unpacked.set(layer, w);
  }
  return w;
}

// One query's weights over the S keys, as numbers in [0, 1].
function rowOf(layer, head, query) {
  const w = weightsOf(layer);
  const start = (head * layer.queries + query) * layer.keys;
  return Array.from(w.subarray(start, start + layer.keys), (x) => x / 255);
}

// The mean of several rows (e.g. over heads or over queries).
function meanRows(rows) {
  const out = new Array(rows[0].length).fill(0);
  for (const row of rows) row.forEach((x, i) => { out[i] += x / rows.length; });
  return out;
}

const queryLabels = (answer, layer) => answer.labels[layer.query_labels].slice(0, layer.queries);
const keyLabels = (answer, layer) => answer.labels[layer.key_labels].slice(0, layer.keys);
const overPicture = (answer, layer) => layer.key_labels === "patches" && Boolean(answer.image);
// A layer as the learner reads it: "layer 2" in a one-trunk model; "decoder 0 cross" in an encoder-decoder,
// whose layers are numbered within each trunk.
function layerName(layer) {
  const trunks = new Set(((S.a || {}).layers || []).map((l) => l.trunk));
  return trunks.size > 1 ? `${layer.trunk} ${layer.layer}${layer.kind === "cross" ? " cross" : ""}` : `layer ${layer.layer}`;
}
const layerTitle = (layer) => `${layer.name} (${layer.kind === "cross" ? "cross-attention" : "self-attention"})`;

// Which query an image head's small map shows: CLS where there is one, else the mean over queries.
function summaryRow(answer, layer, head) {
  if (layer.query_labels === "patches" && answer.prefix > 0) return rowOf(layer, head, 0);
  const rows = [];
  for (let t = 0; t < layer.queries; t++) rows.push(rowOf(layer, head, t));
  return meanRows(rows);
}

// How much a head changed between two answers: the mean over queries of the total variation
// distance between the two rows, 0 (same) .. 1 (disjoint).
function headChange(layerA, layerB, head) {
  if (!layerB || layerA.queries !== layerB.queries || layerA.keys !== layerB.keys) return null;
  let total = 0;
  for (let t = 0; t < layerA.queries; t++) {
    const ra = rowOf(layerA, head, t);
    const rb = rowOf(layerB, head, t);
    total += 0.5 * ra.reduce((sum, x, s) => sum + Math.abs(x - rb[s]), 0);
  }
  return total / layerA.queries;
}

// A checkpoint as the learner reads it: "step 400 (best)".
function checkpointText(name) {
  const c = S.run.checkpoints.find((x) => x.name === name);
  if (!c) return name;
  const tags = [c.best && "best", c.latest && "latest"].filter(Boolean);
  return (c.step !== null ? `step ${c.step}` : c.name) + (tags.length ? ` (${tags.join(", ")})` : "");
}

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

// The head shown first: the captioner's first cross-attention (words looking at the picture), else layer 0.
function defaultSelection(answer) {
  const cross = answer.layers.find((l) => l.kind === "cross");
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

// ---------------------------------------------------------------- drawing: the model view

// Both grids: the checkpoint's, and the compared checkpoint's beside it with each head's change.
function drawModelViews() {
  const comparing = Boolean(S.b);
  const size = mapSize(S.a, comparing);
  drawGrid($("#model-view"), S.a, null, size);
  $("#model-view-b").hidden = !comparing;
  if (comparing) drawGrid($("#model-view-b"), S.b, S.a, size);
  else $("#model-view-b").replaceChildren();
  const a = S.a;
  const image = a.layers.some((l) => overPicture(a, l));
  $("#model-explain").textContent = (image
    ? "Layers reading the picture: the picture lit where the CLS token looks (or, without CLS, where the queries look on average). "
    : "") + (a.layers.some((l) => !overPicture(a, l))
    ? "Each small map is one head's T × S weights: row t is what query token t reads, column s is key token s; darker = more weight. "
    : "") + "Click a map to open its head below." + (comparing
    ? " Δ: how much the head changed between the checkpoints (mean over queries of the total variation distance, 0 same … 1 disjoint)."
    : "");
  drawLegend();
}

// The size of the small maps: as large as the panel lets one grid (or two, when comparing) be, at most 104 px.
function mapSize(answer, comparing) {
  const heads = Math.max(...answer.layers.map((l) => l.heads));
  const width = ($("#models").clientWidth || 860) - 34;
  const perGrid = comparing ? (width - 24) / 2 : width;
  return Math.round(clamp((perGrid - 104) / heads - 9, 36, 104));
}

// One grid of small maps (rows: layers, columns: heads); `other`: label each head with its change from it.
function drawGrid(section, answer, other, size) {
  section.replaceChildren();
  const heads = Math.max(...answer.layers.map((l) => l.heads));
  const isA = !other;
  section.append(h("h3", {class: "grid-title"}, isA && S.b ? "A: " : !isA ? "B: " : "",
                   checkpointText(answer.checkpoint)));
  const grid = h("div", {class: "grid", style: `grid-template-columns: auto repeat(${heads}, ${size + 2}px)`});
  grid.append(h("div"));
  for (let hd = 0; hd < heads; hd++) grid.append(h("div", {class: "col-head", text: `head ${hd}`}));
  for (const layer of answer.layers) {
    grid.append(h("div", {class: "layer-label", title: layerTitle(layer)},
      h("b", {text: layerName(layer)}),
      h("span", {class: "sub", text: `${layer.trunk} · ${layer.kind}`}),
      h("span", {class: "sub", text: `T=${layer.queries} S=${layer.keys}`})));
    for (let hd = 0; hd < heads; hd++) {
      if (hd >= layer.heads) { grid.append(h("div")); continue; }
      grid.append(headCell(answer, layer, hd, size, other));
    }
  }
  section.append(grid);
}

// One head's small map (and its change from the other checkpoint), clickable.
function headCell(answer, layer, head, size, other) {
  const [canvas, ctx] = makeCanvas(size, size, "head-map");
  canvas.dataset.layer = layer.index;
  canvas.dataset.head = head;
  canvas.title = `${layerName(layer)}, head ${head}: ${layerTitle(layer)}, T=${layer.queries}, S=${layer.keys}`;
  if (layer.index === S.sel.layer && head === S.sel.head) canvas.classList.add("selected");
  if (overPicture(answer, layer)) drawPatchMap(ctx, size, size, answer, summaryRow(answer, layer, head), null, true);
  else drawMatrix(ctx, size, size, layer, head);
  canvas.addEventListener("click", () => select(layer.index, head));
  const cell = h("figure", {class: "head-cell"}, canvas);
  if (other) {
    const change = headChange(layer, other.layers[layer.index], head);
    if (change !== null) {
      const rgb = divergingRGB(clamp(change * 2, 0, 1));
      cell.append(h("span", {class: "delta", text: `Δ ${change.toFixed(3)}`, style: `background:${css(rgb)};color:${inkOn(rgb)}`,
                             title: "mean over queries of the total variation distance between the two checkpoints' rows"}));
    }
  }
  return cell;
}

// A head's whole T x S matrix of weights into a w x h box (row t: query t; column s: key s).
function drawMatrix(ctx, w, h, layer, head) {
  const {queries: T, keys: Sk} = layer;
  const off = document.createElement("canvas");
  off.width = Sk;
  off.height = T;
  const octx = off.getContext("2d");
  const data = octx.createImageData(Sk, T);
  const weights = weightsOf(layer);
  const base = head * T * Sk;
  for (let i = 0; i < T * Sk; i++) {
    const rgb = weightRGB(weights[base + i] / 255);
    data.data.set([rgb[0], rgb[1], rgb[2], 255], i * 4);
  }
  octx.putImageData(data, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, w, h);
}

// The picture with one row of weights over its patches: veiled where the query hardly looks (relative to the
// row's largest patch weight), amber where it looks well above the average. Returns [largest, average]. `query`: a patch to outline, or null.
function drawPatchMap(ctx, w, h, answer, row, query, withPicture) {
  const [rows, cols] = answer.grid;
  const prefix = answer.prefix;
  const patches = row.length === rows * cols ? row : row.slice(prefix, prefix + rows * cols);
  const top = Math.max(...patches, 1e-9);
  const mean = patches.reduce((sum, x) => sum + x, 0) / patches.length;
  const peaked = top > 1.5 * mean;  // amber on the patches well above the average; none for a flat row
  ctx.clearRect(0, 0, w, h);
  if (withPicture) {
    const img = images.get(answer.image);
    if (img) {
      ctx.imageSmoothingEnabled = img.naturalWidth >= w;
      ctx.drawImage(img, 0, 0, w, h);
    }
  }
  const cw = w / cols;
  const ch = h / rows;
  patches.forEach((x, i) => {
    const r = Math.floor(i / cols);
    const c = i % cols;
    ctx.fillStyle = `rgba(10, 14, 30, ${(0.8 * (1 - x / top)).toFixed(3)})`;
    ctx.fillRect(c * cw, r * ch, cw, ch);
    if (peaked && x > mean) {
      ctx.fillStyle = `rgba(255, 190, 20, ${(0.4 * (x - mean) / (top - mean)).toFixed(3)})`;
      ctx.fillRect(c * cw, r * ch, cw, ch);
    }
  });
  if (cols * rows <= 256 && w >= 120) {
    ctx.strokeStyle = "rgba(255, 255, 255, 0.22)";
    ctx.lineWidth = 1;
    for (let c = 1; c < cols; c++) line(ctx, c * cw, 0, c * cw, h);
    for (let r = 1; r < rows; r++) line(ctx, 0, r * ch, w, r * ch);
  }
  if (query !== null && query >= prefix) {
    const p = query - prefix;
    ctx.strokeStyle = "#ff7a1a";
    ctx.lineWidth = Math.max(2, w / 120);
    ctx.strokeRect((p % cols) * cw + 1, Math.floor(p / cols) * ch + 1, cw - 2, ch - 2);
  }
  return [top, mean];
}

// One straight line on a canvas.
function line(ctx, x0, y0, x1, y1) {
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x1, y1);
  ctx.stroke();
}

// The colour scale of the maps.
function drawLegend() {
  const legend = $("#model-legend");
  legend.replaceChildren();
  if (!S.a.layers.some((l) => !overPicture(S.a, l))) return;
  const [canvas, ctx] = makeCanvas(160, 12);
  for (let x = 0; x < 160; x++) {
    ctx.fillStyle = css(weightRGB((x / 159) ** 2));
    ctx.fillRect(x, 0, 1, 12);
  }
  legend.append("weight 0", canvas, "1", h("span", {text: "(square-root scale, so that small weights show; 0.25 sits in the middle)"}));
}

// ---------------------------------------------------------------- drawing: the head view

// The selected head: token lines (text) or the picture (images), with the query being looked at.
function drawHeadView() {
  const section = $("#head-view");
  const a = S.a;
  const layer = a.layers[S.sel.layer];
  const head = S.sel.head;
  section.replaceChildren(
    h("div", {class: "head-title"},
      h("h2", {}, h("span", {class: "num", text: "3"}), `One head: ${layerName(layer)}, head ${head}`),
      h("span", {class: "sub", text: `${layerTitle(layer)} · H=${layer.heads} T=${layer.queries} S=${layer.keys} Dh=${layer.dh}`})));
  if (overPicture(a, layer)) drawImageHead(section, a, layer, head);
  else drawTextHead(section, a, layer, head);
}

// BertViz-style: query tokens on the left, key tokens on the right, a line per weight (opacity ~ weight).
// Hover a query: only its lines, with their weights; click it: the neuron view shows it. A heatmap beside.
function drawTextHead(section, answer, layer, head) {
  const qs = queryLabels(answer, layer);
  const ks = keyLabels(answer, layer);
  const n = Math.max(qs.length, ks.length);
  const rowH = n <= 20 ? 24 : n <= 40 ? 19 : 15;
  const width = 200;
  section.append(h("p", {class: "explain", text:
    "Each line joins a query token (left, asking) to a key token (right, answering); the darker, the more of that "
    + "key's value flows into the query. Hover a query token to see its row alone with the weights; click it to "
    + "follow it step by step in the neuron view."}));

  const links = svg("svg", {class: "links", width, height: n * rowH});
  const keys = ks.map((label, j) => h("div", {class: "token key-token", "data-index": j, style: `height:${rowH}px`},
    h("span", {class: "lab", text: label}), h("span", {class: "kw"})));
  const queries = qs.map((label, i) => h("div", {
    class: `token query-token${i === S.sel.query ? " chosen" : ""}`, "data-index": i, style: `height:${rowH}px`,
    title: `query ${i}: ${label}`, text: label,
    onmouseenter: () => paint(i), onclick: () => select(layer.index, head, i),
  }));
  const y = (i) => i * rowH + rowH / 2;

  // Draw the lines of one query (with weights on the keys), or of all queries when `only` is null.
  function paint(only) {
    links.replaceChildren();
    const rows = only === null ? qs.map((_, i) => i) : [only];
    for (const i of rows) {
      const row = rowOf(layer, head, i);
      row.forEach((w, j) => {
        if (w < (only === null ? TINY : 0.004)) return;
        links.append(svg("line", {x1: 0, y1: y(i), x2: width, y2: y(j), "stroke-width": only === null ? 1.5 : 2.5,
                                  "stroke-opacity": clamp(only === null ? w * 0.9 : 0.15 + 0.85 * w, 0, 1).toFixed(3)}));
      });
    }
    const row = only === null ? null : rowOf(layer, head, only);
    keys.forEach((key, j) => {
      const w = row ? row[j] : null;
      key.querySelector(".kw").textContent = row ? w.toFixed(2) : "";
      key.querySelector(".lab").style.background = row ? css(weightRGB(w)) : "";
      key.querySelector(".lab").style.color = row ? inkOn(weightRGB(w)) : "";
    });
    queries.forEach((q, i) => { q.style.opacity = only === null || i === only ? "1" : "0.45"; });
  }

  const queryCol = h("div", {class: "tokens queries", onmouseleave: () => paint(null)},
    h("div", {class: "col-title", text: `queries (T=${qs.length})`, style: "text-align:right"}), queries);
  const keyCol = h("div", {class: "tokens keys"}, h("div", {class: "col-title", text: `keys (S=${ks.length})`}), keys);
  const linkCol = h("div", {}, h("div", {class: "col-title"}), links);
  paint(null);
  const other = S.b && S.b.layers[layer.index];
  const compared = other && other.queries === layer.queries && other.keys === layer.keys
    ? h("div", {}, h("div", {class: "axis", text: `the same head at ${checkpointText(S.b.checkpoint)}`
        + ` (Δ ${headChange(layer, other, head).toFixed(3)})`}), heatmap(S.b, other, head, qs, ks, () => {}, 200, ""))
    : null;
  section.append(h("div", {class: "head-body"},
    h("div", {class: "bertviz"}, queryCol, linkCol, keyCol),
    heatmap(answer, layer, head, qs, ks, paint, 380,
      `the whole matrix: ${layer.queries} queries (rows, T) × ${layer.keys} keys (columns, S)`), compared));
}

// The whole T x S matrix of the head, about `room` px wide, with a readout of the cell under the mouse.
function heatmap(answer, layer, head, qs, ks, paint, room, title) {
  const cell = clamp(Math.floor(room / Math.max(layer.queries, layer.keys)), 3, 26);
  const w = cell * layer.keys;
  const hgt = cell * layer.queries;
  const [canvas, ctx] = makeCanvas(w, hgt);
  drawMatrix(ctx, w, hgt, layer, head);
  ctx.strokeStyle = "#ff7a1a";
  ctx.lineWidth = 2;
  ctx.strokeRect(1, S.sel.query * cell + 1, w - 2, cell - 2);
  const readout = h("div", {class: "readout", text: "hover a cell"});
  const at = (ev) => {
    const box = canvas.getBoundingClientRect();
    return [Math.floor((ev.clientY - box.top) / cell), Math.floor((ev.clientX - box.left) / cell)];
  };
  canvas.addEventListener("mousemove", (ev) => {
    const [t, s] = at(ev);
    if (t < 0 || s < 0 || t >= layer.queries || s >= layer.keys) return;
    readout.textContent = `query ${t} «${qs[t]}» → key ${s} «${ks[s]}»: ${rowOf(layer, head, t)[s].toFixed(3)}`;
    paint(t);
  });
  canvas.addEventListener("mouseleave", () => { readout.textContent = "hover a cell"; paint(null); });
  canvas.addEventListener("click", (ev) => {
    const [t] = at(ev);
    if (t >= 0 && t < layer.queries) select(layer.index, head, t);
  });
  const labelled = cell >= 11;
  const font = `font-size:${Math.min(13, cell - 2)}px;`;
  const top = labelled ? h("div", {class: "heat-keys", style: `margin-left:${labelled ? 22 : 0}px`},
    ks.map((label) => h("span", {text: label, style: `width:${cell}px;${font}`}))) : null;
  const left = labelled ? h("div", {class: "heat-queries"},
    qs.map((label) => h("span", {text: label, style: `height:${cell}px;line-height:${cell}px;${font}`}))) : null;
  return h("div", {class: "heat-box"},
    title ? h("div", {class: "axis", text: title}) : null,
    top, h("div", {class: "heat-row"}, left, canvas), readout);
}

// Images: the picture with one query's weights over it (hover a patch: where THAT patch looks; click:
// the neuron view follows it), and beside it the CLS map of this head and the rollout.
function drawImageHead(section, answer, layer, head) {
  const size = 300;
  const img = h("img", {class: "picture", src: answer.image, width: size, height: size, alt: "the model's input"});
  const [overlay, octx] = makeCanvas(size, size, "overlay");
  const caption = h("figcaption");
  const imageQueries = layer.query_labels === "patches";
  const qs = queryLabels(answer, layer);
  const [rows, cols] = answer.grid;

  // Draw where query `q` looks, over the picture.
  function show(q, note) {
    const [top, mean] = drawPatchMap(octx, size, size, answer, rowOf(layer, head, q), imageQueries ? q : null, false);
    overlay.dataset.query = q;
    caption.textContent = note || `Where query «${qs[q]}» looks (head ${head}): veiled where it hardly looks, `
      + `amber where it looks most; largest patch weight ${fmt(top)}, average ${fmt(mean)}. `
      + (imageQueries ? "Hover a patch to see where that patch looks; click it to follow it below." : "");
    chips.forEach((chip) => { chip.style.opacity = Number(chip.dataset.index) === q ? "1" : "0.6"; });
  }
  const patchAt = (ev) => {
    const box = overlay.getBoundingClientRect();
    const c = clamp(Math.floor((ev.clientX - box.left) / box.width * cols), 0, cols - 1);
    const r = clamp(Math.floor((ev.clientY - box.top) / box.height * rows), 0, rows - 1);
    return answer.prefix + r * cols + c;
  };
  overlay.addEventListener("mousemove", (ev) => {
    if (!imageQueries) return;
    const q = patchAt(ev);
    if (q < layer.queries) show(q);
    else show(S.sel.query, `This layer computed only ${layer.queries === 1 ? "the CLS query" : `${layer.queries} queries`} `
      + "(T=" + layer.queries + "): nothing after it reads the other patches, so their queries were skipped.");
  });
  overlay.addEventListener("mouseleave", () => show(S.sel.query));
  overlay.addEventListener("click", (ev) => {
    if (!imageQueries) return;
    const q = patchAt(ev);
    if (q < layer.queries) select(layer.index, head, q);
  });

  // Chips for queries that are not patches: CLS, or the captioner's written words.
  const chipLabels = imageQueries ? qs.slice(0, answer.prefix) : qs;
  const chips = chipLabels.map((label, i) => h("span", {
    class: `token query-token${i === S.sel.query ? " chosen" : ""}`, "data-index": i, text: label,
    title: `query ${i}`, onmouseenter: () => show(i), onmouseleave: () => show(S.sel.query),
    onclick: () => select(layer.index, head, i),
  }));
  const main = h("figure", {},
    chips.length ? h("div", {class: "chips"}, h("span", {class: "axis", text: imageQueries ? "query:" : "written words (queries):"}), chips) : null,
    h("div", {class: "stack"}, img, overlay), caption);
  show(S.sel.query);

  const side = [];
  if (imageQueries && answer.prefix > 0) {
    side.push(smallFigure(answer, rowOf(layer, head, 0), 150, `CLS map, this head: where the CLS token looks in layer ${layer.index}.`));
  } else if (imageQueries) {
    side.push(smallFigure(answer, summaryRow(answer, layer, head), 150, "Mean over all queries: how much each patch is read, this head."));
  } else {
    const rows2 = [];
    for (let hd = 0; hd < layer.heads; hd++) rows2.push(rowOf(layer, hd, S.sel.query));
    side.push(smallFigure(answer, meanRows(rows2), 150, `Mean over the ${layer.heads} heads, for «${qs[S.sel.query]}».`));
  }
  if (answer.rollout) {
    side.push(smallFigure(answer, answer.rollout, 150,
      "Attention rollout: all layers chained (heads averaged, plus the residual path): where the CLS token gathers from in the end."));
  }
  section.append(h("p", {class: "explain", text: imageQueries
    ? "Each patch of the picture is a token. A query patch asks, every patch (and CLS) answers; the veil lifts where the weight is large."
    : "Each written word's query asks the picture: the patches are the keys and values (cross-attention)."}));
  section.append(h("div", {class: "image-body"}, main, ...side));
}

// A titled small picture with a row of weights over it.
function smallFigure(answer, row, size, title) {
  const [canvas, ctx] = makeCanvas(size, size, "small-map");
  drawPatchMap(ctx, size, size, answer, row, null, true);
  return h("figure", {}, canvas, h("figcaption", {text: title}));
}

// ---------------------------------------------------------------- drawing: the captioner's words

// For each written word: where it looks in the picture, for one decoder layer's cross-attention
// (the mean of the heads, then each head); the words written so far; stepping word by word.
function drawCaptionView() {
  const section = $("#caption-view");
  const a = S.a;
  if (a.view !== "caption") { section.hidden = true; return; }
  section.hidden = false;
  const selected = a.layers[S.sel.layer];
  const crosses = a.layers.filter((l) => l.kind === "cross");
  const cross = (selected.kind === "cross" ? selected : null)
    || crosses.find((l) => l.trunk === selected.trunk && l.layer === selected.layer) || crosses[0];
  const controls = $("#gen-controls");
  section.replaceChildren(
    h("h2", {}, h("span", {class: "num", text: "3b"}), "Writing the caption, word by word"),
    h("p", {class: "explain", text: "The decoder writes one word at a time; each new word's query looks at the picture "
      + "through cross-attention. Step forward with the button and watch where each word looked."}));
  const words = a.caption.words;
  section.append(h("div", {class: "caption-words"}, words.map((w, i) => [
    h("span", {class: `word${i === words.length - 1 ? " newest" : ""}`, text: w}), " "]),
    h("span", {class: "note", text: `${words.length} of ${a.caption.written} written words shown`})));
  section.append(controls);
  controls.hidden = false;
  if (!cross) return;
  const size = 64;
  const table = h("table", {class: "caption-table"});
  table.append(h("tr", {}, h("th", {text: ""}), h("th", {text: "mean of heads"}),
    ...Array.from({length: cross.heads}, (_, hd) => h("th", {text: `head ${hd}`}))));
  for (let t = 0; t < cross.queries; t++) {
    const perHead = Array.from({length: cross.heads}, (_, hd) => rowOf(cross, hd, t));
    const cells = [meanRows(perHead), ...perHead].map((row, k) => {
      const [canvas, ctx] = makeCanvas(size, size);
      drawPatchMap(ctx, size, size, a, row, null, true);
      const hd = k === 0 ? S.sel.head : k - 1;
      if (k > 0 && S.sel.layer === cross.index && S.sel.head === hd && S.sel.query === t) canvas.classList.add("selected");
      canvas.title = `«${words[t]}»: ${k === 0 ? "mean of the heads" : `head ${hd}`}; click to open it`;
      canvas.addEventListener("click", () => select(cross.index, hd, t));
      return h("td", {}, canvas);
    });
    table.append(h("tr", {}, h("td", {class: "word-cell", text: words[t]}), cells));
  }
  section.append(h("h3", {text: `${layerTitle(cross)}: where each written word looks`}), table);
}

// ---------------------------------------------------------------- drawing: the neuron view

// One query of one head, step by step: q, each key's k, q⊙k, the score, scaled, the mask, the softmax
// (with a temperature), and the weighted sum of the values; each step with its shape.
function drawNeuronView() {
  const section = $("#neuron-view");
  const n = S.neuron;
  section.replaceChildren(h("h2", {}, h("span", {class: "num", text: "4"}), "One query, step by step"));
  if (!n) {
    section.append(h("p", {class: "explain", text: "No neuron view for this selection (see the status line)."}));
    return;
  }
  const Sk = n.key_labels.length;
  const letter = (name) => (n.shapes.q.match(new RegExp(`${name}=(\\d+)`)) || [0, name])[1];
  section.append(h("p", {class: "explain"},
    `${S.a && S.a.layers[n.layer] ? layerName(S.a.layers[n.layer]) : `Layer ${n.layer}`} (${n.name}, `
    + `${n.kind}-attention), head ${n.head}: query ${n.query} `,
    h("b", {class: "q", text: `«${n.query_label}»`}),
    ` asks; the ${Sk} keys answer. All of this is one row of the head; the model computes `
    + `B×H×T = ${letter("B")}×${letter("H")}×${letter("T")} such rows at once, as matrices.`));
  if (S.saved && (n.layer !== S.sel.layer || n.head !== S.sel.head || n.query !== S.sel.query)) {
    section.append(h("p", {class: "note", text: "Saved copy: the neuron view shows the query that was selected when the page was saved."}));
  }
  const scaleQ = maxAbs(n.q.concat(...n.k));
  const scaleQK = maxAbs([].concat(...n.qk));
  const scaleV = maxAbs([].concat(...n.v, n.mixed));

  // ① the query
  section.append(step("①", ["the query ", h("span", {class: "q", text: "q"}), ": what ", h("b", {text: `«${n.query_label}»`}), " looks for"],
    `q: (Dh=${n.dh},)`, `one row of Q ${n.shapes.q}`,
    h("div", {class: "scroll-x"}, squareRow(`q «${n.query_label}»`, n.q, scaleQ))));

  // ② ③ the keys, and each key times the query, channel by channel, summed into a score
  const qRow = squareRow(`q «${n.query_label}»`, n.q, scaleQ);
  qRow.classList.add("q-row");
  const kRows = n.k.map((k, j) => squareRow(n.key_labels[j], k, scaleQ, null, !n.allowed[j]));
  const qkRows = n.qk.map((row, j) => squareRow(null, row, scaleQK, `= ${fmt(n.scores[j])}`, !n.allowed[j]));
  section.append(step("②", ["every key ", h("span", {class: "k", text: "k"}), " (what each token offers), and ③ q ⊙ k: "
    + "q times each k channel by channel (red: they agree, blue: they disagree); the row's sum is the score"],
    `k: (S=${Sk}, Dh=${n.dh})  q⊙k: (S=${Sk}, Dh=${n.dh})`, `from K ${n.shapes.k}`,
    h("div", {class: "scroll-x"}, h("div", {class: "matrices"},
      h("div", {}, h("div", {class: "matrix-title", text: "q, then each key's k"}), qRow, kRows),
      h("div", {}, h("div", {class: "matrix-title", style: "margin-left:0", text: "q ⊙ k, then its sum = the score"}),
        h("div", {class: "sq-row q-row", style: "visibility:hidden"}, h("span", {class: "sq"})), qkRows)))));

  // ④ ⑤ ⑥ scores, scaled, masked, softmax: one column per key
  const scoreScale = maxAbs(n.scaled.filter((_, j) => n.allowed[j]));
  const temperature = h("input", {type: "range", id: "temperature", min: "0.1", max: "3", step: "0.05", value: String(S.temperature),
    oninput: (ev) => { S.temperature = Number(ev.target.value); drawSoftmax(); drawn(); }});
  const columns = h("div", {class: "scroll-x"},
    h("div", {class: "vec-row"}, h("span", {class: "row-head", text: `key (S=${Sk})`}),
      n.key_labels.map((label, j) => h("span", {class: "cell label", text: short(label), title: `key ${j}: ${label}`}))),
    numberRow("score = Σ q⊙k", n.scores, maxAbs(n.scores), n.allowed, false),
    numberRow(`× 1/√Dh = ${fmt(n.scale)}`, n.scaled, scoreScale, n.allowed, false),
    numberRow("mask", n.scaled, scoreScale, n.allowed, true),
    h("div", {class: "vec-row", id: "softmax-row"}),
    numberRow("model's weights", n.weights, 1, n.allowed, false, true));
  section.append(step("④", ["scale the scores by 1/√Dh, ⑤ mask the keys this query may not read (−inf), ⑥ softmax: "
    + "weights that sum to 1"], `scores, weights: (S=${Sk},)`, `one row of ${n.shapes.weights}`,
    h("div", {class: "temp-line"}, h("label", {for: "temperature", text: "softmax temperature"}), temperature,
      h("output", {id: "temperature-value", text: S.temperature.toFixed(2)}),
      h("span", {class: "note", text: "weights = softmax(scaled / temperature) over the allowed keys, computed here; "
        + "at 1 it is the model's own. Lower: sharper; higher: flatter."})),
    columns));

  // ⑦ the message: the weights mix the values
  const vRows = n.v.map((v, j) => squareRow(n.key_labels[j], v, scaleV, null, !n.allowed[j]));
  vRows.forEach((row, j) => { row.dataset.key = j; row.classList.add("v-row"); });
  section.append(step("⑦", ["the message: each key's value ", h("span", {class: "v", text: "v"}),
    ", weighted by its softmax weight and summed"], `v: (S=${Sk}, Dh=${n.dh})  mixed: (Dh=${n.dh},)`,
    `from V ${n.shapes.v} into ${n.shapes.mixed}`,
    h("div", {class: "scroll-x"}, h("div", {class: "matrix-title", text: "v (rows faded by their weight)"}), vRows),
    h("div", {class: "scroll-x", id: "mix-rows"})));
  drawSoftmax();
}

// A titled step of the neuron view with its shape.
function step(mark, title, shape, from, ...body) {
  return h("div", {class: "step"},
    h("div", {class: "step-head"}, h("b", {}, `${mark} `, ...[].concat(title)), h("span", {class: "shape", text: shape}),
      h("span", {class: "from", text: from})),
    ...body);
}

// A vector as a row of coloured squares (numbers on hover); `label` null: no row head (it sits beside
// another matrix's); `tail`: text after it; `masked`: greyed.
function squareRow(label, values, scale, tail, masked) {
  return h("div", {class: "sq-row", style: masked ? "opacity:0.35" : ""},
    label === null ? null
      : h("span", {class: "row-head", text: label, title: masked ? `${label} (masked: this query may not read it)` : label}),
    values.map((x, i) => h("span", {class: "sq", style: `background:${css(divergingRGB(x / scale))}`, title: `channel ${i}: ${fmt(x)}`})),
    tail ? h("span", {class: "eq", text: tail}) : null);
}

// A row of numbers, one per key; `asMask`: allowed / −inf; `weights`: a 0..1 scale.
function numberRow(label, values, scale, allowed, asMask, weights) {
  return h("div", {class: "vec-row"}, h("span", {class: "row-head", text: label}),
    values.map((x, j) => {
      if (!allowed[j]) return h("span", {class: "cell masked", text: asMask ? "−inf" : weights ? "0" : fmt(x), title: "masked"});
      if (asMask) return h("span", {class: "cell", text: "✓", title: "allowed", style: "color:#2b8a3e"});
      const rgb = weights ? weightRGB(x) : divergingRGB(x / scale);
      return h("span", {class: "cell", text: fmt(x), title: String(x), style: `background:${css(rgb)};color:${inkOn(rgb)}`});
    }));
}

// softmax(scaled / temperature) over the allowed keys (masked keys get 0).
function softmax(scaled, allowed, temperature) {
  const z = scaled.map((x, j) => (allowed[j] ? x / temperature : -Infinity));
  const top = Math.max(...z);
  const e = z.map((x) => (x === -Infinity ? 0 : Math.exp(x - top)));
  const sum = e.reduce((s, x) => s + x, 0);
  return e.map((x) => x / sum);
}

// The softmax row at the current temperature, the v rows faded by it, and their weighted sum beside the model's.
function drawSoftmax() {
  const n = S.neuron;
  if (!n) return;
  const t = S.temperature;
  const weights = softmax(n.scaled, n.allowed, t);
  $("#temperature-value").textContent = t.toFixed(2);
  const top = Math.max(...weights, 1e-9);
  const row = $("#softmax-row");
  row.replaceChildren(h("span", {class: "row-head", text: `softmax at ${t.toFixed(2)}`}),
    ...weights.map((w, j) => h("span", {class: `cell weight${n.allowed[j] ? "" : " masked"}`, "data-key": j, "data-weight": String(w),
      title: `key ${j} «${n.key_labels[j]}»: ${w}`},
      h("span", {class: "wbar", style: `height:${Math.round(30 * w / top)}px;opacity:${n.allowed[j] ? 1 : 0}`}),
      h("span", {class: "wnum", text: n.allowed[j] ? fmt(w) : "0"}))));
  document.querySelectorAll("#neuron-view .v-row").forEach((r) => {
    const j = Number(r.dataset.key);
    const opacity = n.allowed[j] ? (0.12 + 0.88 * weights[j] / top).toFixed(3) : "0.1";
    r.querySelectorAll(".sq").forEach((sq) => { sq.style.opacity = opacity; });
    r.querySelector(".row-head").textContent = `${n.key_labels[j]} × ${fmt(weights[j])}`;
  });
  const mixed = n.mixed.map((_, d) => weights.reduce((s, w, j) => s + w * n.v[j][d], 0));
  const scale = maxAbs(n.mixed.concat(mixed));
  const diff = Math.max(...mixed.map((x, d) => Math.abs(x - n.mixed[d])));
  const header = h("div", {class: "vec-row"}, h("span", {class: "row-head", text: `channel (Dh=${n.dh})`}),
    n.mixed.map((_, d) => h("span", {class: "cell label", text: String(d), style: "color:#667085"})));
  $("#mix-rows").replaceChildren(header,
    numberRow(`Σ weights·v at ${t.toFixed(2)}`, mixed, scale, mixed.map(() => true), false),
    numberRow("model's mixed", n.mixed, scale, mixed.map(() => true), false),
    h("div", {class: "note", style: "margin:6px 0 0 150px"},
      `largest difference ${diff.toExponential(1)}`,
      diff < 1e-4 ? h("span", {class: "ok", text: "  — the same: this is what the head passes on for this query"}) :
        " — the temperature changed the weights, so the message changed"));
}

// ---------------------------------------------------------------- saving

// Download this page as one file: the CSS and JS inline, the state as JSON; it draws with no server.
async function save() {
  busy(true);
  try {
    const [page, style, script] = await Promise.all(["./", "static/explorer.css", "static/explorer.js"].map(async (url) => {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`cannot read ${url} from the server to save the page`);
      return response.text();
    }));
    const state = {
      run: S.run, checkpoint: S.checkpoint, compare: S.compare, prompt: S.prompt, image: goodImage, words: S.words,
      a: S.a, b: S.b, neuron: S.neuron, sel: S.sel, temperature: S.temperature, generated: S.generated,
    };
    const json = JSON.stringify(state).replace(/</g, "\\u003c");
    const inlineScript = script.replace(/<\/script/gi, "<\\/script");
    const html = page
      .replace(/<link rel="stylesheet" href="static\/explorer.css">/, () => `<style>\n${style}\n</style>`)
      .replace(/<script src="static\/explorer.js"><\/script>/, () => `<script type="application/json" id="saved-state">${json}<\/script>\n`
        + `<script>\n${inlineScript}\n<\/script>`);
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

// ---------------------------------------------------------------- starting

// The run's header, the input of its kind, the controls wired.
function setup() {
  const run = S.run;
  document.title = `explore ${run.run} · multitx`;
  $("#run-name").textContent = run.run;
  $("#run-name").title = run.run_dir;
  $("#task").textContent = run.task;
  for (const select of [$("#checkpoint"), $("#compare")]) {
    for (const c of run.checkpoints) select.append(h("option", {value: c.name, text: checkpointText(c.name)}));
  }
  $("#checkpoint").addEventListener("change", (ev) => { S.checkpoint = ev.target.value; update("a"); });
  $("#compare").addEventListener("change", (ev) => { S.compare = ev.target.value; S.b = null; update("b"); });
  $("#save").addEventListener("click", save);
  $("#output-title").textContent = run.view === "tokens" ? "What the model reads" : run.view === "caption"
    ? "The caption it writes" : "What the model sees";

  if (run.input === "text") {
    $("#text-input").hidden = false;
    const box = $("#prompt");
    box.value = S.prompt;
    let timer = null;
    box.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { S.prompt = box.value; S.generated = null; update("a"); }, 250);
    });
  } else {
    $("#image-input").hidden = false;
    wireImageInput();
  }
  if (run.writes) {
    $("#gen-controls").hidden = false;
    $("#generate").addEventListener("click", generate);
    if (run.view === "caption") {
      $("#write-all").hidden = false;
      $("#restart").hidden = false;
      $("#write-all").addEventListener("click", () => { S.words = S.a.caption.written; update("a"); });
      $("#restart").addEventListener("click", () => { S.words = 1; update("a"); });
    } else {
      $("#generate").textContent = "Generate one token";
    }
  }
}

// The file chooser and the drop zone: the file is read here and sent as a data URL.
function wireImageInput() {
  const drop = $("#drop");
  const take = (file) => {
    if (!file || S.saved) return;
    const limit = S.run.max_upload_bytes;
    if (file.size * 4 / 3 + 1000 > limit) {
      failed(new Error(`${file.name} is ${(file.size / 1e6).toFixed(1)} MB; the explorer takes images up to about `
        + `${(limit * 0.75 / 1e6).toFixed(1)} MB (max_upload_mb=); use a smaller image`));
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      S.image = {url: String(reader.result), name: file.name};
      S.words = 1;
      if (S.sel) S.sel.chosen = false;
      update("a");
    };
    reader.onerror = () => failed(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  };
  $("#image-file").addEventListener("change", (ev) => { take(ev.target.files[0]); ev.target.value = ""; });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    take(ev.dataTransfer.files[0]);
  });
}

// A saved copy: the state from the page itself, the inputs disabled, a note saying so.
async function startSaved(holder) {
  Object.assign(S, JSON.parse(holder.textContent), {saved: true});
  goodImage = S.image;
  setup();
  for (const id of ["prompt", "image-file", "checkpoint", "compare", "generate", "write-all", "restart", "save"]) {
    const node = document.getElementById(id);
    if (node) node.disabled = true;
  }
  const note = $("#saved-note");
  note.hidden = false;
  note.textContent = `A saved copy of the explorer on ${S.run.run} (${checkpointText(S.checkpoint)}), as it was: `
    + "hover and the temperature still work, but nothing here is computed again (no server behind it).";
  for (const answer of [S.a, S.b]) if (answer && answer.image) await loadImage(answer.image);
  if (S.run.input === "text") $("#prompt").value = S.prompt;
  drawAll();
  say("saved copy");
}

// The live page: ask for the run, then the first input's views.
async function startLive() {
  busy(true);
  try {
    S.run = await api("api/run");
    S.checkpoint = S.run.checkpoint;
    if (S.run.input === "text") S.prompt = S.run.example || "";
    else if (S.run.example) S.image = {url: S.run.example, name: "the run's example image"};
    goodImage = S.image;
    setup();
    update("a");
  } catch (err) {
    failed(err);
  } finally {
    busy(false);
  }
}

window.addEventListener("DOMContentLoaded", () => {
  const holder = document.getElementById("saved-state");
  (holder ? startSaved(holder) : startLive()).catch((err) => failed(err));
});
