"""The custom-tokenizer notebook runs from top to bottom (offline, on a CPU)."""


import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO


def test_custom_patch_tokenizer_notebook_runs(tmp_path):
    path = REPO / "notebooks" / "custom_patch_tokenizer.ipynb"
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert "grid (7, 7) tokens (8, 50, 64)" in outputs
    assert "not divisible by patch size" in outputs
    assert "test accuracy after 40 steps" in outputs
