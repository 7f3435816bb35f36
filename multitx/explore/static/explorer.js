/* multitx explorer: the page. Plain JS, no framework, nothing fetched from the network but its own server.

   The story it tells: attention is message passing. Each token's query meets every key it may read
   (dot products = scores), softmax turns a row of scores into weights, and the weights mix the values.
   Letters: B batch (1 here), H heads, T tokens that ask (queries), S tokens that answer (keys, values),
   Dh channels per head.

   Flow: GET api/run once; then every change of the input, checkpoint or selection asks the server
   (api/attention, api/neuron, api/generate) and draws everything again from the answers in `S`.
   Only the newest request's answers are drawn. A saved copy (Save) carries `S` inside itself as JSON
   and draws from it with no server.

   Files: classic scripts that share their globals, loaded by index.html in this order:
     explorer.js     this story; the state `S`; small helpers, colours, reading the answers
     update.js       talking to the server: the update flow, the status line, the selection, the whole page drawn
     model_view.js   the model view: the grids of head maps, the patch maps, the legend
     head_view.js    the head view (text lines, heatmap, the picture) and the captioner's words
     neuron_view.js  the neuron view: one query step by step, the softmax and its temperature
     save.js         Save: the page, its styles, scripts and state as one file that draws with no server
     start.js        starting: the controls wired, then the live page or a saved copy

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
const short = (label) => String(label).replace(/^patch(es)? /, "");  // "patch (1,2)", "patches (0-1,2-3)" -> the place
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
// A prefix-fusion captioner's decoder self-attention: its keys (and queries) are the picture's N tokens, then
// the words; the head view lays the image part over the picture, the model view draws the whole matrix.
const fused = (answer, layer) => layer.key_labels === "prefix_reads" && Boolean(answer.fused_grid);
// The patch grid a layer's image keys lie on: {grid: [rows, cols], prefix: tokens before it (CLS)}. A fused
// layer's is the decoder's (after the pixel shuffle, no CLS); every other image layer's is the encoder's.
function layoutOf(answer, layer) {
  return layer && fused(answer, layer) ? {grid: answer.fused_grid, prefix: 0} : {grid: answer.grid, prefix: answer.prefix};
}
// The query index of written word t: after the picture's N tokens in a fused layer, else t.
function wordQuery(answer, layer, t) {
  return fused(answer, layer) ? answer.fused_grid[0] * answer.fused_grid[1] + t : t;
}
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
