"""The registry of image kinds, their channels, and the file formats read and written.

One home for the tables that name kinds and file suffixes, as :mod:`ts2d_xray.labels`
is for structures:

* **Model kinds** (what a model reads, what a data set holds): ``"coronal"``, 2-channel
  CT projections ``(mean, max)`` in HU; ``"xray"``, 1-channel radiographs in [0, 1].
* **Input kinds** (what a user hands to ``segment``): a 3D ``"ct"`` (projected on the
  fly), a 2-channel ``"projection"``, or a ``"radiograph"``; each maps to a model kind.
* **File formats**, by lower-case suffix; ``.seg.nrrd`` and ``.nii.gz`` count as one
  suffix (:func:`format_suffix`).

Example:
    >>> from pathlib import Path
    >>> format_suffix(Path("case/Masks.SEG.NRRD")), CHANNELS[INPUT_MODEL_KIND["projection"]]
    ('.seg.nrrd', ('mean', 'max'))
"""

from __future__ import annotations

from pathlib import PurePath
from types import MappingProxyType
from typing import Literal, Mapping

__all__ = [
    "CHANNELS",
    "DICOM_SUFFIXES",
    "IMAGE_WRITE_SUFFIXES",
    "INPUT_MODEL_KIND",
    "ITK_FORMATS",
    "InputKind",
    "KINDS",
    "Kind",
    "LABEL_SUFFIXES",
    "MASK_WRITE_SUFFIXES",
    "MULTI_PART_SUFFIXES",
    "NNUNET_CHANNEL_NAMES",
    "PIL_FORMATS",
    "VOLUME_SUFFIXES",
    "format_stem",
    "format_suffix",
]

Kind = Literal["coronal", "xray"]
#: Model and data set kinds.
KINDS: tuple[Kind, ...] = ("coronal", "xray")
#: Image channel names per kind, in file and network order.
CHANNELS: Mapping[str, tuple[str, ...]] = MappingProxyType({"coronal": ("mean", "max"), "xray": ("xray",)})
#: ``channel_names`` of a kind's nnU-Net ``dataset.json``; nnU-Net derives the
#: normalisation from them (``CT``: CTNormalization on HU; ``zscore``: per image).
NNUNET_CHANNEL_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({"coronal": ("CT", "CT"), "xray": ("zscore",)})

InputKind = Literal["ct", "projection", "radiograph"]
#: The model kind that segments each input kind.
INPUT_MODEL_KIND: Mapping[str, Kind] = MappingProxyType({"ct": "coronal", "projection": "coronal",
                                                          "radiograph": "xray"})

#: Suffixes made of two parts, recognised before the last suffix alone.
MULTI_PART_SUFFIXES = (".seg.nrrd", ".nii.gz")
#: Formats SimpleITK reads, by suffix -> format name.
ITK_FORMATS: Mapping[str, str] = MappingProxyType({".nrrd": "nrrd", ".nhdr": "nrrd", ".nii": "nifti",
                                                   ".nii.gz": "nifti", ".mha": "mha", ".mhd": "mha"})
#: Formats Pillow reads (8/16-bit greyscale radiographs, masks), by suffix -> format name.
PIL_FORMATS: Mapping[str, str] = MappingProxyType({".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"})
#: Suffixes of single DICOM files (a DICOM series is a folder).
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: CT volumes: SimpleITK formats and DICOM.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
#: Label maps and binary masks of a CT.
LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
#: Mask files :func:`ts2d_xray.io.write_masks` writes (or a folder of PNGs without suffix).
MASK_WRITE_SUFFIXES = (".seg.nrrd", ".nii", ".nii.gz")
#: Image files :func:`ts2d_xray.io.write_image2d` writes.
IMAGE_WRITE_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".png")


def format_suffix(path: str | PurePath) -> str:
    """Lower-case format suffix of a path: ``.seg.nrrd`` and ``.nii.gz`` count as one."""
    path = PurePath(path)
    name = path.name.lower()
    return next((s for s in MULTI_PART_SUFFIXES if name.endswith(s)), path.suffix.lower())


def format_stem(path: str | PurePath) -> str:
    """A file name without its format suffix (:func:`format_suffix`): ``ct.nii.gz`` -> ``ct``."""
    name = PurePath(path).name
    return name[: len(name) - len(format_suffix(path))]
