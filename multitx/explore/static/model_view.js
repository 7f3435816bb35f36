/* multitx explorer, the model view: a grid of small maps, one per layer and head (the compared
   checkpoint's beside it, with each head's change), the picture lit by one row of weights over
   its patches, and the legend of the colour scale. */
"use strict";

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
// `layout`: the grid the row's patches lie on and the tokens before them (layoutOf; the encoder's by default);
// keys after the patches (a fused layer's words) are not drawn here.
function drawPatchMap(ctx, w, h, answer, row, query, withPicture, layout = layoutOf(answer, null)) {
  const [rows, cols] = layout.grid;
  const prefix = layout.prefix;
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
  if (query !== null && query >= prefix && query < prefix + rows * cols) {
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
