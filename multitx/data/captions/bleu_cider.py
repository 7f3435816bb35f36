"""Caption metrics: BLEU-4, CIDEr-D and exact match, in plain Python.

BLEU-4 and CIDEr-D give the figures of the COCO caption evaluation code
(pycocoevalcap 1.2's Bleu(4) and Cider(); tests/test_caption_metrics.py holds
them to it), with its details kept: BLEU's smoothing constants and 'closest'
reference length, CIDEr-D's document frequencies taken from the scored set.

Captions are compared as lower-case words without punctuation
(multitx.data.captions.vocab.normalize), in place of the Java PTB tokenizer
the COCO toolkit runs first.

  bleu4        corpus BLEU-4 (Papineni et al. 2002), closest reference length for the brevity penalty
  cider        CIDEr-D (Vedantam et al. 2015), document frequencies from this set's references, x10 as in COCO
  exact_match  share of images whose caption equals one of its references
"""

import math
from collections import Counter

from multitx.data.captions.vocab import normalize

N = 4  # both metrics use the n-grams of 1 to 4 words
# BLEU's smoothing, as in pycocoevalcap: a precision is (matches + TINY) / (n-grams + SMALL), so that a
# precision with no match is ~0 rather than 0 and one with no n-gram at all (captions under 4 words) is 1e-6.
TINY, SMALL = 1e-15, 1e-9
SIGMA = 6.0  # CIDEr-D's length penalty: exp(-delta^2 / (2 sigma^2)), delta = difference in caption length


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """hypotheses: one caption per image; references: the reference captions of each image."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} images")
    if not hypotheses:
        return {"bleu4": float("nan"), "cider": float("nan"), "exact_match": float("nan")}
    if not all(references):
        raise ValueError(f"image {[len(r) for r in references].index(0)} has no reference caption")
    hyps = [normalize(h) for h in hypotheses]
    refs = [[normalize(r) for r in rs] for rs in references]
    exact = sum(h in rs for h, rs in zip(hyps, refs, strict=True)) / len(hyps)
    hyps_words = [h.split() for h in hyps]
    refs_words = [[r.split() for r in rs] for rs in refs]
    return {"bleu4": bleu4(hyps_words, refs_words), "cider": cider_d(hyps_words, refs_words), "exact_match": exact}


def ngram_counts(words: list[str]) -> Counter:
    """How often each n-gram of 1 to N words occurs, keyed by tuples of words."""
    return Counter(tuple(words[i : i + n]) for n in range(1, N + 1) for i in range(len(words) - n + 1))


# BLEU-4


def closest_length(length: int, ref_lengths: list[int]) -> int:
    """The reference length nearest to `length`; of two equally near, the shorter (pycocoevalcap's 'closest')."""
    return min(ref_lengths, key=lambda r: (abs(r - length), r))


def clipped_matches(hyp: list[str], refs: list[list[str]]) -> list[int]:
    """Per n = 1..N, the hypothesis's n-grams found in a reference, each counted at most as often
    as it occurs in the one reference that has it most."""
    most_in_a_ref = Counter()
    for ref in refs:
        most_in_a_ref |= ngram_counts(ref)  # Counter | Counter: the larger count of each n-gram
    matches = [0] * N
    for gram, count in ngram_counts(hyp).items():
        matches[len(gram) - 1] += min(count, most_in_a_ref[gram])
    return matches


def bleu4(hyps: list[list[str]], refs: list[list[list[str]]]) -> float:
    """Corpus BLEU-4 = BP * (p1 p2 p3 p4)^(1/4), where p_n = clipped n-gram matches / hypothesis n-grams, both
    summed over all images, and BP = exp(1 - r/c) if c < r, else 1 (c: hypothesis words, r: the closest
    reference length of each image, both summed over all images)."""
    matches, grams = [0] * N, [0] * N
    hyp_length = ref_length = 0
    for hyp, rs in zip(hyps, refs, strict=True):
        for n, m in enumerate(clipped_matches(hyp, rs)):
            matches[n] += m
            grams[n] += max(0, len(hyp) - n)  # a caption of w words has w - n + 1 n-grams (n counted from 1)
        hyp_length += len(hyp)
        ref_length += closest_length(len(hyp), [len(r) for r in rs])
    product = 1.0
    for m, g in zip(matches, grams, strict=True):
        product *= (m + TINY) / (g + SMALL)
    score = product ** (1 / N)
    ratio = (hyp_length + TINY) / (ref_length + SMALL)  # c / r, smoothed as in pycocoevalcap (no 0 / 0)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score


# CIDEr-D


def document_frequency(refs_counts: list[list[Counter]]) -> Counter:
    """For each n-gram, the number of images with it in at least one of their references."""
    df = Counter()
    for counts in refs_counts:
        df.update(set().union(*counts))
    return df


def tf_idf(counts: Counter, df: Counter, log_images: float) -> tuple[list[dict], list[float]]:
    """Per n = 1..N, the caption's vector of n-gram weights, count * log(images / max(1, df)), and its norm.
    An n-gram in no reference counts as df 1: it weighs the most, though only in its caption's norm."""
    vectors = [{} for _ in range(N)]
    for gram, count in counts.items():
        vectors[len(gram) - 1][gram] = count * (log_images - math.log(max(1.0, df[gram])))
    return vectors, [math.sqrt(sum(w * w for w in v.values())) for v in vectors]


def clipped_cosine(hyp: dict, hyp_norm: float, ref: dict, ref_norm: float) -> float:
    """CIDEr-D's similarity: sum over n-grams of min(h, r) * r / (|h| |r|); clipping at the reference's
    weight keeps a caption from scoring by repeating the reference's words. 0 if a vector is all zeros."""
    if hyp_norm == 0 or ref_norm == 0:
        return 0.0
    return sum(min(w, ref.get(gram, 0.0)) * ref.get(gram, 0.0) for gram, w in hyp.items()) / (hyp_norm * ref_norm)


def length_penalty(hyp: list[str], ref: list[str]) -> float:
    """exp(-delta^2 / (2 sigma^2)), delta the difference in words. (pycocoevalcap counts 2-grams, words - 1:
    the same delta unless a caption is empty, and then the cosine it multiplies is 0.)"""
    return math.exp(-((len(hyp) - len(ref)) ** 2) / (2 * SIGMA**2))


def cider_d(hyps: list[list[str]], refs: list[list[list[str]]]) -> float:
    """CIDEr-D = mean over images of 10 / (N * references) * sum over references and n = 1..N of
    length_penalty * clipped_cosine of the n-gram tf-idf vectors, with idf = log(images / df) from the
    references of this set (so a set of one image scores 0)."""
    refs_counts = [[ngram_counts(r) for r in rs] for rs in refs]
    df = document_frequency(refs_counts)
    log_images = math.log(len(hyps))
    scores = []
    for hyp, rs, rs_counts in zip(hyps, refs, refs_counts, strict=True):
        hyp_vectors, hyp_norms = tf_idf(ngram_counts(hyp), df, log_images)
        total = 0.0
        for ref, ref_counts in zip(rs, rs_counts, strict=True):
            ref_vectors, ref_norms = tf_idf(ref_counts, df, log_images)
            cosines = map(clipped_cosine, hyp_vectors, hyp_norms, ref_vectors, ref_norms)
            total += sum(cosines) * length_penalty(hyp, ref)
        scores.append(10.0 * total / (N * len(rs)))
    return sum(scores) / len(scores)
