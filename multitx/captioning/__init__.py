"""Captioning: a patch encoder and a word decoder that cross-attends to it (task=caption)."""

from multitx.captioning.decoding import beam_search, caption_images, greedy
from multitx.captioning.model import Captioner, CaptionerConfig
from multitx.captioning.tokenizer import WordTokenizer

__all__ = ["Captioner", "CaptionerConfig", "WordTokenizer", "beam_search", "caption_images", "greedy"]
