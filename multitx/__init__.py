"""multitx: one transformer trunk for text and images.

    tokens (B, T, D) from TextEmbedder or a PatchTokenizer -> Trunk -> a head
"""

from multitx.errors import UserError
from multitx.heads import ClassifierHead, LMHead
from multitx.models.language_model import LanguageModel, LanguageModelConfig
from multitx.nn import Attention, Block, KVCache, Trunk
from multitx.tasks.base import Task
from multitx.text.embedder import TextEmbedder
from multitx.text.tokenizer import CharTokenizer

__version__ = "0.1.0"

__all__ = [
    "Attention", "Block", "CharTokenizer", "ClassifierHead", "KVCache", "LMHead", "LanguageModel",
    "LanguageModelConfig", "Task", "TextEmbedder", "Trunk", "UserError",
]
