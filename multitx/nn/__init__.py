from multitx.nn.attention import Attention
from multitx.nn.kv_cache import KVCache, LayerCache
from multitx.nn.positions import Rotary, sinusoidal_table
from multitx.nn.trace import AttentionRecord, Trace, trace
from multitx.nn.trunk import MLP, Block, Trunk, TrunkConfig, init_gpt2

__all__ = ["Attention", "AttentionRecord", "Block", "KVCache", "LayerCache", "MLP", "Rotary", "Trace", "Trunk",
           "TrunkConfig", "init_gpt2", "sinusoidal_table", "trace"]
