"""The shape trace: each stage of attention with its tensor's shape, letters named.

    tokens x                      (B, T, D)      = (1, 41, 128)
    Q = x·Wq, split into heads    (B, H, T, Dh)  = (1, 4, 41, 32)
    ...

One layer in full (the first self-attention, the decoder's in a captioner, and the
first cross-attention when there is one), then one line for every attention layer,
then the head.
"""

import torch

from multitx.engine.task import Inspection
from multitx.nn.trace import AttentionRecord

LETTERS = ("B batch, T tokens that ask (queries), S tokens that answer (keys and values), D width, "
           "H heads, Dh = D / H channels per head")


def shape(t) -> str:
    return "(" + ", ".join(str(n) for n in t.shape) + ")"


def mask_note(record: AttentionRecord) -> str:
    """What the mask of a self-attention layer lets through, read from the trace's `allowed` (T, S) and weights:
    causal, or a prefix-LM mask (the first p tokens see each other; every later one sees them and the tokens before
    it)."""
    t, s = record.weights.shape[-2:]
    if record.kind != "self" or t != s or t < 2:
        return ""
    allowed = record.allowed
    if allowed is not None:
        tril = torch.ones(t, s, dtype=torch.bool, device=allowed.device).tril()
        p = int(allowed[0].sum())  # the keys the first query sees: the prefix
        if p > 1 and torch.equal(allowed, tril | (torch.arange(s, device=allowed.device) < p)[None, :]):
            return f", prefix-LM mask: the first {p} see each other, then causal"
    if bool((record.weights[0, 0].triu(1) == 0).all()):
        return ", causal mask: no later token"
    return ""


def stages(record: AttentionRecord) -> list[tuple[str, str, str]]:
    """(stage, letters, shape) from a layer's input tokens to its output."""
    b, h, t, dh = record.q.shape
    s = record.k.shape[2]
    d = h * dh
    source = "memory m (the image's patch tokens)" if record.kind == "cross" else "the same tokens x"
    rows = [("tokens x (each token's vector)", "(B, T, D)", shape(record.x))]
    if record.memory is not None:
        rows.append(("memory m", "(B, S, D)", shape(record.memory)))
    rows += [
        ("Q = x·Wq, split into heads: what each token looks for", "(B, H, T, Dh)", shape(record.q)),
        (f"K = ·Wk from {source}: what each token offers", "(B, H, S, Dh)", shape(record.k)),
        (f"V = ·Wv from {source}: what each token passes on", "(B, H, S, Dh)", shape(record.v)),
        ("scores = Q·Kᵀ / √Dh: every query meets every key", "(B, H, T, S)", f"({b}, {h}, {t}, {s})"),
        ("weights = softmax(scores) over the keys" + mask_note(record), "(B, H, T, S)", shape(record.weights)),
        ("weighted values = weights·V: each query's mix", "(B, H, T, Dh)", shape(record.mixed)),
        ("heads joined side by side", "(B, T, D)", f"({b}, {t}, {d})"),
        ("output = joined·Wo", "(B, T, D)", shape(record.out)),
    ]
    return rows


def table(rows: list[tuple[str, str, str]]) -> list[str]:
    width = max(len(r[0]) for r in rows)
    return [f"  {name:<{width}}  {letters:<14} {'= ' + value if value else ''}".rstrip() for name, letters, value
            in rows]


def shape_trace(inspection: Inspection) -> str:
    trace = inspection.trace
    lines = [f"Shapes: {LETTERS}.", ""]
    for trunk in trace.trunks:
        lines.append(f"{trunk.name}: tokens in {shape(trunk.tokens_in)} -> tokens out {shape(trunk.tokens_out)}")
    lines.append("")
    for kind in ("self", "cross"):
        records = trace.layers(kind)
        if kind == "self":  # a captioner: its decoder's self-attention, where the words are
            records = [r for r in records if r.name.startswith("decoder")] or records
        if records:
            first = records[0]
            lines.append(f"One layer in full: {first.name} ({kind}-attention), layer {first.layer}")
            lines += table(stages(first))
            lines.append("")
    lines.append("Every attention layer: input -> Q, K, V -> weights -> output")
    for r in trace.attention:
        asks = r.q.shape[2]
        note = f"  (only the first {asks} of {r.x.shape[1]} tokens ask: their outputs alone are read)" \
            if asks < r.x.shape[1] else ""
        lines.append(f"  {r.name:<24} {r.kind:<5} x {shape(r.x)} -> q {shape(r.q)} k,v {shape(r.k)} -> "
                     f"weights {shape(r.weights)} -> out {shape(r.out)}{note}")
    if trace.logits is not None:
        last = trace.trunks[-1]
        lines += ["", f"head: tokens {shape(last.tokens_out)} -> logits {shape(trace.logits)}"
                  + (" (B, T, vocab)" if trace.logits.dim() == 3 else " (B, classes)")]
    return "\n".join(lines) + "\n"
