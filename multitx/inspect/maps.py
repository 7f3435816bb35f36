"""Attention maps as pictures (matplotlib, Agg): each returns a Figure.

  char LM:    one heatmap a layer and head, the characters as tick labels
  ViT:        a head's CLS-to-patch attention laid over the image; attention rollout
  captioner:  for one written word, its cross-attention over the patches laid over
              the image (mean over heads, then each head), beside its self-attention
              over the words before it; with prefix fusion both are parts of one
              self-attention row: the image tokens' part over the image, the words' beside
Token labels are drawn with fonts.label_fonts(), so they show in any script.
"""

import functools

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from multitx.inspect.fonts import label_fonts  # noqa: E402
from multitx.nn.trace import AttentionRecord  # noqa: E402


def labelled(draw):
    """Build the figure with the label fonts: its text takes the family list when made."""
    @functools.wraps(draw)
    def drawn(*args, **kwargs) -> Figure:
        with matplotlib.rc_context({"font.family": label_fonts()}):
            return draw(*args, **kwargs)
    return drawn


@labelled
def heatmap(weights: np.ndarray, queries: list[str], keys: list[str], title: str) -> Figure:
    """weights (T, S): row i is how token i spreads its attention over the keys."""
    t, s = weights.shape
    size = min(max(3.0, 0.16 * max(t, s) + 1.5), 12.0)
    fig = Figure(figsize=(size + 0.8, size))
    ax = fig.add_subplot()
    shown = ax.imshow(weights, cmap="viridis", vmin=0, vmax=max(float(weights.max()), 1e-6))
    ax.set_xticks(range(s), keys, fontsize=7 if s <= 64 else 5, rotation=90)
    ax.set_yticks(range(t), queries, fontsize=7 if t <= 64 else 5)
    ax.set_xlabel("key: the token attended to")
    ax.set_ylabel("query: the token asking")
    ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    return fig


def overlay(ax, image: np.ndarray, attention: np.ndarray, title: str) -> None:
    """attention (h, w) over the patch grid, stretched over image (H, W, C) and laid on it."""
    height, width = image.shape[:2]
    ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
    ax.imshow(attention, cmap="inferno", alpha=0.55, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
              interpolation="nearest", vmin=0, vmax=max(float(attention.max()), 1e-6))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def image_token_labels(grid: tuple[int, int], fused: tuple[int, int]) -> list[str]:
    """The image tokens a prefix-fusion decoder reads (a fused h x w grid, row by row): "patch (r,c)" when each
    is one patch of `grid`, "patches (r0-r1,c0-c1)" when the pixel shuffle merged an s x s block into each."""
    s = grid[0] // fused[0]
    if s == 1:
        return [f"patch ({r},{c})" for r in range(fused[0]) for c in range(fused[1])]
    return [f"patches ({r * s}-{r * s + s - 1},{c * s}-{c * s + s - 1})" for r in range(fused[0])
            for c in range(fused[1])]


def patch_attention(weights: torch.Tensor, query: int, prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """(H, T, S) weights -> (H, h, w): what query `query` gives each patch, laid out as the grid."""
    return weights[:, query, prefix:].reshape(-1, *grid).cpu().numpy()


def cls_maps(record: AttentionRecord, image: np.ndarray, prefix: int, grid, title: str) -> Figure:
    """Each head's attention from the CLS token (query 0) to the patches of the image, in one layer."""
    maps = patch_attention(record.weights[0], 0, prefix, grid)  # (H, h, w)
    heads = len(maps)
    fig = Figure(figsize=(2.4 * (heads + 1), 2.8))
    ax = fig.add_subplot(1, heads + 1, 1)
    overlay(ax, image, maps.mean(0), "mean over heads")
    for h in range(heads):
        overlay(fig.add_subplot(1, heads + 1, h + 2), image, maps[h], f"head {h}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def rollout(records: list[AttentionRecord], prefix: int, grid) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): how much of the CLS token's final state flows
    from each patch, through every layer. Each layer's head-mean weights A, with the residual
    path counted as 0.5 A + 0.5 I and rows renormalised, multiplied from the first layer up.
    The ViT's last layer computes the CLS row alone, and the CLS row is all rollout needs."""
    flow = None  # (S, S): how much of each token at this depth comes from each input token
    for record in records:
        a = record.weights[0].mean(0).double()  # (T, S): head mean; T = S, or T = 1 in the last layer
        t, s = a.shape
        a = 0.5 * a + 0.5 * torch.eye(s, dtype=a.dtype, device=a.device)[:t]
        a = a / a.sum(-1, keepdim=True)
        flow = a if flow is None else a @ flow
    row = flow[0] if prefix else flow.mean(0)  # the CLS row; without CLS (pool=mean), every token's on average
    return row[prefix:].reshape(grid).float().cpu().numpy()


def rollout_figure(records: list[AttentionRecord], image: np.ndarray, prefix: int, grid) -> Figure:
    fig = Figure(figsize=(5.2, 2.8))
    overlay(fig.add_subplot(1, 2, 1), image, np.zeros(grid), "the image")
    overlay(fig.add_subplot(1, 2, 2), image, rollout(records, prefix, grid), f"rollout over {len(records)} layers")
    fig.tight_layout()
    return fig


def word_maps(cross: AttentionRecord, self_attention: AttentionRecord, position: int, image: np.ndarray,
              prefix: int, grid, reads: list[str], word: str) -> Figure:
    """The word written at `position`: where it looked in the image (cross-attention, mean over heads, each
    head), and how it weighed the words before it (self-attention, mean over heads)."""
    maps = patch_attention(cross.weights[0], position, prefix, grid)  # (H, h, w)
    before = self_attention.weights[0, :, position, : position + 1].mean(0).cpu().numpy()  # (position + 1,)
    return word_figure(maps, before, image, reads[: position + 1], f"“{word}”: mean over heads",
                       "self-attention over the words",
                       f"writing “{word}”: {cross.name} (cross) and {self_attention.name} (self)")


def prefix_word_maps(record: AttentionRecord, position: int, image: np.ndarray, grid, reads: list[str],
                     word: str) -> Figure:
    """Prefix fusion: the word written at `position` is query N + position of the decoder's one self-attention,
    whose keys are the image's N tokens (an h x w grid) and then the words. One row, summing to 1: its image
    part laid over the picture (mean over heads, each head), its words part beside, and the share of each."""
    n = grid[0] * grid[1]
    row = record.weights[0, :, n + position]  # (H, S): S = N + words
    maps = row[:, :n].reshape(-1, *grid).cpu().numpy()  # (H, h, w)
    before = row[:, n : n + position + 1].mean(0).cpu().numpy()  # (position + 1,)
    on_image = float(row[:, :n].sum(-1).mean())
    return word_figure(maps, before, image, reads[: position + 1], f"“{word}”: mean over heads",
                       "self-attention over the words",
                       f"writing “{word}”: {record.name}, one self-attention: {on_image:.0%} on the image's {n} "
                       f"tokens, {1 - on_image:.0%} on the words")


@labelled
def word_figure(maps: np.ndarray, before: np.ndarray, image: np.ndarray, reads: list[str], mean_title: str,
                words_title: str, title: str) -> Figure:
    """maps (H, h, w) over the image (their mean, then each head) and before (n,) as bars beside, one per word."""
    heads = len(maps)
    fig = Figure(figsize=(2.3 * (heads + 2), 2.9))
    overlay(fig.add_subplot(1, heads + 2, 1), image, maps.mean(0), mean_title)
    for h in range(heads):
        overlay(fig.add_subplot(1, heads + 2, h + 2), image, maps[h], f"head {h}")
    ax = fig.add_subplot(1, heads + 2, heads + 2)
    ax.barh(range(len(before)), before, color="tab:blue")
    ax.set_yticks(range(len(before)), reads, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(words_title, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
