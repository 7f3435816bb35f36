/* multitx explorer, the neuron view: one query of one head step by step, from q and the keys to the
   softmax, at a temperature the learner sets, and the weighted sum of the values. */
"use strict";

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
