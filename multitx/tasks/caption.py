"""task=caption: an image encoder and a text decoder that reads it (model.fusion: cross-attention, or the
image's tokens before the words in one causal trunk).

Training is teacher forcing: each batch holds `batch_size` images with
`captions_per_image` of their captions; the encoder runs once per image, and
the decoder reads <bos> w1 .. wn of each caption and is scored on
w1 .. wn <eos>, padding masked out. Each evaluation also writes a caption for
each of up to `eval_images` val images (greedy, or beam search with
eval_beam > 1) and scores them against all their references: BLEU-4, CIDEr,
exact match. The vocabulary is saved as RUN_DIR/vocab.json.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from multitx.config.rules import NON_NEGATIVE, POSITIVE, Names, Whole
from multitx.config.settings import from_settings, plain, section, setting, settings_of
from multitx.data.captions.batches import CaptionBatches
from multitx.data.captions.bleu_cider import caption_scores
from multitx.data.captions.datasets import CaptionSplit, load_split
from multitx.data.captions.tokens import learn_tokens, load_tokens, tokens_from_state
from multitx.data.captions.vocab import normalize
from multitx.data.images.images import EncodedImage, decode_image, described
from multitx.data.images.splits import hold_out_images
from multitx.data.workers import data_workers
from multitx.engine.runtime import Runtime
from multitx.engine.task import NEUTRAL, RIGHT, Examples, Inspection, Task, register_task
from multitx.engine.validation import data_class
from multitx.errors import UserError
from multitx.models.captioner import PARTS, Captioner, CaptionerConfig, scored_tokens
from multitx.models.captioner_from_gpt2 import captioner_with_gpt2, hf_spec
from multitx.models.captioner_from_timm import captioner_from_timm
from multitx.models.decoding import caption_images
from multitx.models.from_gpt2 import gpt2_folder
from multitx.nn.trace import trace

DECODE_CHUNK = 256  # images captioned at once when evaluating


@dataclass
class PartScales:
    """Each part's learning rate as a share of lr (and of muon.lr for its matrices): Captioner.parts."""

    encoder: float = setting(1.0, POSITIVE, "patch tokenizer and encoder trunk")
    projector: float = setting(1.0, POSITIVE, "the modality projector (prefix) or the bridge (cross)")
    cross: float = setting(1.0, POSITIVE, "the decoder's cross-attention layers (fusion=cross)")
    decoder: float = setting(1.0, POSITIVE, "the decoder's embeddings, blocks and final norm (GPT-2's, when "
                             "pretrained)")


@dataclass
class CaptionSettings:
    captions_per_image: int = setting(3, Whole(min=1), "captions decoded against one encoding of each image")
    eval_images: int | None = setting(500, Whole(min=0, null=True),
                                      "val images captioned and scored at each evaluation (null: all)")
    eval_beam: int = setting(1, Whole(min=1), "1: greedy; more: beam search with this many beams")
    length_penalty: float = setting(0.6, NON_NEGATIVE, "GNMT alpha for beam search: higher favours longer captions")
    show_captions: int = setting(4, Whole(min=0), "val captions printed at each evaluation")
    freeze: list = setting([], Names(what="a part: encoder, projector, cross or decoder", empty=True),
                           "parts whose weights do not train (a pretrained encoder or decoder kept as it is)")
    lr_scale: PartScales = section(PartScales, "each part's learning rate, as a share of lr")
    model: dict = section(dict, "the captioner (models/captioner.py)", schema=CaptionerConfig)


@register_task("caption")
class CaptionTask(Task):
    name = "caption"
    unit = "captions"
    reads = "captions"
    settings = CaptionSettings
    artifact_files = ("vocab.json",)
    watch = ("bleu4", "max")
    called, recipe = "captioner", "task=caption"
    tools = ("caption", "evaluate", "inspect", "explore")

    @classmethod
    def check(cls, cfg: dict) -> None:
        super().check(cfg)
        frozen = frozen_parts(cfg.get("freeze"))
        unknown = [part for part in frozen if part not in PARTS]
        if unknown:
            raise UserError(f"freeze={unknown[0]} is not a part of the captioner; its parts are {', '.join(PARTS)}")
        fusion = cfg.get("model", {}).get("fusion", "cross")
        if "cross" in frozen and fusion == "prefix":
            raise UserError("freeze=cross: model.fusion=prefix has no cross-attention layers; leave cross out")
        if cfg.get("model", {}).get("decoder_pretrained") and cfg.get("data", {}).get("tokenizer", "words") != "bpe":
            raise UserError("model.decoder_pretrained writes captions in GPT-2's own tokens: add data.tokenizer=bpe "
                            "(its tokenizer.json is read from the folder)")

    def __init__(self, cfg: DictConfig, runtime: Runtime):
        super().__init__(cfg, runtime)
        size = cfg.model.image_size
        self.train_split = load_split(cfg.data, "train", size, cfg.data_dir)
        if data_class(cfg).separate_val:  # e.g. shapes: val and test hold compositions training never shows
            self.val_split = load_split(cfg.data, "val", size, cfg.data_dir)
        else:  # COCO, Flickr: validation images held out of training; the dataset's val split is the test
            kept, held = hold_out_images(len(self.train_split), cfg.data.val_fraction, cfg.data.split_seed)
            self.train_split, self.val_split = subset(self.train_split, kept), subset(self.train_split, held)
        self.test_split_cache: CaptionSplit | None = None
        saved = Path(cfg.run_dir) / "vocab.json"
        if cfg.resume and saved.exists():  # a resumed run keeps the vocabulary its weights were trained on
            self.vocab = load_tokens(saved)
        else:
            captions = (c for caps in self.train_split.captions for c in caps)
            self.vocab = learn_tokens(cfg.data, captions, self.tokenizer_file())

    def tokenizer_file(self) -> Path | None:
        """data.tokenizer_file, or with model.decoder_pretrained the decoder folder's own tokenizer.json."""
        given = self.cfg.data.get("tokenizer_file")
        if given:
            return Path(str(given)).expanduser()
        spec = self.cfg.model.get("decoder_pretrained")
        if not spec:
            return None
        found = self.decoder_folder() / "tokenizer.json"
        if not found.is_file():
            raise UserError(f"model.decoder_pretrained={spec}: the folder has no tokenizer.json; give the decoder's "
                            f"tokenizer with data.tokenizer_file=PATH")
        return found

    def decoder_folder(self) -> Path:
        """The GPT-2 folder model.decoder_pretrained=hf:FOLDER names (or fetched once, for a hub name)."""
        spec = str(self.cfg.model.decoder_pretrained)
        hf_spec(spec)  # hf:FOLDER, or one line saying so
        return gpt2_folder(spec, key="model.decoder_pretrained")

    @property
    def test_split(self) -> CaptionSplit:
        """The test split, loaded when first asked for: the final test evaluation and multitx.evaluate."""
        if self.test_split_cache is None:
            self.test_split_cache = load_split(self.cfg.data, "test", self.cfg.model.image_size, self.cfg.data_dir)
        return self.test_split_cache

    def artifacts(self) -> dict[str, dict]:
        return {"vocab.json": self.vocab.state()}

    @classmethod
    def build(cls, settings, artifacts) -> tuple[Captioner, dict]:
        vocab = tokens_from_state(artifacts["vocab.json"])
        settings = {**plain(settings), "encoder_pretrained": None, "decoder_pretrained": None}  # from the checkpoint
        config = from_settings(CaptionerConfig, settings, vocab_size=vocab.vocab_size, pad_id=vocab.pad_id,
                               eos_id=vocab.eos_id, unk_id=vocab.unk_id)
        return Captioner(config), {"vocab": vocab}

    def build_model(self) -> Captioner:
        """The YAML's captioner, its encoder from timm (model.encoder_pretrained) and its decoder from GPT-2
        (model.decoder_pretrained) when asked; the parts named in freeze= do not train."""
        model, _ = self.build(self.cfg.model, self.artifacts())  # the YAML's shape, the vocabulary's size
        encoder, decoder = self.cfg.model.get("encoder_pretrained"), self.cfg.model.get("decoder_pretrained")
        if encoder:
            model = captioner_from_timm(replace(model.config, encoder_pretrained=encoder))
        if decoder:
            model = captioner_with_gpt2(model, self.decoder_folder(), where=f"model.decoder_pretrained={decoder}")
            if model.config.vocab_size != self.vocab.vocab_size:
                raise UserError(f"model.decoder_pretrained={decoder} has {model.config.vocab_size} tokens and the "
                                f"caption tokenizer {self.vocab.vocab_size}: leave data.tokenizer_file out, so that "
                                f"the decoder's own tokenizer.json is used")
            model.config.decoder_pretrained = str(decoder)
        if encoder or decoder:
            with open_dict(self.cfg):  # config.yaml records what was built: timm's encoder, GPT-2's decoder
                self.cfg.model = settings_of(model.config)
        for part in frozen_parts(self.cfg.freeze):
            for _, param in model.parts()[part]:
                param.requires_grad_(False)
        return model

    def lr_scales(self, model: Captioner) -> dict[int, float]:
        """lr x lr_scale.PART for each part's parameters."""
        return {id(param): float(self.cfg.lr_scale[part]) for part, named in model.parts().items()
                for _, param in named}

    def train_batches(self) -> CaptionBatches:
        # Under DDP every process draws the same global batch and keeps its own slice of it; data.workers
        # processes read its images (decoding them: data.cache=lazy), pinned for the copy to a GPU.
        cuda = self.runtime.device.type == "cuda"
        return CaptionBatches(self.train_split, self.vocab, self.cfg.batch_size, self.cfg.model.max_caption_len,
                              seed=self.cfg.seed, captions_per_image=self.cfg.captions_per_image,
                              rank=self.runtime.rank, world_size=self.runtime.world_size,
                              workers=data_workers(self.cfg.data.get("workers", "auto"), cuda), pin_memory=cuda)

    def train_items(self) -> int:
        return len(self.train_split)  # images: each brings captions_per_image captions a step

    def loss(self, model, batch) -> torch.Tensor:
        images = batch["images"].float() / 255  # (B, 3, H, W) in [0, 1]
        return model(images, batch["ids"])[1]

    def items_in(self, batch) -> int:
        return batch["ids"].shape[0] * batch["ids"].shape[1]  # captions

    def scored_in(self, batch) -> int:
        # The loss is a mean per real token, and captions differ in length: DDP weighs processes by this.
        return scored_tokens(batch["ids"], self.vocab.eos_id, self.vocab.pad_id)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Teacher-forced val loss over eval_batches batches (the same ones every time),
        then BLEU-4, CIDEr and exact match of captions written for up to eval_images val images."""
        batches = CaptionBatches(self.val_split, self.vocab, min(self.cfg.batch_size, len(self.val_split)),
                                 self.cfg.model.max_caption_len, seed=self.cfg.seed,
                                 captions_per_image=self.cfg.captions_per_image)
        losses = []
        for _ in range(self.cfg.eval_batches):
            with self.runtime.autocast():
                losses.append(self.loss(model, self.runtime.to_device(next(batches))).float())
        metrics = {"val_loss": torch.stack(losses).mean().item()}
        metrics.update(self.score(model, self.val_split, limit=self.cfg.eval_images)[0])
        return metrics

    def test(self, model) -> dict[str, float]:
        """BLEU-4, CIDEr and exact match of captions written for every test image."""
        return {f"test_{k}": v for k, v in self.score(model, self.test_split)[0].items()}

    def report(self, model, name: str, out_dir: Path) -> dict:
        """The scores of every image of a split, and OUT_DIR/captions_SPLIT.png: eight of them with their captions."""
        split = {"val": self.val_split, "test": self.test_split}[name]
        metrics, written = self.score(model, split)
        from multitx.engine.plots import image_grid, save

        shown = min(8, len(split))
        figure = out_dir / f"captions_{name}.png"
        save(image_grid(split.images[:shown].permute(0, 2, 3, 1).numpy(), written[:shown], [NEUTRAL] * shown,
                        f"{self.cfg.task.name}, {name} split: caption written (reference beneath)",
                        notes=[f"reference: {refs[0]}" for refs in split.captions[:shown]]), figure)
        return {**metrics, "images": len(split), "captions_png": str(figure),
                "examples": [{"image": n, "written": w, "references": r}
                             for n, w, r in zip(split.names[:shown], written, split.captions, strict=False)]}

    @torch.no_grad()
    def score(self, model, split: CaptionSplit, *, limit: int | None = None, beam: int | None = None):
        """Caption the first `limit` images of a split; (metrics, captions written)."""
        n = len(split) if not limit else min(limit, len(split))
        captions = self.caption(model, split.images[:n], beam=beam)
        return caption_scores(captions, split.captions[:n]), captions

    @torch.no_grad()
    def caption(self, model, images, *, beam: int | None = None) -> list[str]:
        """(N, 3, H, W) uint8 images -> one caption each."""
        beam = self.cfg.eval_beam if beam is None else beam
        out = []
        for start in range(0, len(images), DECODE_CHUNK):
            chunk = images[start : start + DECODE_CHUNK].to(self.runtime.device).float() / 255  # (b, 3, H, W)
            with self.runtime.autocast():
                ids = caption_images(model, chunk, bos=self.vocab.bos_id, eos=self.vocab.eos_id, beam=beam,
                                     alpha=self.cfg.length_penalty)
            out.extend(self.vocab.decode(row) for row in ids)
        return out

    @torch.no_grad()
    def show(self, model) -> str:
        n = min(self.cfg.show_captions, len(self.val_split))
        if n <= 0:
            return ""
        lines = []
        for name, written, refs in zip(self.val_split.names[:n], self.caption(model, self.val_split.images[:n]),
                                       self.val_split.captions[:n], strict=True):
            lines.append(f"  {name}: {written}  (reference: {refs[0]})")
        return "\n".join(lines)

    @torch.no_grad()
    def examples(self, model, n: int = 8) -> Examples | None:
        """The first n val images, each with the caption written for it above and its first reference
        beneath; green when the caption is one of the references (as exact_match counts), black otherwise."""
        if len(self.val_split) == 0:
            return None
        images = self.val_split.images[:n]  # (n, 3, H, W) uint8
        written, refs = self.caption(model, images), self.val_split.captions[:n]
        return Examples(images=images.permute(0, 2, 3, 1).numpy(), titles=written,  # (n, H, W, 3)
                        heading="caption written (reference beneath)",
                        colours=[RIGHT if normalize(w) in {normalize(x) for x in r} else NEUTRAL
                                 for w, r in zip(written, refs, strict=True)],
                        notes=[f"reference: {r[0]}" for r in refs])

    @classmethod
    def inspect(cls, run, *, prompt: str | None, image: str | None, new_tokens: int, device) -> Inspection:
        """The model captioning `image` (or the first validation image of the run), then reading its own caption
        again, teacher-forced, under the trace: query j writes word j + 1 (with prefix fusion, the decoder's
        query N + j, after the image's N tokens)."""
        if prompt is not None:
            raise UserError(f"prompt= is for charlm runs; a {run.task} run takes image=PATH")
        model, vocab, cfg = run.model, run.vocab, run.config
        size = model.config.image_size
        if image:
            pixels = decode_image(image if isinstance(image, EncodedImage) else Path(image), size)  # (3, H, W) uint8
            source = described(image)
        else:
            split = load_split(cfg.data, "val", size, cfg.data_dir)
            pixels, source = split.images[0], f"the first validation image of the run ({split.names[0]})"
        x = pixels[None].to(device).float() / 255  # (1, 3, H, W)
        with torch.no_grad():
            words = caption_images(model, x, bos=vocab.bos_id, eos=vocab.eos_id, beam=1)[0]
            ids = torch.tensor([[vocab.bos_id, *words, vocab.eos_id]], device=device)  # (1, n + 2)
            with trace(model) as recorded:
                model(x, ids)
        reads = ["<bos>"] + [vocab.label(i) for i in words]  # what the decoder reads
        writes = [vocab.label(i) for i in words] + ["<eos>"]  # what each position writes
        tok = model.tokenizer
        fused = model.projector.grid if getattr(model, "prefix_fusion", False) else None  # prefix: (h/s, w/s)
        return Inspection("caption", run.checkpoint, source, writes, reads, vocab.decode(words), recorded, model,
                          image=pixels.permute(1, 2, 0).numpy(), grid=tok.grid, prefix=tok.num_prefix_tokens,
                          shown_words=writes, fused_grid=fused)


def subset(split: CaptionSplit, indices) -> CaptionSplit:
    """The images `indices` (ascending) of a split, with their captions and names."""
    rows = [int(i) for i in indices]
    return CaptionSplit(split.images[indices], [split.captions[i] for i in rows], [split.names[i] for i in rows])


def frozen_parts(freeze) -> list[str]:
    """freeze=encoder or freeze=[encoder,decoder] -> the parts' names."""
    return [freeze] if isinstance(freeze, str) else [str(part) for part in freeze or []]
