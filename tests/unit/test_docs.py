"""The docs site: every page in nav, a strict mkdocs build, runnable code blocks run, notebooks committed clean.

Runnable blocks: a fenced ``python`` block directly preceded by ``<!-- runnable -->`` (blank lines between are
allowed) is executed on its own, in a fresh namespace, with a temporary folder as working directory, under a time
limit. ``<!-- runnable fixture=NAME -->`` first prepares that folder with ``FIXTURES[NAME]`` (e.g. a finished run for
the report example). The convention is described in docs/site.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
NOTEBOOKS = sorted((DOCS / "notebooks").glob("*.ipynb"))
BLOCK_TIME_LIMIT_S = 60

_MARKER = re.compile(r"^<!--\s*runnable(?:\s+fixture=(?P<fixture>[\w-]+))?\s*-->\s*$")
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    """A runnable code block: where it is, its source and the fixture it needs."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    fixture: str | None

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def extract_runnable(text: str, path: Path) -> list[Block]:
    """The marked blocks of one markdown text; a marker not followed by a python fence is an error."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i].strip())
        if not marker:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = _FENCE.match(lines[j].strip()) if j < len(lines) else None
        if fence is None or fence.group("lang") != "python":
            raise ValueError(f"{path.name}:{i + 1}: '<!-- runnable -->' must be followed by a ```python block.")
        indent = len(lines[j]) - len(lines[j].lstrip())
        end = j + 1
        while end < len(lines) and not lines[end].strip().startswith(fence.group("fence")):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.name}:{j + 1}: unclosed code block.")
        code = "\n".join(line[indent:] for line in lines[j + 1:end]) + "\n"
        blocks.append(Block(path, j + 1, code, marker.group("fixture")))
        i = end + 1
    return blocks


def _doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _all_runnable() -> list[Block]:
    return [block for page in _doc_pages() for block in extract_runnable(page.read_text(encoding="utf-8"), page)]


# ------------------------------------------------------------------------------------------------- fixtures
def _finished_run(cwd: Path) -> None:
    """``out/trainer_state.json`` of a finished 8-step run with eval loss / mae (docs/report.md's example)."""
    from transformers import TrainerState

    history: list[dict] = []
    for step in range(1, 9):
        history.append({"loss": 20.0 - step, "grad_norm": 5.0 / step, "learning_rate": 1e-3 * (1 - step / 8),
                        "epoch": step / 4, "step": step})
        if step % 2 == 0:
            history.append({"eval_loss": 16.0 - step, "eval_mae": 4.0 - step / 10, "eval_runtime": 0.001,
                            "eval_samples_per_second": 14608.0, "eval_steps_per_second": 1826.0,
                            "epoch": step / 4, "step": step})
    history.append({"train_runtime": 0.05, "train_samples_per_second": 1280.0, "train_steps_per_second": 160.0,
                    "total_flos": 0.0, "train_loss": 16.0, "epoch": 2.0, "step": 8})
    state = TrainerState(global_step=8, max_steps=8, num_train_epochs=2, epoch=2.0, log_history=history)
    (cwd / "out").mkdir()
    state.save_to_json(str(cwd / "out" / "trainer_state.json"))


FIXTURES: dict[str, Callable[[Path], None]] = {"finished_run": _finished_run}


# ------------------------------------------------------------------------------------------------- extractor
def test_extractor_finds_marked_blocks_only(tmp_path):
    text = (
        "intro\n<!-- runnable -->\n```python\nx = 1\n```\n\n```python\nnot_run()\n```\n"
        "<!-- runnable fixture=finished_run -->\n\n```python\ny = 2\n```\n"
    )
    blocks = extract_runnable(text, tmp_path / "page.md")
    assert [(b.line, b.code, b.fixture) for b in blocks] == [(3, "x = 1\n", None), (12, "y = 2\n", "finished_run")]


@pytest.mark.parametrize("text", ["<!-- runnable -->\nsome prose\n", "<!-- runnable -->\n```bash\nls\n```\n",
                                  "<!-- runnable -->\n```python\nx = 1\n"])
def test_extractor_rejects_a_marker_without_a_python_block(tmp_path, text):
    with pytest.raises(ValueError, match="page.md"):
        extract_runnable(text, tmp_path / "page.md")


def test_losses_and_report_examples_are_marked():
    counts = {page: sum(1 for b in _all_runnable() if b.path.name == page) for page in ("losses.md", "report.md")}
    assert counts["losses.md"] >= 6, counts
    assert counts["report.md"] >= 1, counts


# ------------------------------------------------------------------------------------------------- runnable blocks
@pytest.mark.timeout(BLOCK_TIME_LIMIT_S + 30)
@pytest.mark.parametrize("block", _all_runnable(), ids=lambda b: b.name)
def test_runnable_block(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if block.fixture is not None:
        assert block.fixture in FIXTURES, f"{block.name}: unknown fixture '{block.fixture}'; known: {sorted(FIXTURES)}"
        FIXTURES[block.fixture](tmp_path)
    start = time.perf_counter()
    try:
        exec(compile(block.code, str(block.name), "exec"), {"__name__": "__docs__"})  # noqa: S102 - the point
    except Exception as err:  # noqa: BLE001 - reported with the page and line of the failing block
        pytest.fail(f"{block.name} failed: {type(err).__name__}: {err}\n--- block ---\n{block.code}")
    elapsed = time.perf_counter() - start
    assert elapsed < BLOCK_TIME_LIMIT_S, f"{block.name} took {elapsed:.0f} s (limit {BLOCK_TIME_LIMIT_S} s)"


# ------------------------------------------------------------------------------------------------- site
def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [] if "://" in node else [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def test_every_docs_page_is_in_nav_and_every_nav_entry_exists():
    nav = _nav_pages(yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    missing = sorted(pages - set(nav))
    assert not missing, f"docs pages missing from the nav of mkdocs.yml: {missing}"
    dangling = sorted(set(nav) - pages)
    assert not dangling, f"mkdocs.yml nav names pages that do not exist: {dangling}"
    assert len(nav) == len(set(nav)), "a page appears twice in nav"


def test_site_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(MKDOCS_YML),
         "--site-dir", str(tmp_path / "site")],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    problems = [line for line in result.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [result.stderr[-3000:]])
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("HFModule", "HFDataModule", "TrainingArguments", "HFFlow", "HFCheckpoint", "FocalLoss"):
        assert name in api, f"{name} missing from the API reference"
    assert "learning_rate" in api  # argument docs come from the docstrings


# ------------------------------------------------------------------------------------------------- notebooks
def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    import nbformat
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them with `nbstripout {path.name}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_listed_on_the_docs_page(path):
    assert f"(notebooks/{path.name})" in (DOCS / "site.md").read_text(encoding="utf-8")

