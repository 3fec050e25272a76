"""The notebooks run top to bottom without error."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
def test_inspect_ratings_notebook_runs(demo_root, monkeypatch):
    monkeypatch.setenv("E6INGEST_MIRROR", str(demo_root))
    notebook = nbformat.read(NOTEBOOKS / "inspect_ratings.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "posts in e621" in text and "'solo -comic score:>=0' with ratings e,q,s" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # the ratings bar chart and the token histograms
    assert re.search(r"short +median +\d+, p90 +(\d+)", text)
    assert int(re.search(r"short +median +\d+, p90 +(\d+)", text).group(1)) <= 20
    assert "with --max-tokens 75: max" in text
    # The questions asked one after another on the index end where the scan's answer is.
    scanned = re.search(r"'solo -comic score:>=0' with ratings e,q,s: ([\d,]+) posts", text)
    indexed = re.search(r"'solo -comic rating:e,q,s score:>=0' +([\d,]+) posts", text)
    assert scanned and indexed and scanned.group(1) == indexed.group(1)
    assert re.search(r"'solo' +[\d,]+ posts \(\d+ ms\)", text)
    assert not [o for o in outputs if o.output_type == "error"]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_valid_as_written(path):
    """Every cell has its id: nbformat fixes a missing one with a warning today and will
    refuse the notebook in a later version."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nbformat.validate(nbformat.read(path, as_version=4))
