"""python -m multitx.export run_dir=DIR [format=onnx|pt2] [checkpoint=best|latest|PATH] [out=FILE]
       [trust_code=false] [debug=false]

Exports the model of a trained ViT run (task=vit_*) or language model run (task=lm, charlm), to run
without multitx:

  format=onnx  RUN_DIR/model.onnx, for onnxruntime and friends (needs the onnx and onnxscript packages)
  format=pt2   RUN_DIR/model.pt2, a torch.export program: torch.export.load(FILE).module()(inputs)
  format=hf    RUN_DIR/hf/, a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer.json)
               for transformers, from a language model of GPT-2's shape (model.pretrained=hf:..., or
               learned positions, gelu_tanh, biases, a tied head, no QK-norm)

  ViT      images (B, C, H, W) float32, normalised   -> logits (B, classes)
  char LM  ids (B, T) int64, 1 <= T <= model.context  -> logits (B, T, vocab); logits[:, -1] score the next char

B (any) and T are dynamic. Beside the model, FILE.json holds what a user needs to feed it: a ViT's class
names, image size, channels, mean and std; a char LM's characters (id i is chars[i]) and context.
The export runs on the CPU in fp32, and the written file is run once more, on two batch sizes, against
the PyTorch model before the command says it is done (ONNX: when onnxruntime is installed).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from multitx import __version__
from multitx.cli import RunArgs, parse_args, run_cli
from multitx.config.paths import check_folder
from multitx.config.rules import Choice, Text
from multitx.config.settings import setting
from multitx.engine import checkpoint
from multitx.engine.task import task_for_tool
from multitx.errors import UserError
from multitx.files import atomic_write_bytes
from multitx.loading import load, locate, task_class


@dataclass
class ExportArgs(RunArgs):  # no device=: exported on the CPU, in fp32
    format: str = setting("onnx", Choice(options=("onnx", "pt2", "hf")),
                          "onnx | pt2 (torch.export) | hf (a Hugging Face GPT-2 folder, for language models)")
    out: str = setting("", Text(), "the file to write (hf: the folder); empty: RUN_DIR/model.FORMAT (hf: RUN_DIR/hf)")
TOOL = "multitx.export"
TOLERANCE = 1e-4  # the largest |exported - PyTorch| logit difference the check accepts, relative to max(1, |logit|)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 240 else line[:237] + "..."


def capture(module: nn.Module, example: torch.Tensor, dynamic: dict, what: str, fmt: str):
    """torch.export's program of `module`, with the batch (and a char LM's length) dynamic. Strict
    (TorchDynamo) capture first: it keeps a `len(tensor)` symbolic where the non-strict one fixes it."""
    failures = []
    for strict in (True, False):
        try:
            with torch.no_grad():
                return torch.export.export(module, (example,), dynamic_shapes=dynamic, strict=strict)
        except Exception as err:  # noqa: BLE001 - torch.export raises many kinds
            failures.append(err)
    other = "format=pt2 needs the same capture" if fmt == "onnx" else "format=onnx needs the same capture"
    raise UserError(f"torch.export could not capture {what} with a dynamic batch "
                    f"({type(failures[0]).__name__}: {first_line(failures[0])}); {other}, so neither format "
                    f"can export it as it is; debug=true shows the traceback") from failures[0]


def write_onnx(program, example: torch.Tensor, name: str, out: Path, what: str) -> None:
    try:
        import onnx  # noqa: F401 - torch.onnx's exporter needs both
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UserError(f"format=onnx needs the onnx and onnxscript packages ({err.name} is not installed): "
                        f"pip install onnx onnxscript, or export with format=pt2") from None
    try:
        onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=[name],
                                         output_names=["logits"], verbose=False)
        inputs = onnx_program.model.graph.inputs[0].shape
        names = {inputs[0]: "batch", **({inputs[1]: "tokens"} if name == "ids" and len(inputs) > 1 else {})}
        onnx_program.rename_axes({dim: new for dim, new in names.items() if not isinstance(dim, int)})
        onnx_program.save(out)
    except Exception as err:  # noqa: BLE001 - the exporter raises many kinds
        raise UserError(f"the ONNX exporter (torch.onnx.export, dynamo=True) could not translate {what} "
                        f"({type(err).__name__}: {first_line(err)}); format=pt2 saves the torch.export program "
                        f"instead") from err


def difference(fmt: str, out: Path, module: nn.Module, inputs: list[torch.Tensor]) -> float | None:
    """The largest |exported - PyTorch| logit difference over `inputs`, relative to max(1, |logit|);
    None where the exported file cannot be run here (ONNX without onnxruntime)."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        run = lambda x: torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])  # noqa: E731
    else:
        loaded = torch.export.load(out).module()
        run = lambda x: loaded(x)  # noqa: E731
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            try:
                got = run(x)
            except Exception as err:  # noqa: BLE001 - onnxruntime and torch.export raise many kinds
                out.unlink(missing_ok=True)
                runner = "onnxruntime" if fmt == "onnx" else "torch.export.load(FILE).module()"
                raise UserError(f"{runner} could not run the exported model on input {tuple(x.shape)} "
                                f"({type(err).__name__}: {first_line(err)}), so it was deleted; try format="
                                f"{'pt2' if fmt == 'onnx' else 'onnx'}") from err
            want = module(x)
            if got.shape != want.shape:
                return math.inf
            worst = max(worst, ((got - want).abs().max() / want.abs().max().clamp_min(1.0)).item())
    return worst


def output_path(out, fmt: str, run_dir: Path) -> Path:
    out = Path(str(out)).expanduser() if out else run_dir / f"model.{fmt}"
    if out.is_dir():
        raise UserError(f"out={out} is a folder; give a file, e.g. out={out / ('model.' + fmt)}")
    check_folder("out", out.parent, must_exist=False)
    return out


def export(run_dir, fmt: str = "onnx", which: str = "best", *, out=None, trust_code: bool = False) -> dict:
    """Export the model of a ViT or char LM run to `out` (default RUN_DIR/model.FORMAT) and write
    OUT.json beside it; returns what was written and how closely the exported model matches."""
    path = Path(run_dir)
    if (path / "config.yaml").is_file():  # the run's task first: another task's run is refused before its checkpoints
        task_for_tool(checkpoint.run_config(path, None, TOOL, trust_code=trust_code), TOOL, path, verb="exports")
    run_folder = locate(path, which)[0]  # RUN_DIR, also when run_dir= names one of its checkpoint folders
    out = output_path(out, fmt, run_folder)
    run = load(path, which, device="cpu", trust_code=trust_code, tool=TOOL)
    run.model.float().eval()
    module, name, example, dynamic, about, checks, holds = task_class(run.config, trust_code).exportable(run)
    what = f"the {run.task} model of {run.checkpoint}"
    program = capture(module, example, dynamic, what, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        write_onnx(program, example, name, out, what)
    else:
        torch.export.save(program, out)
    gap = difference(fmt, out, module, checks)
    if gap is not None and not gap <= TOLERANCE:
        out.unlink(missing_ok=True)
        raise UserError(f"the exported {fmt} model's logits differ from PyTorch's by {gap:.3g} (more than "
                        f"{TOLERANCE:g}) on batches of 1 and 3, so it was deleted; try format="
                        f"{'pt2' if fmt == 'onnx' else 'onnx'}")
    about = {"format": fmt, "file": out.name, "task": run.task, "checkpoint": str(run.checkpoint),
             "multitx_version": __version__, "torch_version": torch.__version__.split("+")[0], **about}
    sidecar = out.with_name(out.name + ".json")
    atomic_write_bytes(sidecar, (json.dumps(about, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    return {"model": out, "json": sidecar, "difference": gap, "about": about, "holds": holds}


def export_hf(run_dir, which: str = "best", *, out=None, trust_code: bool = False) -> tuple[Path, str]:
    """A language model run's model as a Hugging Face GPT-2 folder (default RUN_DIR/hf): (the folder, what it holds)."""
    path = Path(run_dir)
    folder = Path(str(out)).expanduser() if out else locate(path, which)[0] / "hf"
    if folder.exists() and not folder.is_dir():
        raise UserError(f"out={folder} is a file; format=hf writes a folder")
    check_folder("out", folder, must_exist=False)
    run = load(path, which, device="cpu", trust_code=trust_code, tool=TOOL)
    run.model.float().eval()
    return folder, task_class(run.config, trust_code).save_hf(run, folder)


def main(argv: list[str]) -> None:
    args = parse_args(argv, ExportArgs, __doc__)
    if args["format"] == "hf":
        folder, holds = export_hf(Path(str(args["run_dir"])), str(args["checkpoint"]), out=str(args["out"]) or None,
                                  trust_code=args["trust_code"])
        print(f"wrote {folder} ({holds}): transformers.GPT2LMHeadModel.from_pretrained({str(folder)!r}); checked: "
              f"read back, its logits within 1e-4 of the model's")
        return
    done = export(Path(str(args["run_dir"])), str(args["format"]), str(args["checkpoint"]),
                  out=str(args["out"]) or None, trust_code=args["trust_code"])
    about, gap = done["about"], done["difference"]
    shape = lambda s: "(" + ", ".join(str(d) for d in s) + ")"  # noqa: E731
    print(f"wrote {done['model']} ({about['format']}, {done['model'].stat().st_size / 1e6:.2f} MB): "
          f"{about['input']['name']} {shape(about['input']['shape'])} {about['input']['dtype']} -> "
          f"logits {shape(about['output']['shape'])}")
    print(f"wrote {done['json']} ({done['holds']})")
    print("checked: onnxruntime is not installed, so the ONNX file was not run" if gap is None else
          f"checked: max |exported - PyTorch| = {gap:.2g} on batches of 1 and 3")


if __name__ == "__main__":
    run_cli(main)
