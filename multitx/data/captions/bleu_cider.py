"""Caption metrics: BLEU-4 and CIDEr-D from the COCO caption evaluation code
(PyPI `pycocoevalcap`, whose Bleu and Cider scorers are pure Python), and
exact match.

Captions are compared as lower-case words without punctuation
(multitx.data.captions.vocab.normalize), in place of the Java PTB tokenizer
the COCO toolkit runs first; the scorers themselves are the COCO ones.

  bleu4        corpus BLEU-4 (Papineni et al. 2002), closest reference length for the brevity penalty
  cider        CIDEr-D (Vedantam et al. 2015), document frequencies from this set's references, x10 as in COCO
  exact_match  share of images whose caption equals one of its references
"""

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from multitx.data.captions.vocab import normalize


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """hypotheses: one caption per image; references: the reference captions of each image."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} images")
    if not hypotheses:
        return {"bleu4": float("nan"), "cider": float("nan"), "exact_match": float("nan")}
    res = {i: [normalize(h)] for i, h in enumerate(hypotheses)}
    gts = {i: [normalize(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    exact = sum(res[i][0] in gts[i] for i in res) / len(res)
    return {"bleu4": float(bleu[3]), "cider": float(cider), "exact_match": float(exact)}
