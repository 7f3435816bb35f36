"""Load a run and let its task run the model once under multitx.trace (Task.inspect).

The Inspection that comes back holds what went in, what came out, and the trace of
every attention layer on the way; multitx.inspect draws it.
"""

from dataclasses import replace
from pathlib import Path

from multitx.engine.task import Inspection
from multitx.loading import load, task_class


def inspect_run(run_dir: Path, *, which: str = "best", prompt: str | None = None, image: str | None = None,
                device="cpu", trust_code: bool = False, new_tokens: int = 48) -> Inspection:
    """The Inspection of a run folder of any task that lists "inspect" among its tools: its model on `prompt`
    (a text model, which may write up to `new_tokens` more) or `image` (an image model), or on a sample of its
    own validation data."""
    run = load(Path(run_dir), which, device=device, trust_code=trust_code, tool="multitx.inspect")
    inspection = task_class(run.config, trust_code).inspect(run, prompt=prompt, image=image,
                                                            new_tokens=new_tokens, device=device)
    return replace(inspection, task=run.task)
