"""multitx: one transformer trunk for text and images.

    tokens (B, T, D) from TextEmbedder or a PatchTokenizer -> Trunk -> a head
"""

from multitx.config.settings import section, setting
from multitx.data.captions.vocab import WordVocab
from multitx.data.images.datasets import ImageSet
from multitx.data.registry import CaptionData, DataSettings, ImageData, TextData, register_dataset
from multitx.data.text.tokenizers import TextTokenizer, register_text_tokenizer
from multitx.data.text.vocab import CharVocab
from multitx.engine.loggers import MetricLogger, register_logger
from multitx.engine.muon import Muon
from multitx.engine.task import Task, register_task
from multitx.errors import UserError
from multitx.loading import Loaded, load
from multitx.models.captioner import Captioner, CaptionerConfig
from multitx.models.from_timm import vit_from_timm
from multitx.models.language_model import LanguageModel, LanguageModelConfig
from multitx.models.vit import ViT, ViTConfig, build_vit
from multitx.nn import Attention, Block, KVCache, Trace, Trunk, TrunkConfig, trace
from multitx.nn.patches import ConvPatches, ConvStemPatches, LinearPatches, PatchTokenizer, register_tokenizer
from multitx.nn.readouts import ClassifierHead, LMHead
from multitx.nn.text_embedder import TextEmbedder

__version__ = "0.2.0"

__all__ = [
    "Attention", "Block", "CaptionData", "Captioner", "CaptionerConfig", "CharVocab", "ClassifierHead", "ConvPatches",
    "ConvStemPatches", "DataSettings", "ImageData", "ImageSet", "KVCache", "LMHead", "LanguageModel",
    "LanguageModelConfig", "LinearPatches", "Loaded", "MetricLogger", "Muon", "PatchTokenizer", "Task", "TextData",
    "TextEmbedder", "TextTokenizer", "Trace", "Trunk", "TrunkConfig", "UserError", "ViT", "ViTConfig", "WordVocab",
    "build_vit", "load", "register_dataset", "register_logger", "register_task", "register_text_tokenizer",
    "register_tokenizer", "section", "setting", "trace", "vit_from_timm",
]
