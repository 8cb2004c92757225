"""The notebooks in notebooks/ run from top to bottom (with their small settings), and carry their rendered outputs.

Each is executed in a fresh kernel, in a scratch working directory: the notebooks find the
real data through ``ts2d_xray.examples`` wherever they run.  The files are stored *with*
their outputs (figures with legends in the overlays' colours, printed facts), rendered by
this test: ``TS2D_XRAY_RENDER_NOTEBOOKS=1 pytest tests/test_notebooks.py`` writes each
executed notebook back into ``notebooks/``.  A normal run leaves the files alone and checks
that every cell that draws a figure when run has a stored picture, so the stored outputs
cannot fall behind the code.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from ts2d_xray.examples import missing_data_message, shared_data_dir

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DATA = shared_data_dir()
RENDER = os.environ.get("TS2D_XRAY_RENDER_NOTEBOOKS") == "1"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=missing_data_message())


def test_the_three_notebooks_exist() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03"]


def _pictures(notebook: nbformat.NotebookNode) -> list[bool]:
    """Per code cell: whether it shows a picture."""
    return [any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
            for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS2D_XRAY_HOME", str(tmp_path / "home"))  # the bundled models, not a user's
    stored = nbformat.read(path, as_version=4)
    notebook = copy.deepcopy(stored)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, when a cell fails
    produced = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in produced if o.output_type == "error"]
    assert any(o.output_type in ("display_data", "execute_result") for o in produced)
    if RENDER:
        nbformat.write(notebook, path)
        return
    assert _pictures(stored) == _pictures(notebook), (
        f"{path.name}: the stored pictures differ from what the notebook draws; render them again with "
        "TS2D_XRAY_RENDER_NOTEBOOKS=1 pytest tests/test_notebooks.py")
