"""What the explorer computes: a run's model on one input, traced, as plain data for the page.

Every answer comes from the run's task's own `inspect` (the pass python -m multitx.inspect
draws), run again on each request through multitx.trace, so the page shows what the
model did, never a copy. The model of each checkpoint is loaded once; a lock makes the
requests take turns with it (the trace's hooks belong to one forward pass at a time).

Letters: B batch (1 here), H heads, T tokens that ask (queries), S tokens that answer
(keys and values), Dh channels per head. A map of weights travels as uint8 (round(255 w),
row-major H x T x S, base64): a quarter of float32, plenty for colour; the numbers the
neuron view prints come unrounded.
"""

import base64
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multitx.data.images.images import EncodedImage
from multitx.engine import checkpoint as checkpoints
from multitx.engine.task import Inspection
from multitx.errors import UserError
from multitx.inspect.maps import image_token_labels, rollout
from multitx.inspect.shape_trace import shape_trace
from multitx.loading import Loaded, load, locate, task_class
from multitx.models.decoding import sample_next
from multitx.nn.trace import AttentionRecord

TOP = 5  # candidates shown for the next token, classes shown for an image


@dataclass(frozen=True)
class Source:
    """One input: a prompt (text models) or an image file's bytes (image models)."""

    prompt: str | None = None
    image: EncodedImage | None = None
    words: int | None = None  # captioner: how many written words to show (None: the whole caption)


def data_url(pixels: np.ndarray) -> str:
    """(H, W, C) uint8 -> a PNG data: URL."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def packed(weights: torch.Tensor) -> str:
    """(H, T, S) weights in [0, 1] -> base64 of uint8 round(255 w), row-major."""
    return base64.b64encode((weights.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().tobytes()).decode()


def shape(letters: str, t: torch.Tensor) -> str:
    """("B, H, T, Dh", q) -> "(B=1, H=4, T=64, Dh=32)"."""
    return "(" + ", ".join(f"{name}={n}" for name, n in zip(letters.split(", "), t.shape, strict=True)) + ")"


def patch_labels(prefix: int, grid: tuple[int, int]) -> list[str]:
    return ["CLS"] * prefix + [f"patch ({r},{c})" for r in range(grid[0]) for c in range(grid[1])]


class Explorer:
    """One run folder (or one checkpoint folder), its checkpoints and the lock its models are used under."""

    def __init__(self, run_dir: Path, which: str = "best", *, device="cpu", trust_code: bool = False):
        self.device, self.trust_code = device, trust_code
        self.run_dir, folder, _ = locate(Path(run_dir), which)
        self.lock = threading.Lock()
        self.loaded: dict[str, Loaded] = {}
        listed = checkpoints.step_dirs(self.run_dir / "checkpoints") if folder.parent.name == "checkpoints" else []
        self.folders = {f.name: f for f in (listed if folder in listed else [*listed, folder])}
        self.default = folder.name
        first = self.model(self.default)
        self.task = task_class(first.config, trust_code)
        self.best = checkpoints.best(self.run_dir)
        try:  # the run's own data gives the first input; a run trained elsewhere may not have it here
            self.example = self.inspect(self.default, Source())
        except UserError:
            self.example = None

    def model(self, name: str) -> Loaded:
        """The checkpoint `name` (a step_N folder of the run), loaded the first time it is asked for."""
        if name not in self.folders:
            raise UserError(f"no checkpoint {name!r} in {self.run_dir}; choose one of {', '.join(self.folders)}")
        if name not in self.loaded:
            self.loaded[name] = load(self.folders[name], device=self.device, trust_code=self.trust_code,
                                     tool="multitx.explore")
        return self.loaded[name]

    def inspect(self, name: str, source: Source) -> Inspection:
        """The task's own traced pass of checkpoint `name` on `source` (the run's own data when empty)."""
        run = self.model(name)
        if source.prompt is not None and not source.prompt:
            raise UserError("the prompt is empty; type some text")
        with torch.no_grad():
            return self.task.inspect(run, prompt=source.prompt, image=source.image, new_tokens=0,
                                     device=self.device)

    def about(self) -> dict:
        """What the page needs before the first input: the run, its checkpoints, how to read it."""
        ins = self.example
        view = ins.view if ins else {"text": "tokens", "images": "patches"}.get(self.task.reads, "caption")
        latest = max(self.folders)
        example = None
        if ins is not None:
            example = ins.prompt if view == "tokens" else data_url(ins.image)
        return {"run": self.run_dir.name, "run_dir": str(self.run_dir), "task": self.model(self.default).task,
                "view": view, "input": "text" if view == "tokens" else "image",
                "writes": view not in ("tokens", "patches") or bool(getattr(self.task, "writes", False)),
                "checkpoints": [{"name": name, "step": int(name.split("_")[-1]) if name.startswith("step_") else None,
                                 "best": self.best is not None and self.best.name == name, "latest": name == latest}
                                for name in self.folders],
                "checkpoint": self.default, "example": example}

    def attention(self, name: str, source: Source) -> dict:
        """Every attention layer's weights on `source`, the labels of its tokens, and what the model made of it."""
        with self.lock:
            ins = self.inspect(name, source)
            return self.described(name, ins, source)

    def described(self, name: str, ins: Inspection, source: Source) -> dict:
        records, shown = self.records(ins, source.words)
        answer = {"checkpoint": name, "view": ins.view, "output": ins.output, "source": ins.source,
                  "labels": self.labels(ins, shown), "shapes": shape_trace(ins),
                  "layers": [{"index": i, "name": r.name, "trunk": r.name.split(".")[0], "kind": r.kind,
                              "layer": r.layer, "heads": w.shape[0], "queries": w.shape[1], "keys": w.shape[2],
                              "dh": r.q.shape[-1], **self.label_names(ins, r), "weights": packed(w)}
                             for i, (r, w) in enumerate(records)]}
        if ins.view == "tokens" and getattr(self.task, "writes", False) and ins.trace.logits is not None:
            answer["next"] = self.candidates(name, ins.trace.logits[0, -1])
        if ins.image is not None:
            answer |= {"image": data_url(ins.image), "grid": list(ins.grid), "prefix": ins.prefix}
        if ins.fused_grid is not None:  # prefix fusion: the decoder's image tokens lie on this grid
            answer["fused_grid"] = list(ins.fused_grid)
        if ins.view == "patches":
            probs = ins.trace.logits[0].float().softmax(-1)  # (classes,)
            top = probs.topk(min(TOP, len(probs)))
            classes = self.model(name).classes
            answer["classes"] = [{"name": classes[i], "p": p} for p, i in zip(top.values.tolist(),
                                                                              top.indices.tolist(), strict=True)]
            answer["rollout"] = rollout(ins.trace.layers("self"), ins.prefix, ins.grid).ravel().tolist()
        if ins.shown_words:  # a captioner: the words it wrote, one at a time
            answer["caption"] = {"words": ins.shown_words[:shown], "written": len(ins.shown_words),
                                 "done": shown >= len(ins.shown_words)}
            answer["output"] = " ".join(w for w in ins.shown_words[:shown] if w != "<eos>")
        return answer

    @staticmethod
    def records(ins: Inspection, words: int | None) -> tuple[list[tuple[AttentionRecord, torch.Tensor]], int]:
        """(record, its (H, T, S) weights) for every attention layer, and how many written words are shown.
        The captioner's decoder is causal and each word's cross-attention its own, so the first `words`
        queries of the traced caption are exactly what generation computed when it wrote those words.
        With prefix fusion the decoder's self-attention is the one map of the image's N tokens and the
        words: its first N + `words` queries and keys (T = S = N + words)."""
        shown = len(ins.shown_words) if words is None else max(1, min(int(words), len(ins.shown_words)))
        image = 0 if ins.fused_grid is None else ins.fused_grid[0] * ins.fused_grid[1]  # N
        out = []
        for r in ins.trace.attention:
            w = r.weights[0]  # (H, T, S)
            if ins.shown_words and r.name.startswith("decoder"):
                w = w[:, :image + shown, :image + shown] if r.kind == "self" else w[:, :shown]
            out.append((r, w))
        return out, shown

    @staticmethod
    def labels(ins: Inspection, shown: int) -> dict[str, list[str]]:
        if ins.view == "tokens":
            return {"tokens": ins.tokens}
        patches = patch_labels(ins.prefix, ins.grid)
        if ins.view == "patches":
            return {"patches": patches}
        labels = {"patches": patches, "reads": ins.keys[:shown], "writes": ins.tokens[:shown]}
        if ins.fused_grid is not None:  # prefix fusion: the decoder's one map, the image's N tokens first
            image = image_token_labels(ins.grid, ins.fused_grid)
            labels |= {"prefix_reads": image + labels["reads"], "prefix_writes": image + labels["writes"]}
        return labels

    @staticmethod
    def label_names(ins: Inspection, r: AttentionRecord) -> dict[str, str]:
        """Which list of labels names a layer's queries and keys."""
        if ins.view == "tokens":
            return {"query_labels": "tokens", "key_labels": "tokens"}
        if ins.view == "patches" or not r.name.startswith("decoder"):
            return {"query_labels": "patches", "key_labels": "patches"}
        if ins.fused_grid is not None:  # prefix fusion: queries and keys are the image's tokens, then the words
            return {"query_labels": "prefix_writes", "key_labels": "prefix_reads"}
        return {"query_labels": "writes", "key_labels": "reads" if r.kind == "self" else "patches"}

    def candidates(self, name: str, logits: torch.Tensor) -> list[dict]:
        """The TOP most likely next tokens, (vocab,) logits -> [{label, text, p}]."""
        vocab = self.model(name).vocab
        top = logits.float().softmax(-1).topk(TOP)
        return [{"label": vocab.label(i), "text": vocab.decode([i]), "p": p}
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]

    def neuron(self, name: str, source: Source, layer: int, head: int, query: int) -> dict:
        """One query of one head, step by step: q meets each k (their elementwise product and its sum), the
        scores scaled by 1/√Dh, the mask, the softmax, and the weighted sum of the values."""
        with self.lock:
            ins = self.inspect(name, source)
            records, shown = self.records(ins, source.words)
            if not 0 <= layer < len(records):
                raise UserError(f"layer {layer} does not exist; this model has {len(records)} attention layers")
            record, weights = records[layer]
            heads, queries, keys = weights.shape
            if not (0 <= head < heads and 0 <= query < queries):
                raise UserError(f"head {head}, query {query} is outside {record.name}: {heads} heads, "
                                f"{queries} queries")
            q = record.q[0, head, query].float()  # (Dh,) what this query looks for
            k, v = record.k[0, head, :keys].float(), record.v[0, head, :keys].float()  # (S, Dh) each
            products = q * k  # (S, Dh): what each channel of q and k adds to their score
            scores = products.sum(-1)  # (S,)
            scale = q.shape[-1] ** -0.5
            allowed = record.allowed[query, :keys] if record.allowed is not None else torch.ones(keys, dtype=torch.bool)
            names = self.label_names(ins, record)
            labels = self.labels(ins, shown)
            return {"layer": layer, "name": record.name, "kind": record.kind, "head": head, "query": query,
                    "query_label": labels[names["query_labels"]][query],
                    "key_labels": labels[names["key_labels"]][:keys], "dh": q.shape[-1], "scale": scale,
                    "q": q.tolist(), "k": k.tolist(), "qk": products.tolist(), "scores": scores.tolist(),
                    "scaled": (scores * scale).tolist(), "allowed": allowed.tolist(),
                    "weights": weights[head, query].tolist(), "v": v.tolist(),
                    "mixed": record.mixed[0, head, query].float().tolist(),
                    "shapes": {"q": shape("B, H, T, Dh", record.q), "k": shape("B, H, S, Dh", record.k),
                               "v": shape("B, H, S, Dh", record.v),
                               "scores": shape("B, H, T, S", record.weights),
                               "weights": shape("B, H, T, S", record.weights),
                               "mixed": shape("B, H, T, Dh", record.mixed)}}

    def generate(self, name: str, prompt: str, seed: int = 0) -> dict:
        """One more token after `prompt`, drawn as python -m multitx.sample draws (temperature 0.8, top 40),
        from a generator seeded by `seed` and the prompt's length: the same prompt gives the same token."""
        if not getattr(self.task, "writes", False):
            raise UserError(f"a {self.model(name).task} model reads its text at once, both ways; it does not write")
        with self.lock:
            run = self.model(name)
            if not prompt:
                raise UserError("the prompt is empty; type some text")
            context = run.model.config.context
            ids = torch.tensor([run.vocab.encode(prompt)[-context:]], device=self.device)  # (1, T)
            generator = torch.Generator(self.device).manual_seed(seed * 100_003 + len(prompt))
            with torch.no_grad():  # one forward pass: its last position's logits give the candidates and the draw
                logits = run.model(ids)[0][0, -1]  # (vocab,)
                token = int(sample_next(logits[None], temperature=0.8, top_k=40, generator=generator))
            return {"prompt": prompt + run.vocab.decode([token]), "token": run.vocab.label(token),
                    "p": float(logits.float().softmax(-1)[token]), "candidates": self.candidates(name, logits)}
