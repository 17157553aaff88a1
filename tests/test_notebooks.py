"""Every notebook in notebooks/ (jupytext percent-format ``.py`` files) runs headlessly without error.

Notebooks read ``SFO_NOTEBOOK_SMALL=1`` and shrink their settings so the suite stays quick.
"""

import pathlib

import pytest

from tests.snapshot import snapshot

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("SFO_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("SFO_NOTEBOOK_OUT", str(tmp_path))
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    before = snapshot(path.parent)
    client.execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert all(cell.get("execution_count") for cell in code), "every code cell ran"
    assert snapshot(path.parent) == before, "the notebook wrote into notebooks/ instead of SFO_NOTEBOOK_OUT"
    if "SFO_NOTEBOOK_OUT" in path.read_text():
        assert any(tmp_path.iterdir()), "the notebook reads SFO_NOTEBOOK_OUT but wrote nothing there"

