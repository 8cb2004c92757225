"""Every Python code block of README.md and docs/*.md runs, on the shared data.

The blocks name short example files (``chest.dcm``, ``film.png``, ``ct.nii.gz``, ...);
they are replaced by real files of the shared data folder (:mod:`ts2d_xray.examples`),
and each document's blocks run in order in one temporary working folder, so that a
block may read what an earlier one wrote (``out/film``).  A block preceded by the line
``<!-- illustrative -->`` is not run (none is at present).
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pytest

from ts2d_xray.examples import shared_data

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.M | re.S)
SKIP_MARK = "<!-- illustrative -->"
#: A Wingspan chest film with reference masks of the heart and both lung fields.
FILM = "1.2.156.112536.2.560.224076136121215.1245885081467.12600.png"


def _blocks(path: Path) -> list[tuple[int, str]]:
    """``(line, code)`` of each Python block not marked illustrative."""
    text = path.read_text()
    out = []
    for match in _BLOCK.finditer(text):
        before = text[:match.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARK:
            continue
        out.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return out


def _files() -> dict[str, Path | None]:
    """Example file names of the documents -> real files."""
    dicom_ct = shared_data("ct", "ts_example_dicom")
    return {
        "chest.dcm": shared_data("xray", "dicom", "siim_nih_cr_chest_monochrome2.dcm"),
        "film.png": shared_data("xray", "wingspan", "png", FILM),
        "ct.nii.gz": dicom_ct and dicom_ct / "dicom",
        "ct_dicom_folder/": dicom_ct and dicom_ct / "dicom",
        "seg.nii.gz": dicom_ct and dicom_ct / "seg_v2_multilabel.nii.gz",
        "sample_s0332.nrrd": shared_data("projections", "ts2d_samples", "sample_s0332.nrrd"),
    }


def _substitute(code: str, files: dict[str, Path]) -> str:
    for name, path in files.items():
        code = code.replace(f'"{name}"', repr(str(path)))
    return code


def _reference_masks(folder: Path) -> None:
    """``gt/film`` and ``map.yaml``, as the README describes them."""
    gt = folder / "gt" / "film"
    gt.mkdir(parents=True)
    for name in ("heart", "left_lung", "right_lung"):
        shutil.copyfile(shared_data("xray", "wingspan", "mask", name, FILM, required=True), gt / f"{name}.png")
    (folder / "map.yaml").write_text("left_lung: lung_left\nright_lung: lung_right\nheart: heart\n")


def test_the_documents_have_python_examples():
    counted = {p.name: len(_blocks(p)) for p in DOCUMENTS}
    assert counted["README.md"] >= 4 and counted["inference.md"] >= 1


@pytest.mark.parametrize("document", [p for p in DOCUMENTS if _blocks(p)], ids=lambda p: p.name)
def test_python_examples_run(document: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files()
    if any(path is None for path in files.values()) or shared_data("xray", "wingspan", "png", FILM) is None:
        pytest.skip("the shared data folder (TS2D_XRAY_DATA) is not available")
    monkeypatch.chdir(tmp_path)
    _reference_masks(tmp_path)
    namespace: dict = {"__name__": "__example__"}
    for line, code in _blocks(document):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # assumed spacings and orientations: warned about, expected here
            try:
                exec(compile(_substitute(code, files), f"{document.name}:{line}", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"the Python block at {document.name}:{line} fails: {err!r}") from err
