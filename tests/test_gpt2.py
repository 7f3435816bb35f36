"""GPT-2's weights in multitx's LanguageModel and back, against `transformers` itself: a randomly initialised
GPT2LMHeadModel built and saved by the test (nothing is downloaded), its logits matched to 1e-4 both ways; then
fine-tuned from the command line (model.pretrained=hf:FOLDER) with its own tokenizer.json, sampled, inspected and
exported."""

import json

import pytest
import torch

import multitx
from multitx.data.text.bpe import BytePairTokenizer
from multitx.errors import UserError
from multitx.models.from_gpt2 import gpt2_from_folder, save_gpt2
from tests.conftest import run_here, torch_threads

transformers = pytest.importorskip("transformers")  # in the test extra; skipped only where it is not installed
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread each, no fight for the cores
VOCAB = 300
TEXT = "".join(f"{who}: {verb} the {thing}, good {who.lower()}!\n" for who in ("ROMEO", "JULIET", "NURSE")
               for verb in ("speak", "hold", "take") for thing in ("sword", "rose", "light")) * 30


def random_gpt2(folder, **shape):
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{"vocab_size": VOCAB, "n_positions": 32, "n_embd": 48, "n_layer": 2,
                                        "n_head": 4, "bos_token_id": 0, "eos_token_id": 0, **shape})
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    reference = random_gpt2(folder)
    tokenizer = BytePairTokenizer.train(TEXT, {"vocab_size": VOCAB, "special_tokens": ["<|endoftext|>"]})
    assert tokenizer.vocab_size == VOCAB
    tokenizer.tokenizer.save(str(folder / "tokenizer.json"))
    (folder.parent / "corpus.txt").write_text(TEXT, encoding="utf-8")
    return folder, reference


def logits_gap(ours, theirs, vocab=VOCAB, length=20) -> float:
    ids = torch.randint(0, vocab, (3, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ours(ids)[0] - theirs(ids).logits).abs().max().item()


def test_a_gpt2_folder_loads_with_the_logits_of_transformers(gpt2_folder):
    folder, reference = gpt2_folder
    model = gpt2_from_folder(folder).eval()
    c = model.config
    assert (c.positions, c.trunk.activation, c.trunk.bias, c.tie_head, c.context) == ("learned", "gelu_tanh", True,
                                                                                         True, 32)
    assert logits_gap(model, reference) <= 1e-4


def test_a_multitx_model_of_gpt2_shape_saves_as_a_folder_transformers_loads(gpt2_folder, tmp_path):
    folder, _ = gpt2_folder
    model = gpt2_from_folder(folder).eval()
    with torch.no_grad():
        for p in model.parameters():  # not the weights it was loaded with
            p.add_(0.01 * torch.randn_like(p))
    save_gpt2(model, tmp_path / "out")
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert logits_gap(model, loaded) <= 1e-4


def test_the_names_of_older_gpt2_checkpoints_load_too(gpt2_folder, tmp_path):
    """The hub's original gpt2 files name tensors without 'transformer.' and keep the causal mask as attn.bias."""
    from safetensors.torch import load_file, save_file

    folder, reference = gpt2_folder
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(folder / "model.safetensors").items()}
    tensors |= {f"h.{i}.attn.bias": torch.ones(1, 1, 32, 32) for i in range(2)}
    (tmp_path / "old").mkdir()
    save_file(tensors, tmp_path / "old" / "model.safetensors")
    (tmp_path / "old" / "config.json").write_text((folder / "config.json").read_text())
    assert logits_gap(gpt2_from_folder(tmp_path / "old").eval(), reference) <= 1e-4


def test_another_architecture_or_mismatched_shapes_are_one_line(gpt2_folder, tmp_path):
    folder, _ = gpt2_folder
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (other / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="describes a LlamaForCausalLM model, not GPT-2"):
        gpt2_from_folder(other)
    wider = tmp_path / "wider"
    wider.mkdir()
    (wider / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), "n_embd": 64}))
    (wider / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match=r"has transformer.h.0.attn.c_attn.bias of shape \(144,\), but its "
                                        r"config.json makes it \(192,\); the two files are of different models"):
        gpt2_from_folder(wider)
    with pytest.raises(UserError, match="has no config.json; give a folder that transformers"):
        gpt2_from_folder(tmp_path)


def test_a_model_not_of_gpt2_shape_is_refused_with_what_to_change(tmp_path):
    model = multitx.LanguageModel(multitx.LanguageModelConfig(vocab_size=50, context=16, positions="rotary",
                                                              trunk=multitx.TrunkConfig(dim=32, layers=1, heads=2)))
    with pytest.raises(UserError, match=r"GPT-2 needs model.positions=learned, model.trunk.bias=true$"):
        save_gpt2(model, tmp_path / "out")


@pytest.fixture(scope="module")
def finetuned(gpt2_folder):
    folder, _ = gpt2_folder
    run_dir = folder.parent / "run"
    with torch_threads(1):
        result = run_here("multitx.train", "task=lm", "data=textfile", f"data.path={folder.parent / 'corpus.txt'}",
                          f"data.tokenizer_file={folder / 'tokenizer.json'}", f"model.pretrained=hf:{folder}",
                          f"run_dir={run_dir}", f"data_dir={folder.parent / 'datasets'}", "steps=3", "eval_every=3",
                          "eval_batches=1", "batch_size=2", "show_tokens=5", "progress=false", "plots=false",
                          "device=cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_fine_tuning_starts_from_the_gpt2_weights_and_records_its_shape(finetuned, gpt2_folder):
    folder, reference = gpt2_folder
    config = (finetuned / "config.yaml").read_text()
    assert f"pretrained: hf:{folder}" in config and "activation: gelu_tanh" in config
    run = multitx.load(finetuned)
    gap = logits_gap(run.model, reference)
    assert 0 < gap < 5, "three steps moved the weights a little from GPT-2's"


def test_the_fine_tuned_model_samples_inspects_and_exports_both_ways(finetuned, tmp_path):
    sampled = run_here("multitx.sample", f"run_dir={finetuned}", "prompt=ROMEO:", "max_new_tokens=5", "device=cpu")
    assert sampled.returncode == 0 and sampled.stdout.startswith("ROMEO:"), sampled.stderr[-2000:]
    inspected = run_here("multitx.inspect", f"run_dir={finetuned}", "prompt=JULIET: hold", "max_new_tokens=2",
                         f"out={tmp_path / 'inspect'}", "device=cpu")
    assert inspected.returncode == 0 and (tmp_path / "inspect" / "index.html").is_file(), inspected.stderr[-2000:]
    exported = run_here("multitx.export", f"run_dir={finetuned}", "format=pt2", f"out={tmp_path / 'lm.pt2'}")
    assert exported.returncode == 0, exported.stderr[-2000:]
    as_hf = run_here("multitx.export", f"run_dir={finetuned}", "format=hf", f"out={tmp_path / 'hf'}")
    assert as_hf.returncode == 0, as_hf.stderr[-2000:]
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert logits_gap(multitx.load(finetuned).model, loaded) <= 1e-4
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "hf" / "tokenizer.json"))
    assert tokenizer.decode(tokenizer.encode("ROMEO: speak")) == "ROMEO: speak"


def test_a_tokenizer_of_another_size_than_the_model_is_one_line(gpt2_folder, tmp_path):
    folder, _ = gpt2_folder
    result = run_here("multitx.train", "task=lm", "data=textfile", f"data.path={folder.parent / 'corpus.txt'}",
                      "data.vocab_size=280", f"model.pretrained=hf:{folder}", f"run_dir={tmp_path / 'run'}",
                      f"data_dir={tmp_path / 'datasets'}", "steps=1", "device=cpu")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: model.pretrained=hf:{folder} has 300 tokens and the run's tokenizer 280: give the model's own "
        f"tokenizer, data.tokenizer=bpe data.tokenizer_file={folder / 'tokenizer.json'}"]
