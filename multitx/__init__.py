"""multitx: one transformer trunk for text and images.

    tokens (B, T, D) from TextEmbedder or a PatchTokenizer -> Trunk -> a head
"""

from multitx.captioning.model import Captioner, CaptionerConfig
from multitx.engine.muon import Muon
from multitx.errors import UserError
from multitx.heads import ClassifierHead, LMHead
from multitx.models.language_model import LanguageModel, LanguageModelConfig
from multitx.models.vit import ViT, build_vit
from multitx.nn import Attention, Block, KVCache, Trace, Trunk, trace
from multitx.tasks.base import Task
from multitx.text.embedder import TextEmbedder
from multitx.text.tokenizer import CharTokenizer
from multitx.vision import ConvPatches, ConvStemPatches, LinearPatches, PatchTokenizer, register_tokenizer
from multitx.vision.from_timm import vit_from_timm

__version__ = "0.1.0"

__all__ = [
    "Attention", "Block", "Captioner", "CaptionerConfig", "CharTokenizer", "ClassifierHead", "ConvPatches",
    "ConvStemPatches", "KVCache", "LMHead", "LanguageModel", "LanguageModelConfig", "LinearPatches", "Muon",
    "PatchTokenizer", "Task", "TextEmbedder", "Trace", "Trunk", "UserError", "ViT", "build_vit", "register_tokenizer",
    "trace", "vit_from_timm",
]
