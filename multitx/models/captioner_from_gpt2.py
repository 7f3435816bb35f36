"""Starting the caption decoder from GPT-2: model.decoder_pretrained=hf:FOLDER.

The language side's converter (multitx.models.from_gpt2) turns a Hugging Face GPT-2 folder
into a multitx LanguageModel: a TextEmbedder, a Trunk and a head tied to the embedding, the
same three modules the captioner's decoder is made of, so their weights move over as they are:

    GPT-2                         captioner
    wte, wpe[:max_caption_len]    embed.token, embed.position   (captions use GPT-2's first positions)
    h.i (ln_1, attn, ln_2, mlp)   decoder.blocks.i (norm_attn, attn, norm_mlp, mlp)
    ln_f                          decoder.norm_out
    lm_head (tied to wte)         head (tied to embed.token)

How the decoder reads the image is what the fusion adds to GPT-2:

    cross   each block gains a cross-attention layer (norm_cross, cross) that GPT-2 never had.
            Its output projection starts at zero (weight and bias), so the block adds nothing
            for it and the captioner's logits are GPT-2's at step 0, whatever the image; the
            gradient still reaches that projection (its input is not zero), and from there
            the rest of the layer, so the decoder learns to look (Flamingo's zero-initialised
            gate does the same with a tanh gate at 0).
    prefix  nothing is added to GPT-2: the projected image tokens come before the words in its
            own self-attention, and the words keep GPT-2's positions 0, 1, ... (the image's
            tokens carry the encoder's positions, not GPT-2's).

The returned model's config describes what was built: GPT-2's width, depth, heads, vocabulary and
learned positions, not the YAML's decoder; the run's config.yaml records it, so `multitx.load`
rebuilds the same network from the checkpoint without the folder.
"""

from dataclasses import replace
from pathlib import Path

import torch

from multitx.errors import UserError
from multitx.models.captioner import Captioner
from multitx.models.from_gpt2 import gpt2_from_folder

PREFIX = "hf:"


def hf_spec(spec: str) -> str:
    """model.decoder_pretrained=hf:FOLDER -> FOLDER (or a hub name)."""
    if not str(spec).startswith(PREFIX) or len(str(spec)) == len(PREFIX):
        raise UserError(f"model.decoder_pretrained={spec}: write hf:FOLDER, a folder that transformers' "
                        f"GPT2LMHeadModel.save_pretrained wrote (with its tokenizer.json)")
    return str(spec)[len(PREFIX):]


def captioner_with_gpt2(model: Captioner, folder: Path, *, where: str = "model.decoder_pretrained") -> Captioner:
    """`model` with its decoder replaced by the GPT-2 in `folder`: a new Captioner whose encoder (patch tokenizer,
    encoder trunk) has `model`'s weights (a timm encoder stays) and whose decoder is GPT-2's, joined to the
    image as `model.config.fusion` says (cross: new zero-output cross-attention layers; prefix: a new
    modality projector)."""
    gpt2 = gpt2_from_folder(folder, where=where)
    g, c = gpt2.config, model.config
    if c.max_caption_len > g.context:
        raise UserError(f"model.max_caption_len={c.max_caption_len} is longer than the {g.context} positions of "
                        f"{where}; give at most {g.context}")
    built = replace(c, vocab_size=g.vocab_size, positions="learned",
                    decoder=replace(g.trunk, dropout=c.decoder.dropout, drop_path=c.decoder.drop_path))
    captioner = Captioner(built, tokenizer=model.tokenizer)  # the encoder's patch tokenizer, as it is
    captioner.encoder.load_state_dict(model.encoder.state_dict())
    decoder = {name.removeprefix("trunk."): tensor for name, tensor in gpt2.state_dict().items()
               if name.startswith("trunk.")}
    missing, unexpected = captioner.decoder.load_state_dict(decoder, strict=False)
    new = [name for name in missing if ".cross." not in name and ".norm_cross." not in name]
    if new or unexpected:  # the decoder is GPT-2's trunk plus cross-attention: nothing else may differ
        raise RuntimeError(f"GPT-2's trunk does not fit the caption decoder (missing {new}, unexpected {unexpected})")
    with torch.no_grad():
        captioner.embed.token.weight.copy_(gpt2.embed.token.weight)  # the head is tied to it
        captioner.embed.position.copy_(gpt2.embed.position[: c.max_caption_len])
        for block in captioner.decoder.blocks:
            if block.cross is not None:  # cross fusion: the new layer's output starts at zero
                torch.nn.init.zeros_(block.cross.proj.weight)
                if block.cross.proj.bias is not None:
                    torch.nn.init.zeros_(block.cross.proj.bias)
    return captioner

