"""task=charlm: a character-level GPT trained on random windows of a text: the language model of
tasks/lm.py with data.tokenizer=char, its recipe and results its own (config/task/charlm.yaml)."""

from dataclasses import dataclass

from multitx.config.rules import Whole
from multitx.config.settings import setting
from multitx.engine.task import register_task
from multitx.errors import UserError
from multitx.tasks.lm import LanguageModelSettings, LanguageModelTask


@dataclass
class CharLMSettings(LanguageModelSettings):
    show_tokens: int = setting(200, Whole(min=0), "characters sampled at each evaluation (0: none)")


@register_task("charlm")
class CharLMTask(LanguageModelTask):
    name = "charlm"
    settings = CharLMSettings
    called, recipe = "char LM", "task=charlm"

    @classmethod
    def check(cls, cfg: dict) -> None:
        super().check(cfg)
        tokenizer = (cfg.get("data") or {}).get("tokenizer", "char")
        if tokenizer != "char":
            raise UserError(f"task=charlm reads characters; for data.tokenizer={tokenizer} use task=lm "
                            f"(the same model on any tokenizer's tokens)")
