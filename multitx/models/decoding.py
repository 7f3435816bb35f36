"""Writing, one token at a time with a KV cache: sampling the next token (the char LM,
`sample_next`), and greedy and beam search for captions.

The image is encoded once. At the first step the decoder reads the image into the
cache: with cross-attention (model.fusion=cross) each cross-attention layer turns
the memory into keys and values and keeps them; with prefix fusion the image's N
tokens pass through the decoder's self-attention once, before <bos>, and fill the
cache's first N positions. After that only the newest word passes through the
decoder, reading its own earlier keys and values (and the image's) from the cache.
"""

import os
from dataclasses import dataclass

import torch

from multitx.errors import UserError
from multitx.models.captioner import Captioner


def free_memory(device) -> int:
    """Bytes the decoding may still allocate: the GPU's free memory, or the machine's available memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def refuse_beyond_memory(needed: int, asked: str, device) -> None:
    """One line, before anything is allocated, for a decoding request whose tensors alone would take more than
    half of the memory there is."""
    free = free_memory(device)
    if needed > free // 2:
        raise UserError(f"{asked} needs about {needed / 2**30:.1f} GB for its tensors alone, more than half of the "
                        f"{free / 2**30:.1f} GB free here; ask for less")


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, vocab) -> one sampled id per row (B, 1). temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def greedy(model: Captioner, images: torch.Tensor, *, bos: int, eos: int, max_len: int | None = None,
           use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The most likely next word at every step.

    images (B, 3, H, W) in [0, 1] -> (ids (B, L): the words written, <eos>
    included and <eos> repeated after it; logits (B, L, vocab) at each step).
    use_cache=False recomputes the whole prefix at each step (slow, for checks).
    """
    max_len = min(max_len or model.config.max_caption_len, model.config.max_caption_len)
    memory = model.encode(images)  # (B, N, D)
    batch = images.shape[0]
    cache = model.new_cache(batch) if use_cache else None
    ids = torch.full((batch, 1), bos, dtype=torch.long, device=images.device)  # (B, 1): <bos>
    done = torch.zeros(batch, dtype=torch.bool, device=images.device)
    steps = []
    for _ in range(max_len - 1):
        step_input = ids[:, -1:] if use_cache else ids  # cached: the newest word only
        logits = model.decode(step_input, memory, cache=cache)[:, -1]  # (B, vocab)
        steps.append(logits)
        next_id = logits.argmax(dim=-1).masked_fill(done, eos)  # (B,)
        ids = torch.cat([ids, next_id[:, None]], dim=1)
        done |= next_id == eos
        if done.all():
            break
    return ids[:, 1:], torch.stack(steps, dim=1)


@dataclass
class Beam:
    ids: list[int]  # the words, <eos> excluded
    score: float  # log-probability / length penalty
    log_prob: float


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ((5 + |Y|) / 6) ** alpha (Wu et al. 2016): alpha 0 ranks by log-probability
    alone, which favours short captions; larger alpha favours longer ones."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: Captioner, images: torch.Tensor, *, bos: int, eos: int, beam: int = 3, alpha: float = 0.6,
                max_len: int | None = None) -> list[Beam]:
    """The best of `beam` partial captions kept at each step, for each image.

    All B * K beams decode as one batch; after each step the K best extensions
    of each image survive and the cache rows are reordered to follow their
    parents (KVCache.reorder). A beam that has written <eos> is finished: it
    carries its score forward unchanged. At the end beams are ranked by
    log-probability / length_penalty(length, alpha). With beam=1 this is greedy.
    """
    max_len = min(max_len or model.config.max_caption_len, model.config.max_caption_len)
    B, K = images.shape[0], beam
    c = model.config
    # Per beam: its copy of the image's tokens, its KV cache (the image's N positions first, with prefix
    # fusion) and its scores over the vocabulary.
    cached = model.image_prefix + max_len
    per_beam = model.tokenizer.num_tokens * c.encoder.dim + 2 * c.decoder.layers * cached * c.decoder.dim \
        + 2 * c.vocab_size
    refuse_beyond_memory(4 * B * K * per_beam, f"beam={beam}", images.device)
    memory = model.encode(images).repeat_interleave(K, dim=0)  # (B*K, N, D): each image once per beam
    cache = model.new_cache(B * K)
    device = images.device
    ids = torch.full((B * K, 1), bos, dtype=torch.long, device=device)  # (B*K, 1)
    # Only the first beam of each image is live at the start, so that the first
    # step's K best words are K different words, not K copies of the best one.
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    lengths = torch.zeros(B, K, device=device)  # words written, <eos> included
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    for _ in range(max_len - 1):
        logits = model.decode(ids[:, -1:], memory, cache=cache)[:, -1]  # (B*K, vocab)
        log_probs = logits.float().log_softmax(dim=-1).view(B, K, -1)  # (B, K, vocab)
        vocab = log_probs.shape[-1]
        # A finished beam has one continuation, <eos> again, at no cost.
        log_probs = torch.where(finished[..., None], torch.full_like(log_probs, float("-inf")), log_probs)
        log_probs[..., eos] = torch.where(finished, 0.0, log_probs[..., eos])
        candidates = (scores[..., None] + log_probs).view(B, K * vocab)  # (B, K*vocab)
        scores, flat = candidates.topk(K, dim=-1)  # (B, K) each
        parent, word = flat // vocab, flat % vocab  # which beam each survivor extends, and with what
        rows = (parent + torch.arange(B, device=device)[:, None] * K).view(-1)  # (B*K,) rows of the old batch
        cache.reorder(rows)
        lengths = lengths.gather(1, parent) + (~finished.gather(1, parent)).float()
        finished = finished.gather(1, parent) | (word == eos)
        ids = torch.cat([ids[rows], word.view(-1, 1)], dim=1)
        if finished.all():
            break
    ranked = scores / length_penalty(lengths, alpha)  # (B, K)
    best = ranked.argmax(dim=-1)  # (B,)
    out = []
    for b in range(B):
        k = int(best[b])
        words = ids[b * K + k, 1:].tolist()
        words = words[: words.index(eos)] if eos in words else words
        out.append(Beam(words, float(ranked[b, k]), float(scores[b, k])))
    return out


def caption_images(model: Captioner, images: torch.Tensor, *, bos: int, eos: int, beam: int = 1,
                   alpha: float = 0.6, max_len: int | None = None) -> list[list[int]]:
    """Word ids (without <bos>/<eos>) of one caption per image: greedy for beam 1, else beam search."""
    if beam <= 1:
        ids, _ = greedy(model, images, bos=bos, eos=eos, max_len=max_len)
        rows = ids.tolist()
        return [row[: row.index(eos)] if eos in row else row for row in rows]
    return [b.ids for b in beam_search(model, images, bos=bos, eos=eos, beam=beam, alpha=alpha, max_len=max_len)]
