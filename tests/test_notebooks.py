"""The notebooks in notebooks/ run from top to bottom (with their small settings).

Each is executed in a fresh kernel, in a scratch working directory: the notebooks find the
real data through ``ts2d_xray.examples`` wherever they run. The files themselves are never
modified (they are stored without outputs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ts2d_xray.examples import missing_data_message, shared_data_dir

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DATA = shared_data_dir()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=missing_data_message())


def test_the_three_notebooks_exist() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS2D_XRAY_HOME", str(tmp_path / "home"))  # the bundled models, not a user's
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is stored with outputs; clear them"
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, when a cell fails
    produced = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in produced if o.output_type == "error"]
    assert any(o.output_type in ("display_data", "execute_result") for o in produced)
