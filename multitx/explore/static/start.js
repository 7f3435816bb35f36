/* multitx explorer, starting (loaded last): the run's header and input wired to the controls, then the
   live page asks the server for the run, or a saved copy draws from the state inside itself. */
"use strict";

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
