"""GPT-2's weights into multitx's LanguageModel, and back: a Hugging Face GPT-2 folder
(config.json, model.safetensors), read and written as data (JSON and safetensors: nothing
in it runs), beside the model it builds.

    model = gpt2_from_folder("gpt2/")          # LanguageModel with GPT-2's shape and weights
    save_gpt2(model, "out/")                   # config.json + model.safetensors for transformers

GPT-2's shape in multitx's terms: learned positions, GELU by its tanh approximation
(gelu_tanh), biases in every Linear and LayerNorm, LayerNorm epsilon 1e-5, the head tied to
the token embedding, pre-norm blocks and a final LayerNorm, as multitx's trunk already is.
Its Conv1D layers keep their weights as (in, out): each is transposed into a Linear's (out, in).
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from multitx.errors import UserError
from multitx.models.language_model import LanguageModel, LanguageModelConfig
from multitx.nn.trunk import TrunkConfig

ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
               "gelu": "gelu"}  # GPT-2's config name -> multitx's
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # (in, out)
BLOCK = {"ln_1": "norm_attn", "attn.c_attn": "attn.to_qkv", "attn.c_proj": "attn.proj", "ln_2": "norm_mlp",
         "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}  # GPT-2's block part -> multitx's


def gpt2_config(config: dict, where: str = "config.json") -> LanguageModelConfig:
    """multitx's LanguageModelConfig for a Hugging Face GPT-2 config.json; one line for another architecture
    or a GPT-2 option multitx's model does not have."""
    kind = config.get("model_type")
    if kind != "gpt2":
        named = ", ".join(config.get("architectures") or []) or kind
        raise UserError(f"{where} describes a {named} model, not GPT-2 (model_type {kind!r}); model.pretrained=hf: "
                        f"takes a GPT-2 folder (GPT2LMHeadModel)")
    activation = config.get("activation_function", "gelu_new")
    unsupported = [name for name, value in (("activation_function", activation not in ACTIVATIONS),
                                             ("scale_attn_by_inverse_layer_idx", config.get(
                                                 "scale_attn_by_inverse_layer_idx", False)),
                                             ("reorder_and_upcast_attn", config.get("reorder_and_upcast_attn", False)),
                                             ("scale_attn_weights", not config.get("scale_attn_weights", True)))
                   if value]
    if unsupported:
        raise UserError(f"{where} sets {', '.join(unsupported)} to what multitx's model does not do; it builds GPT-2 "
                        f"as OpenAI released it")
    dim = int(config["n_embd"])
    hidden = config.get("n_inner") or 4 * dim
    return LanguageModelConfig(vocab_size=int(config["vocab_size"]), context=int(config["n_positions"]),
                               positions="learned", tie_head=True,
                               trunk=TrunkConfig(dim=dim, layers=int(config["n_layer"]), heads=int(config["n_head"]),
                                                 mlp_ratio=hidden / dim, activation=ACTIVATIONS[activation],
                                                 bias=True, norm_eps=float(config.get("layer_norm_epsilon", 1e-5))))


def multitx_name(name: str) -> str | None:
    """GPT-2's name of a tensor -> multitx's LanguageModel's; None for one multitx does not keep (the causal
    mask buffers of old checkpoints, the tied lm_head)."""
    name = name.removeprefix("transformer.")
    if name in ("lm_head.weight",) or name.endswith((".attn.bias", ".attn.masked_bias")):
        return None
    fixed = {"wte.weight": "embed.token.weight", "wpe.weight": "embed.position", "ln_f.weight": "trunk.norm_out.weight",
             "ln_f.bias": "trunk.norm_out.bias"}
    if name in fixed:
        return fixed[name]
    parts = name.split(".")
    if parts[0] != "h":
        return name  # unknown: reported as such by the caller
    layer, rest = parts[1], ".".join(parts[2:])
    for theirs, ours in BLOCK.items():
        if rest.startswith(theirs + "."):
            return f"trunk.blocks.{layer}.{ours}{rest[len(theirs):]}"
    return name


def gpt2_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT-2's tensors under multitx's names, Conv1D weights transposed into Linear's."""
    state = {}
    for name, tensor in tensors.items():
        ours = multitx_name(name)
        if ours is not None:
            state[ours] = tensor.t().contiguous() if name.endswith(CONV1D) else tensor
    return state


def gpt2_from_folder(folder, *, where: str = "model.pretrained") -> LanguageModel:
    """A LanguageModel with the shape and weights of the Hugging Face GPT-2 in `folder` (config.json and
    model.safetensors); one line for a folder that is not one, or whose shapes do not match its config."""
    folder = Path(folder).expanduser()
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise UserError(f"{where}: {folder} has no {name}; give a folder that transformers' "
                            f"GPT2LMHeadModel.save_pretrained wrote (config.json, model.safetensors)")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "model.safetensors"))
    except Exception as err:  # noqa: BLE001 - json and safetensors raise many kinds
        raise UserError(f"{where}: {folder} cannot be read as a GPT-2 folder ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:160]})") from None
    model = LanguageModel(gpt2_config(config, str(folder / "config.json")))
    expected = model.state_dict()
    state = gpt2_state(tensors)
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state) - {"head.proj.weight"})  # the head is the tied embedding
    if unknown or missing:
        raise UserError(f"{where}: {folder}/model.safetensors does not hold GPT-2's tensors (unknown: "
                        f"{', '.join(unknown[:3]) or 'none'}; missing: {', '.join(missing[:3]) or 'none'})")
    for theirs, tensor in tensors.items():  # in GPT-2's names and layout, as the user's files hold them
        ours = multitx_name(theirs)
        if ours is None:
            continue
        want = tuple(expected[ours].shape)
        want = want[::-1] if theirs.endswith(CONV1D) else want
        if tuple(tensor.shape) != want:
            raise UserError(f"{where}: {folder}/model.safetensors has {theirs} of shape {tuple(tensor.shape)}, but its "
                            f"config.json makes it {want}; the two files are of different models")
    model.load_state_dict(state, strict=False)  # head.proj.weight is embed.token.weight: loaded with it
    return model


def why_not_gpt2(config: LanguageModelConfig) -> list[str]:
    """What keeps a LanguageModel from being saved as GPT-2 (empty: nothing)."""
    t = config.trunk
    reasons = [("positions", config.positions != "learned", "learned"), ("trunk.bias", not t.bias, "true"),
               ("trunk.activation", t.activation not in ("gelu", "gelu_tanh"), "gelu_tanh"),
               ("tie_head", not config.tie_head, "true"), ("value_embeds", config.value_embeds, "false"),
               ("logit_softcap", config.logit_softcap > 0, "0"), ("trunk.qk_norm", t.qk_norm, "false"),
               ("causal", not config.causal, "true")]
    return [f"model.{key}={value}" for key, wrong, value in reasons if wrong]


def save_gpt2(model: LanguageModel, folder) -> Path:
    """Write `model` as a Hugging Face GPT-2 folder (config.json, model.safetensors) that transformers'
    GPT2LMHeadModel.from_pretrained loads with the same logits; one line if its shape is not GPT-2's."""
    config = model.config
    reasons = why_not_gpt2(config)
    if reasons:
        raise UserError(f"this model is not GPT-2's shape; GPT-2 needs {', '.join(reasons)}")
    t = config.trunk
    hf_config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
                 "n_positions": config.context, "n_embd": t.dim, "n_layer": t.layers, "n_head": t.heads,
                 "n_inner": t.hidden, "layer_norm_epsilon": t.norm_eps,
                 "activation_function": "gelu_new" if t.activation == "gelu_tanh" else "gelu",
                 "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "tie_word_embeddings": True,
                 "bos_token_id": config.vocab_size - 1, "eos_token_id": config.vocab_size - 1}
    ours_to_theirs = {multitx_name(n): n for n in gpt2_names(t.layers)}
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "head.proj.weight":
            continue  # tied: GPT-2 keeps the embedding only
        theirs = ours_to_theirs[name]
        tensor = tensor.detach().float().cpu()
        tensors[theirs] = (tensor.t() if theirs.endswith(CONV1D) else tensor).contiguous()
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config, indent=1), encoding="utf-8")
    return folder


def gpt2_names(layers: int) -> list[str]:
    names = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"]
    for i in range(layers):
        names += [f"transformer.h.{i}.{part}.{kind}" for part in BLOCK for kind in ("weight", "bias")]
    return names


def gpt2_folder(spec: str, key: str = "model.pretrained") -> Path:
    """KEY=hf:FOLDER -> FOLDER; hf:NAME, when no such folder is here, downloads the model's config.json,
    model.safetensors and tokenizer.json from the Hugging Face hub once (network needed)."""
    name = spec.removeprefix("hf:")
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name, allow_patterns=["config.json", "model.safetensors",
                                                                    "tokenizer.json"]))
    except Exception as err:  # noqa: BLE001 - no network, no such model: many kinds
        raise UserError(f"{key}={spec}: {folder} is not a folder here, and {name} could not be fetched "
                        f"from the Hugging Face hub ({type(err).__name__}); give a local GPT-2 folder, "
                        f"hf:path/to/gpt2") from None
