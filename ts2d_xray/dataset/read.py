"""Read a data set: open and check it (:func:`load_dataset`), check a case in full, read cases and records.

File names and fields are those of :mod:`ts2d_xray.dataset.format`.  In memory an image
is ``(C, H, W)`` float32 and masks are ``(K, H, W)`` bool; the files hold the
transpose ``(x = W, y = H, z = 1, t)``.

Example:
    >>> from ts2d_xray.dataset import load_dataset
    >>> ds = load_dataset("Dataset501_Coronal")     # checks it; InputError if broken  # doctest: +SKIP
    >>> image, masks = ds.read(ds.case_ids[0])       # (C, H, W) float32, (K, H, W) bool  # doctest: +SKIP
    >>> masks.names == ds.structures                 # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from ts2d_xray.dataset.format import (
    CASES_FILE,
    DATASET_JSON,
    FILE_ENDING,
    FORMAT_VERSION,
    IMAGES_DIR,
    LABELS_DIR,
    REQUIRED_FIELDS,
    case_files,
    image_name,
    label_name,
)
from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.io.files import read_json, sidecar_path
from ts2d_xray.kinds import KINDS

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["Dataset", "iter_cases", "load_dataset", "read_case", "validate_case"]


@dataclass(frozen=True)
class Dataset:
    """A data set checked by :func:`load_dataset`.

    Attributes:
        root: The data set folder.
        meta: The contents of ``dataset.json`` (read-only).
        structures: The K label layers, in file order.
        channels: Channel names in file order: ``("mean", "max")`` or ``("xray",)``.
        kind: ``"coronal"`` or ``"xray"``.
        case_ids: The complete cases listed in ``cases.jsonl``, in case-id order.
    """

    root: Path
    meta: Mapping[str, Any]
    structures: tuple[str, ...]
    channels: tuple[str, ...]
    kind: str
    case_ids: tuple[str, ...]

    def read(self, case_id: str) -> tuple[Image2D, Masks]:
        """One case as ``(image (C, H, W), masks (K, H, W))``; see :func:`read_case`."""
        return _read_case(self.root, self.meta, case_id)


def load_dataset(path: str | PathLike, *, validate_all: bool = False) -> Dataset:
    """Open a data set and check it.

    Checks ``dataset.json``, that every case listed in ``cases.jsonl`` has all its files
    (cheap: no file is read), and the first case in full (:func:`validate_case`), or
    every case with ``validate_all=True``.

    Raises:
        InputError: A missing folder or ``dataset.json``, another format version, a
            case with missing files, or a case that :func:`validate_case` refuses.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "no such data set folder" if not root.exists() else "is not a data set folder")
    meta = _read_meta(root)
    structures, channels = tuple(meta["structures"]), tuple(meta["channels"])
    case_ids = _listed_cases(root)
    if len(case_ids) != meta["numTraining"]:
        raise InputError(root, f"dataset.json has numTraining={meta['numTraining']!r} but {CASES_FILE} lists "
                               f"{len(case_ids)} cases; a build is running or was interrupted: finish it")
    incomplete = {}
    for case_id in case_ids:
        missing = [p for p in case_files(root, case_id, len(channels)) if not p.is_file()]
        if missing:
            incomplete[case_id] = ", ".join(str(p.relative_to(root)) for p in missing)
    if incomplete:
        shown = "; ".join(f"case {c}: missing {m}" for c, m in list(incomplete.items())[:3])
        more = f" (and {len(incomplete) - 3} more cases)" if len(incomplete) > 3 else ""
        raise InputError(root, f"{len(incomplete)} incomplete case(s): {shown}{more}; re-run the build to complete them")
    dataset = Dataset(root, MappingProxyType(meta), structures, channels, meta["kind"], case_ids)
    for case_id in case_ids if validate_all else case_ids[:1]:
        validate_case(dataset, case_id)
    return dataset


def _read_meta(root: Path) -> dict[str, Any]:
    """``dataset.json``, with the fields the reader needs checked."""
    path = root / DATASET_JSON
    if not path.is_file():
        raise InputError(root, "no dataset.json: not a data set (build one with `ts2d-xray synth build`)")
    meta = read_json(path, what="JSON")
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise InputError(path, f"missing fields {missing}: not a ts2d-xray data set")
    if meta["format_version"] != FORMAT_VERSION:
        raise InputError(path, f"format_version must be {FORMAT_VERSION}, got {meta['format_version']!r}")
    if meta["kind"] not in KINDS:
        raise InputError(path, f"kind must be one of {list(KINDS)}, got {meta['kind']!r}")
    if meta["file_ending"] != FILE_ENDING:
        raise InputError(path, f"file_ending must be {FILE_ENDING!r}, got {meta['file_ending']!r}")
    for key in ("structures", "channels"):
        names = meta[key]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
                or len(set(names)) != len(names):
            raise InputError(path, f"{key} must be a non-empty list of unique names, got {names!r}")
    return meta


def _listed_cases(root: Path) -> tuple[str, ...]:
    """The case ids of ``cases.jsonl``, in file order."""
    path = root / CASES_FILE
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read the case list ({err})") from None
    ids = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            ids.append(str(json.loads(line)["case"]))
        except (ValueError, TypeError, KeyError):
            raise InputError(path, f"line {number}: expected a JSON case record with a 'case' field") from None
    return tuple(ids)


def validate_case(dataset: Dataset, case_id: str) -> None:
    """Check one case in full: its files, and its label against its images and ``dataset.json``.

    Reads the label data, so it costs about as much as :func:`read_case`.

    Raises:
        InputError: Missing files; a label that is not ``(x = W, y = H, z = 1, t = K)``
            with K = ``len(dataset.structures)``, whose ``(W, H)`` differs from an
            image's, whose sidecar lists other structures or another shape, or whose
            values are not 0 and 1.
    """
    root, structures = dataset.root, dataset.structures
    missing = [p for p in case_files(root, case_id, len(dataset.channels)) if not p.is_file()]
    if missing:
        raise InputError(root, f"case {case_id}: missing {', '.join(str(p.relative_to(root)) for p in missing)}")
    label_path = root / LABELS_DIR / label_name(case_id)
    label = _load_nifti(label_path)
    shape = tuple(label.shape)
    if len(shape) != 4 or shape[2] != 1:
        raise InputError(label_path, f"label shape must be (x = W, y = H, z = 1, t = K), got {shape}")
    if shape[3] != len(structures):
        raise InputError(label_path, f"{shape[3]} label layers, expected {len(structures)}: one per structure "
                                     "of dataset.json")
    for c in range(len(dataset.channels)):
        image_path = root / IMAGES_DIR / image_name(case_id, c)
        image_shape = tuple(_load_nifti(image_path).shape)
        if image_shape[:2] != shape[:2] or any(n != 1 for n in image_shape[2:]):
            raise InputError(label_path, f"label shape (x = W, y = H) = {shape[:2]} does not match the image "
                                         f"{image_name(case_id, c)} of shape {image_shape}")
    sidecar = read_json(sidecar_path(label_path), what="JSON")
    names = tuple(s.get("name") for s in sidecar.get("structures", ()))
    if names != structures:
        raise InputError(sidecar_path(label_path), "the label sidecar lists other structures than dataset.json")
    if tuple(sidecar.get("shape_hw", ())) != (shape[1], shape[0]):
        raise InputError(sidecar_path(label_path), f"shape_hw {sidecar.get('shape_hw')} does not match the label "
                                               f"(H, W) = {(shape[1], shape[0])}")
    try:
        data = np.asarray(label.dataobj)
    except (OSError, EOFError, ValueError) as err:
        raise InputError(label_path, f"cannot read the label data ({err})") from None
    bad = (data != 0) & (data != 1)
    if bad.any():
        values = np.unique(data[bad])[:5].tolist()
        layers = [structures[k] for k in np.flatnonzero(bad.any(axis=(0, 1, 2)))][:5]
        raise InputError(label_path, f"labels must be binary (0 = outside, 1 = inside), found values {values} "
                                     f"in the layers of {layers}")


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """A NIfTI image (header read, data not yet); InputError if it cannot be read."""
    import nibabel as nib

    try:
        return nib.load(path)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise InputError(path, f"not a readable NIfTI file ({err})") from None


def read_case(dataset: str | PathLike | Dataset, case_id: str) -> tuple[Image2D, Masks]:
    """Read one case of a data set.

    Args:
        dataset: The data set folder, or a :class:`Dataset`.
        case_id: The case id.

    Returns:
        The image ``(C, H, W)`` float32 (coronal: mean and max HU; xray: [0, 1]) and
        the masks ``(K, H, W)`` bool in ``dataset.json["structures"]`` order, both on
        the plane recorded beside the label file (LPS mm, radiograph display).
    """
    if isinstance(dataset, Dataset):
        return dataset.read(case_id)
    root = Path(dataset)
    return _read_case(root, read_json(root / DATASET_JSON, what="JSON"), case_id)


def _read_case(root: Path, meta: Mapping[str, Any], case_id: str) -> tuple[Image2D, Masks]:
    import nibabel as nib

    label = root / LABELS_DIR / label_name(case_id)
    geometry = read_json(sidecar_path(label), what="label sidecar")
    plane = Plane(tuple(geometry["shape_hw"]), tuple(geometry["spacing_mm"]), tuple(geometry["col_dir_lps"]),
                  tuple(geometry["row_dir_lps"]),
                  None if geometry["origin_lps_mm"] is None else tuple(geometry["origin_lps_mm"]))
    # Files hold (x = W, y = H, z = 1, t); arrays are (t, H, W).
    masks = np.asarray(nib.load(label).dataobj)[:, :, 0, :].transpose(2, 1, 0) != 0
    channels = [np.asarray(nib.load(root / IMAGES_DIR / image_name(case_id, c)).dataobj, dtype=np.float32)
                for c in range(len(meta["channels"]))]
    image = np.stack([c.reshape(c.shape[0], c.shape[1]).T for c in channels])
    return (Image2D(image, plane, tuple(meta["channels"]), {"source": str(root), "case": case_id}),
            Masks(masks, tuple(meta["structures"]), plane))


def iter_cases(dataset: str | PathLike | Dataset) -> Iterator[dict[str, Any]]:
    """The case records of a data set (``cases.jsonl``), in case-id order."""
    root = dataset.root if isinstance(dataset, Dataset) else Path(dataset)
    with open(root / CASES_FILE) as f:
        yield from (json.loads(line) for line in f if line.strip())
