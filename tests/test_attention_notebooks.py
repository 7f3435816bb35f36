"""The attention teaching notebooks run from top to bottom (offline, on a CPU), each training its own tiny model.

Each notebook asserts its own steps (the char-LM walkthrough against multitx.trace, the ViT's accuracy,
the cross-attention weights by hand), so running it without an error is the check; the outputs are also
looked at for the lines and figures a reader is promised.
"""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

# notebook -> lines its outputs must contain
NOTEBOOKS = {
    "attention_charlm": ["the walkthrough matches the trace, step by step", "weights    (1, 4, 30, 30)"],
    "attention_vit": ["accuracy: train", "weights (1, 4, 1, 17)", "gives the same logits as the CLS-only"],
    "cross_attention_caption": ["cross-attention weights (B, H, T, S) = (1, 4,", "S = 16 patches",
                                "match the trace"],
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_attention_notebook_runs(name):
    path = REPO / "notebooks" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert all(not cell.outputs and cell.execution_count is None for cell in code), f"{path.name} is saved with outputs"

    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute()

    outputs = [o for cell in code for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    for line in NOTEBOOKS[name]:
        assert line in text, f"{path.name}: {line!r} not in its outputs"
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    assert figures >= 3, f"{path.name} showed {figures} figures"
