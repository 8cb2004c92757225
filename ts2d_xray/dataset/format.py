"""The on-disk data set format: nnU-Net v2 raw data sets of 2D images with multi-label masks.

``ts2d-xray synth build`` writes these data sets and the training code reads them; this
module is the one place that knows their files (``format_version`` 1, described in full
in ``docs/dataset_format.md``)::

    ROOT/
      dataset.json                  nnU-Net fields + ours ("multilabel", "structures", ...)
      imagesTr/<case>_0000.nii.gz   channel 0: float32 (x = W, y = H, z = 1, t = 1)
      imagesTr/<case>_0001.nii.gz   channel 1 (coronal only)
      imagesTr/<case>_000C.json     sidecar: channel name and geometry
      labelsTr/<case>.nii.gz        uint8 (x = W, y = H, z = 1, t = K): volume t = k is the
                                    binary mask (1 = inside) of dataset.json["structures"][k]
      labelsTr/<case>.json          sidecar: structure order, colours and geometry
      cases/<case>.json             provenance of one case; moved in last: the case is complete
      cases.jsonl                   every complete case's record, one per line, in case-id order
      .partial/                     only while a build runs: cases being written

Conventions:

* Images and masks follow the radiograph display convention (head up, the patient's
  right on the image left; see :mod:`ts2d_xray.image`); geometry is LPS, in mm, in the
  NIfTI affine and in each sidecar (``shape_hw``, ``spacing_mm`` as (row, column), ...).
* In memory an image is ``(C, H, W)`` float32 (coronal: mean and max projection in HU;
  xray: [0, 1], 1 = white) and masks are ``(K, H, W)`` bool; the files hold the
  transpose ``(x = W, y = H, z = 1, t)``.
* Masks may overlap.  A structure a case lacks is an all-zero layer; the case record
  lists ``unlabelled_structures`` (not covered by the source labels), which training
  should ignore rather than treat as background.
* A case is complete when every file of :func:`case_files` exists.  :func:`write_case`
  moves the files in with ``os.replace``, images, label, then the record, so the record
  marks a complete case even if the writer is killed.

Example:
    >>> from ts2d_xray.dataset.format import load_dataset
    >>> ds = load_dataset("Dataset501_Coronal")     # checks it; InputError if broken  # doctest: +SKIP
    >>> image, masks = ds.read(ds.case_ids[0])       # (C, H, W) float32, (K, H, W) bool  # doctest: +SKIP
    >>> masks.names == ds.structures                 # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.io.files import sidecar_path  # the JSON that write_image2d/write_masks put beside a file

__all__ = [
    "CHANNELS",
    "DISPLAY",
    "FILE_ENDING",
    "FORMAT_VERSION",
    "KINDS",
    "LABEL_LAYOUT",
    "NNUNET_CHANNEL_NAMES",
    "Dataset",
    "Kind",
    "case_files",
    "dataset_json",
    "finalize",
    "image_name",
    "is_complete",
    "iter_cases",
    "json_default",
    "label_name",
    "load_dataset",
    "read_case",
    "validate_case",
    "write_case",
]

log = logging.getLogger(__name__)

Kind = Literal["coronal", "xray"]
KINDS: tuple[str, ...] = ("coronal", "xray")
#: Version of the on-disk format (``dataset.json["format_version"]``).
FORMAT_VERSION = 1
#: Display convention of every image and mask (patient's right on the image left).
DISPLAY = "radiograph"
FILE_ENDING = ".nii.gz"
#: Channel names per kind, in file order (_0000, _0001).
CHANNELS = {"coronal": ("mean", "max"), "xray": ("xray",)}
#: nnU-Net channel names: they pick its normalisation ("CT": global HU percentiles;
#: "zscore": per image, nnU-Net's choice for radiographs).
NNUNET_CHANNEL_NAMES = {"coronal": ("CT", "CT"), "xray": ("zscore",)}
LABEL_LAYOUT = "uint8 NIfTI (x = columns W, y = rows H, z = 1, t = structure index K); 1 = inside"
_DATASET_JSON = "dataset.json"
_CASES_FILE = "cases.jsonl"
_IMAGES = "imagesTr"
_LABELS = "labelsTr"
_RECORDS = "cases"  # per-case records: the completion markers
_PARTIAL = ".partial"  # cases being written
#: dataset.json fields that load_dataset needs.
_REQUIRED = ("format_version", "kind", "channels", "structures", "file_ending", "numTraining")


# --- file names -------------------------------------------------------------------
def image_name(case_id: str, channel: int) -> str:
    """``<case>_<CCCC>.nii.gz``: the file of one channel in ``imagesTr/``."""
    return f"{case_id}_{channel:04d}{FILE_ENDING}"


def label_name(case_id: str) -> str:
    """``<case>.nii.gz``: the label file in ``labelsTr/``."""
    return f"{case_id}{FILE_ENDING}"


def case_files(root: str | PathLike, case_id: str, n_channels: int) -> list[Path]:
    """Every file of a complete case: images, their sidecars, label, its sidecar, record (last)."""
    root = Path(root)
    images = [root / _IMAGES / image_name(case_id, c) for c in range(n_channels)]
    label = root / _LABELS / label_name(case_id)
    return images + [*map(sidecar_path, images), label, sidecar_path(label), root / _RECORDS / f"{case_id}.json"]


def is_complete(root: str | PathLike, case_id: str, n_channels: int) -> bool:
    """Whether every file of a case exists (see :func:`case_files`)."""
    return all(p.is_file() for p in case_files(root, case_id, n_channels))


def _case_ids_on_disk(root: Path) -> set[str]:
    """Case ids of every case file in a data set, complete or not."""
    ids = set()
    for folder, pattern in ((_IMAGES, r"(.+)_\d{4}\.(nii\.gz|json)"), (_LABELS, r"(.+)\.(nii\.gz|json)"),
                            (_RECORDS, r"(.+)\.json")):
        if (root / folder).is_dir():
            for p in (root / folder).iterdir():
                if m := re.fullmatch(pattern, p.name):
                    ids.add(m.group(1))
    return ids


# --- writing ----------------------------------------------------------------------
def dataset_json(name: str, structures: Sequence[str], groups: Sequence[str], settings: Mapping[str, Any],
                 records: Sequence[Mapping]) -> dict:
    """The contents of ``dataset.json``: nnU-Net's fields, then ours.

    Args:
        name: The data set's name (its folder name).
        structures: The K label layers, in file order; structure ``k`` gets nnU-Net
            label value ``k + 1``.
        groups: The TS2D groups whose structures the data set holds.
        settings: The build settings stored as they are: ``kind`` (``"coronal"`` or
            ``"xray"``), ``preset``, ``seed``, ``spacing`` and ``shape``.
        records: The case records of the complete cases (each with ``empty_structures``).
    """
    kind = settings["kind"]
    if kind not in KINDS:
        raise ValueError(f"settings['kind'] must be one of {list(KINDS)}, got {kind!r}")
    empty = [n for n in structures if records and all(n in r["empty_structures"] for r in records)]
    return {
        "channel_names": {str(c): n for c, n in enumerate(NNUNET_CHANNEL_NAMES[kind])},
        "labels": {"background": 0, **{n: k + 1 for k, n in enumerate(structures)}},
        "numTraining": len(records),
        "file_ending": FILE_ENDING,
        "name": name,
        "description": f"ts2d-xray synth build: {kind} images with multi-label masks "
                       "(see docs/dataset_format.md)",
        "multilabel": True,
        "structures": list(structures),
        "format_version": FORMAT_VERSION,
        "label_layout": LABEL_LAYOUT,
        "channels": list(CHANNELS[kind]),
        "display": DISPLAY,
        "groups": list(groups),
        **settings,
        "cases_file": _CASES_FILE,
        "empty_structures": empty,
    }


def json_default(value):
    """JSON for numpy values and read-only mappings (``json.dumps(..., default=json_default)``)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"parameter of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def write_case(root: str | PathLike, case_id: str, image: Image2D, masks: Masks, record: Mapping) -> None:
    """Write one case into a data set: into ``.partial/`` first, then move its files into place.

    Args:
        root: The data set folder.
        case_id: The case id (file names follow :func:`case_files`).
        image: ``(C, H, W)`` float32, one file per channel, in the data set's channel order.
        masks: ``(K, H, W)`` on the image's plane, already in ``dataset.json["structures"]``
            order (absent structures as empty layers).
        record: The case's provenance (``cases/<case>.json``); numpy values are turned into
            JSON by :func:`json_default`.

    Files move in a fixed order (images, label, then the record), so a record in
    ``cases/`` means every file of the case is in place, even if the writer is killed.
    Nothing of the case is left in ``.partial/``, whether it succeeds or fails.
    """
    from ts2d_xray.io import write_image2d, write_masks

    if masks.plane.shape != image.plane.shape:
        raise ValueError(f"masks of shape (H, W) = {masks.plane.shape} for an image of {image.plane.shape}")
    root = Path(root)
    temp = root / _PARTIAL / f"{case_id}-{uuid.uuid4().hex[:8]}"
    try:
        files = []  # in the order they move into place
        for c, name in enumerate(image.channels):
            one = Image2D(image.array[c : c + 1], image.plane, (name,), image.meta)
            written = write_image2d(one, temp / _IMAGES / image_name(case_id, c))
            files += [written, sidecar_path(written)]
        label = write_masks(masks, temp / _LABELS / label_name(case_id))
        files += [sidecar_path(label), label]
        record_path = temp / _RECORDS / f"{case_id}.json"
        record_path.parent.mkdir()
        record_path.write_text(json.dumps(record, indent=1, default=json_default))
        files.append(record_path)
        for path in files:
            dest = root / path.relative_to(temp)
            dest.parent.mkdir(exist_ok=True)
            os.replace(path, dest)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def finalize(root: str | PathLike, structures: Sequence[str], groups: Sequence[str],
             settings: Mapping[str, Any]) -> int:
    """Make a data set's files agree with its complete cases; return how many there are.

    Removes ``.partial/`` and the files of incomplete cases (left by a killed writer),
    then rewrites ``cases.jsonl`` and ``dataset.json`` (see :func:`dataset_json` for the
    arguments) from the case records.  Only one writer may use a data set at a time.
    """
    root = Path(root)
    shutil.rmtree(root / _PARTIAL, ignore_errors=True)
    n_channels = len(CHANNELS[settings["kind"]])
    complete = []
    for case_id in sorted(_case_ids_on_disk(root)):
        if is_complete(root, case_id, n_channels):
            complete.append(case_id)
        else:
            log.info("%s: removing the files of incomplete case %s", root, case_id)
            for p in case_files(root, case_id, n_channels):
                p.unlink(missing_ok=True)
    records = [json.loads((root / _RECORDS / f"{c}.json").read_text()) for c in complete]
    _write_atomic(root / _CASES_FILE, "".join(json.dumps(r) + "\n" for r in records))
    _write_atomic(root / _DATASET_JSON,
                  json.dumps(dataset_json(root.name, structures, groups, settings, records), indent=1))
    return len(records)


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    temp.write_text(text)
    os.replace(temp, path)


# --- reading ----------------------------------------------------------------------
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
        raise InputError(root, f"dataset.json has numTraining={meta['numTraining']!r} but {_CASES_FILE} lists "
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


def _read_meta(root: Path) -> dict:
    """``dataset.json``, with the fields the reader needs checked."""
    path = root / _DATASET_JSON
    if not path.is_file():
        raise InputError(root, "no dataset.json: not a data set (build one with `ts2d-xray synth build`)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"cannot read it as JSON ({err})") from None
    missing = [k for k in _REQUIRED if not isinstance(meta, dict) or k not in meta]
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
    path = root / _CASES_FILE
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
    label_path = root / _LABELS / label_name(case_id)
    label = _load_nifti(label_path)
    shape = tuple(label.shape)
    if len(shape) != 4 or shape[2] != 1:
        raise InputError(label_path, f"label shape must be (x = W, y = H, z = 1, t = K), got {shape}")
    if shape[3] != len(structures):
        raise InputError(label_path, f"{shape[3]} label layers, expected {len(structures)}: one per structure "
                                     "of dataset.json")
    for c in range(len(dataset.channels)):
        image_path = root / _IMAGES / image_name(case_id, c)
        image_shape = tuple(_load_nifti(image_path).shape)
        if image_shape[:2] != shape[:2] or any(n != 1 for n in image_shape[2:]):
            raise InputError(label_path, f"label shape (x = W, y = H) = {shape[:2]} does not match the image "
                                         f"{image_name(case_id, c)} of shape {image_shape}")
    try:
        sidecar = json.loads(sidecar_path(label_path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(sidecar_path(label_path), f"cannot read it as JSON ({err})") from None
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


def _load_nifti(path: Path):
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
    return _read_case(root, json.loads((root / _DATASET_JSON).read_text()), case_id)


def _read_case(root: Path, meta: Mapping[str, Any], case_id: str) -> tuple[Image2D, Masks]:
    import nibabel as nib

    label = root / _LABELS / label_name(case_id)
    geometry = json.loads(sidecar_path(label).read_text())
    plane = Plane(tuple(geometry["shape_hw"]), tuple(geometry["spacing_mm"]), tuple(geometry["col_dir_lps"]),
                  tuple(geometry["row_dir_lps"]),
                  None if geometry["origin_lps_mm"] is None else tuple(geometry["origin_lps_mm"]))
    # Files hold (x = W, y = H, z = 1, t); arrays are (t, H, W).
    masks = np.asarray(nib.load(label).dataobj)[:, :, 0, :].transpose(2, 1, 0) != 0
    channels = [np.asarray(nib.load(root / _IMAGES / image_name(case_id, c)).dataobj, dtype=np.float32)
                for c in range(len(meta["channels"]))]
    image = np.stack([c.reshape(c.shape[0], c.shape[1]).T for c in channels])
    return (Image2D(image, plane, tuple(meta["channels"]), {"source": str(root), "case": case_id}),
            Masks(masks, tuple(meta["structures"]), plane))


def iter_cases(dataset: str | PathLike | Dataset) -> Iterator[dict]:
    """The case records of a data set (``cases.jsonl``), in case-id order."""
    root = dataset.root if isinstance(dataset, Dataset) else Path(dataset)
    with open(root / _CASES_FILE) as f:
        yield from (json.loads(line) for line in f if line.strip())
