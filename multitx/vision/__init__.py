"""The vision half: patch tokenizers (the public extension point), image datasets held as
uint8 tensors, augmentation, resumable batches, and timm ViT weights."""

from multitx.vision.patches import (
    TOKENIZERS,
    ConvPatches,
    ConvStemPatches,
    LinearPatches,
    PatchTokenizer,
    build_tokenizer,
    register_tokenizer,
    sincos_2d,
)

__all__ = ["TOKENIZERS", "ConvPatches", "ConvStemPatches", "LinearPatches", "PatchTokenizer", "build_tokenizer",
           "register_tokenizer", "sincos_2d"]
