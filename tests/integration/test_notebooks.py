"""Executes every notebook in docs/notebooks with nbclient; any cell error fails the test.

Each notebook runs in its own temporary folder (its outputs land there), offline, on CPU. The notebooks are kept to
about two minutes each on two cores. The executed outputs are also checked for carriage-return progress-bar spam and
for tracebacks printed without failing the cell.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel the notebooks run in; dev extra)
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 480


def _stream_text(notebook) -> list[tuple[int, str]]:
    return [(i, out.get("text", "")) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "stream"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell failed\n{err}")

    streams = _stream_text(notebook)
    spam = [(i, text[:200]) for i, text in streams if re.search(r"\r(?!\n)", text)]  # \r\n: a shell's line end
    assert not spam, f"{path.name}: carriage-return progress output in cells {spam}"
    tracebacks = [i for i, text in streams if "Traceback (most recent call last)" in text]
    assert not tracebacks, f"{path.name}: tracebacks printed in cells {tracebacks}"
    assert all(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")
    assert os.listdir(tmp_path), "the notebook wrote nothing into its working folder"
