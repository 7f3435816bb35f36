/* multitx explorer, the head view: the selected head as token lines and a heatmap (text) or the picture
   with one query's weights over it (images; a prefix-fusion decoder's image part over the picture, its
   words part beneath); and the captioner's words, each one's look at the picture. */
"use strict";

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
  if (overPicture(a, layer) || fused(a, layer)) drawImageHead(section, a, layer, head);
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
// the neuron view follows it), and beside it the CLS map of this head and the rollout. A fused layer (a
// prefix-fusion decoder: keys are the picture's N tokens, then the words): its image part over the picture,
// its words part as chips beneath, the written words as queries to choose.
function drawImageHead(section, answer, layer, head) {
  const size = 300;
  const img = h("img", {class: "picture", src: answer.image, width: size, height: size, alt: "the model's input"});
  const [overlay, octx] = makeCanvas(size, size, "overlay");
  const caption = h("figcaption");
  const joined = fused(answer, layer);
  const layout = layoutOf(answer, layer);
  const imageQueries = layer.query_labels === "patches" || joined;  // some queries are patches of the picture
  const qs = queryLabels(answer, layer);
  const ks = keyLabels(answer, layer);
  const [rows, cols] = layout.grid;
  const patchEnd = layout.prefix + rows * cols;  // keys (and queries) before this index are CLS or patches
  const wordsPart = h("div", {class: "chips words-part"});

  // Draw where query `q` looks, over the picture (and, in a fused layer, over the words beneath it).
  function show(q, note) {
    const row = rowOf(layer, head, q);
    const isPatch = imageQueries && q >= layout.prefix && q < patchEnd;
    const [top, mean] = drawPatchMap(octx, size, size, answer, row, isPatch ? q : null, false, layout);
    overlay.dataset.query = q;
    const onImage = row.slice(0, patchEnd).reduce((sum, x) => sum + x, 0);
    caption.textContent = note || `Where query «${qs[q]}» looks (head ${head}): veiled where it hardly looks, `
      + `amber where it looks most; largest patch weight ${fmt(top)}, average ${fmt(mean)}. `
      + (joined ? `${pct(onImage)} of its attention is on the picture, the rest on the words beneath. ` : "")
      + (imageQueries ? "Hover a patch to see where that patch looks; click it to follow it below." : "");
    chips.forEach((chip) => { chip.style.opacity = Number(chip.dataset.index) === q ? "1" : "0.6"; });
    if (joined) {
      wordsPart.replaceChildren(h("span", {class: "axis", text: "and the words (keys):"}),
        ...ks.slice(patchEnd).map((label, j) => {
          const w = row[patchEnd + j];
          return h("span", {class: "token key-token", text: `${label} ${w.toFixed(2)}`, title: `key ${patchEnd + j}`,
                            style: `background:${css(weightRGB(w))};color:${inkOn(weightRGB(w))}`});
        }));
    }
  }
  const patchAt = (ev) => {
    const box = overlay.getBoundingClientRect();
    const c = clamp(Math.floor((ev.clientX - box.left) / box.width * cols), 0, cols - 1);
    const r = clamp(Math.floor((ev.clientY - box.top) / box.height * rows), 0, rows - 1);
    return layout.prefix + r * cols + c;
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

  // Chips for queries that are not patches: CLS, or the captioner's written words (after the picture's
  // tokens in a fused layer).
  const chipQueries = joined ? qs.map((_, i) => i).slice(patchEnd)
    : imageQueries ? qs.map((_, i) => i).slice(0, answer.prefix) : qs.map((_, i) => i);
  const chips = chipQueries.map((i) => h("span", {
    class: `token query-token${i === S.sel.query ? " chosen" : ""}`, "data-index": i, text: qs[i],
    title: `query ${i}`, onmouseenter: () => show(i), onmouseleave: () => show(S.sel.query),
    onclick: () => select(layer.index, head, i),
  }));
  const main = h("figure", {},
    chips.length ? h("div", {class: "chips"}, h("span", {class: "axis", text: imageQueries && !joined ? "query:" : "written words (queries):"}), chips) : null,
    h("div", {class: "stack"}, img, overlay), caption, joined ? wordsPart : null);
  show(S.sel.query);

  const side = [];
  if (imageQueries && !joined && answer.prefix > 0) {
    side.push(smallFigure(answer, rowOf(layer, head, 0), 150, `CLS map, this head: where the CLS token looks in layer ${layer.index}.`));
  } else if (imageQueries && !joined) {
    side.push(smallFigure(answer, summaryRow(answer, layer, head), 150, "Mean over all queries: how much each patch is read, this head."));
  } else {
    const rows2 = [];
    for (let hd = 0; hd < layer.heads; hd++) rows2.push(rowOf(layer, hd, S.sel.query));
    side.push(smallFigure(answer, meanRows(rows2), 150, `Mean over the ${layer.heads} heads, for «${qs[S.sel.query]}».`, layout));
  }
  if (answer.rollout) {
    side.push(smallFigure(answer, answer.rollout, 150,
      "Attention rollout: all layers chained (heads averaged, plus the residual path): where the CLS token gathers from in the end."));
  }
  section.append(h("p", {class: "explain", text: joined
    ? `Prefix fusion: one self-attention over the picture's ${rows * cols} tokens and the words. The picture's tokens see `
      + "each other both ways; each word sees the whole picture and the words before it, never a later one. A row's "
      + "weights sum to 1 over both: its picture part is drawn over the picture, its words part beneath."
    : imageQueries
    ? "Each patch of the picture is a token. A query patch asks, every patch (and CLS) answers; the veil lifts where the weight is large."
    : "Each written word's query asks the picture: the patches are the keys and values (cross-attention)."}));
  section.append(h("div", {class: "image-body"}, main, ...side));
}

// A titled small picture with a row of weights over it (`layout`: its patch grid, the encoder's by default).
function smallFigure(answer, row, size, title, layout = layoutOf(answer, null)) {
  const [canvas, ctx] = makeCanvas(size, size, "small-map");
  drawPatchMap(ctx, size, size, answer, row, null, true, layout);
  return h("figure", {}, canvas, h("figcaption", {text: title}));
}

// ---------------------------------------------------------------- drawing: the captioner's words

// For each written word: where it looks in the picture, for one decoder layer's cross-attention, or with
// prefix fusion its self-attention's picture part (the mean of the heads, then each head); the words written
// so far; stepping word by word.
function drawCaptionView() {
  const section = $("#caption-view");
  const a = S.a;
  if (a.view !== "caption") { section.hidden = true; return; }
  section.hidden = false;
  const selected = a.layers[S.sel.layer];
  const crosses = a.layers.filter((l) => l.kind === "cross" || fused(a, l));
  const cross = (selected.kind === "cross" ? selected : null)
    || crosses.find((l) => l.trunk === selected.trunk && l.layer === selected.layer) || crosses[0];
  const controls = $("#gen-controls");
  section.replaceChildren(
    h("h2", {}, h("span", {class: "num", text: "3b"}), "Writing the caption, word by word"),
    h("p", {class: "explain", text: "The decoder writes one word at a time; each new word's query looks at the picture "
      + (a.fused_grid ? "in the decoder's self-attention, whose first keys are the picture's tokens (prefix fusion). "
        : "through cross-attention. ") + "Step forward with the button and watch where each word looked."}));
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
  const layout = layoutOf(a, cross);
  for (let t = 0; t < words.length; t++) {
    const q = wordQuery(a, cross, t);  // the query that wrote word t
    const perHead = Array.from({length: cross.heads}, (_, hd) => rowOf(cross, hd, q));
    const cells = [meanRows(perHead), ...perHead].map((row, k) => {
      const [canvas, ctx] = makeCanvas(size, size);
      drawPatchMap(ctx, size, size, a, row, null, true, layout);
      const hd = k === 0 ? S.sel.head : k - 1;
      if (k > 0 && S.sel.layer === cross.index && S.sel.head === hd && S.sel.query === q) canvas.classList.add("selected");
      canvas.title = `«${words[t]}»: ${k === 0 ? "mean of the heads" : `head ${hd}`}; click to open it`;
      canvas.addEventListener("click", () => select(cross.index, hd, q));
      return h("td", {}, canvas);
    });
    table.append(h("tr", {}, h("td", {class: "word-cell", text: words[t]}), cells));
  }
  section.append(h("h3", {text: `${layerTitle(cross)}: where each written word looks`}), table);
}
