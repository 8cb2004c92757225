"""The label catalog: TotalSegmentator classes, TS2D's model groups, colours and unions.

Everything here is read once from ``configs/labels.json`` (shipped inside the package
as ``ts2d_xray.configs``) and is immutable.

Vocabulary
----------
*class* / *structure*
    One TotalSegmentator ``total`` class, e.g. ``"liver"``.  Version 1 has 104 classes,
    version 2 has 117; ids differ between the two versions.
*group*
    One of TS2D's five models (``organs``, ``vertebrae``, ``cardiac``, ``muscles``,
    ``ribs``): TotalSegmentator v2's five-part split.  Each v2 class is in exactly one.
*derived structure*
    A union of classes (``lung_left`` = its two lobes, ``ribs``, ``spine``, ...), so that
    masks can be compared with coarser real-world labels.
*radiographic structure*
    What a chest radiograph shows rather than what the body holds: the *radiographic
    lung fields* ``lung_field_right`` and ``lung_field_left`` (:data:`LUNG_FIELDS`), the
    visible part of each lung as JSRT/SCR, Wingspan and most chest X-ray sets draw it,
    and the *heart silhouette* ``heart_silhouette`` (:data:`HEART_SILHOUETTE`), the
    heart's shadow as films draw it.  Not a union of classes: the lung fields are
    computed from 2D projected masks (their one home, :mod:`ts2d_xray.radiographic`),
    the heart silhouette is drawn on real films, so :func:`expand` gives the name
    itself, as for a class.  It has a colour and terminology but no class entry
    (:func:`structure`) and no group.
*terminology*
    The DICOM segment codes of a class or derived structure (:func:`terminology`):
    SNOMED CT category, type and type modifier (laterality), and an anatomic region where
    the type needs one.  Classes carry TotalSegmentator's codes and colours (its
    ``totalsegmentator_snomed_mapping.csv``, Apache-2.0; ``scripts/make_label_catalog.py``
    wrote them into the catalog), so every v2 class has a colour of its own.

Examples
--------
>>> from ts2d_xray import labels
>>> labels.class_map("v2")[5]
'liver'
>>> labels.group_of("heart")
'cardiac'
>>> labels.expand("lung_left")
('lung_upper_lobe_left', 'lung_lower_lobe_left')
>>> t = labels.terminology("kidney_left")
>>> t.type.meaning, t.type_modifier.meaning, t.type.value
('Kidney', 'Left', '64033007')
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Literal, Mapping

__all__ = [
    "Code",
    "FALLBACK_COLORS",
    "display_color",
    "GROUPS",
    "HEART_SILHOUETTE",
    "LUNG_FIELDS",
    "PREVIEW_STRUCTURES",
    "Version",
    "Structure",
    "class_map",
    "classes",
    "color",
    "derived_names",
    "expand",
    "group_of",
    "group_classes",
    "is_class",
    "is_known",
    "preview_subset",
    "radiographic_names",
    "structure",
    "Terminology",
    "terminology",
    "v1_to_v2",
]

Version = Literal["v1", "v2"]

#: TS2D's five group models, in TotalSegmentator's order.
GROUPS: tuple[str, ...] = ("organs", "vertebrae", "cardiac", "muscles", "ribs")

#: Coarse structures that keep an overlay preview readable (all structures at once
#: cover the whole image).
PREVIEW_STRUCTURES: tuple[str, ...] = (
    "lung_right", "lung_left", "heart", "aorta", "liver", "spleen", "stomach", "kidneys", "spine", "clavicles",
)

#: The radiographic lung fields (right, left): patient right first, as in
#: :data:`ts2d_xray.measure.LUNG_FIELDS`.  Synth data sets list them after the 117 v2
#: classes; :func:`ts2d_xray.radiographic.derive_lung_fields` makes them.
LUNG_FIELDS: tuple[str, ...] = ("lung_field_right", "lung_field_left")

#: The radiographic heart silhouette: the heart's shadow as a film shows it and radiologists
#: draw it (Wingspan's heart masks), a structure of its own beside TotalSegmentator's
#: ``heart`` (the organ), whose projection on a DRR is another shape.  Only real films
#: label it (docs/lung_fields.md).
HEART_SILHOUETTE = "heart_silhouette"


@dataclass(frozen=True)
class Structure:
    """One catalog class.

    Attributes:
        name: TotalSegmentator class name.
        v1_id: Label value in TotalSegmentator v1's multilabel output, or None.
        v2_id: Label value in TotalSegmentator v2's multilabel output, or None.
        group: TS2D group model (v2 classes only), or None for v1-only classes.
        color: Display colour as (R, G, B), each 0-255.
    """

    name: str
    v1_id: int | None
    v2_id: int | None
    group: str | None
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Code:
    """One coded concept of a DICOM code sequence.

    Attributes:
        scheme: Coding scheme designator, e.g. ``"SCT"`` (SNOMED CT).
        value: Code value, e.g. ``"64033007"``.
        meaning: Code meaning, e.g. ``"Kidney"``.
    """

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class Terminology:
    """The DICOM segment terminology of a class or derived structure.

    Attributes:
        category: Segmented property category (``Anatomical Structure``, ...).
        type: Segmented property type (``Kidney``, ...).
        type_modifier: Laterality (``Left``/``Right``) or another modifier, or None.
        region: Anatomic region, where the type alone does not say where (a vertebra
            of the ``Lumbar spine``), or None.
        region_modifier: Modifier of the region, or None.
        source: Where the codes come from (``"TotalSegmentator"``, or how they were composed).
    """

    category: Code
    type: Code
    type_modifier: Code | None
    region: Code | None
    region_modifier: Code | None
    source: str


@lru_cache(maxsize=1)
def _catalog() -> dict:
    text = resources.files("ts2d_xray.configs").joinpath("labels.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=2)
def class_map(version: Version = "v2") -> Mapping[int, str]:
    """Label value -> class name of TotalSegmentator's ``total`` task.

    Args:
        version: ``"v1"`` (104 classes) or ``"v2"`` (117 classes).
    """
    maps = _catalog()["classmaps"]
    if version not in maps:
        raise ValueError(f"version must be one of {sorted(maps)}, got {version!r}")
    return MappingProxyType({int(k): v for k, v in maps[version].items()})


def classes(version: Version = "v2") -> tuple[str, ...]:
    """Class names of one version, in label-value order."""
    cmap = class_map(version)
    return tuple(cmap[k] for k in sorted(cmap))


@lru_cache(maxsize=1)
def _structures() -> Mapping[str, Structure]:
    cat = _catalog()
    ids = {v: {name: i for i, name in class_map(v).items()} for v in ("v1", "v2")}
    group = {name: g for g, names in cat["groups"].items() for name in names}
    out = {}
    for name, rgb in cat["colors"].items():
        out[name] = Structure(
            name=name,
            v1_id=ids["v1"].get(name),
            v2_id=ids["v2"].get(name),
            group=group.get(name),
            color=tuple(rgb),
        )
    return MappingProxyType(out)


def is_known(name: str) -> bool:
    """True for a catalog class (v1 or v2), a derived or a radiographic structure."""
    return name in _structures() or name in _catalog()["derived"] or name in _catalog()["radiographic"]


def is_class(name: str) -> bool:
    """True for a TotalSegmentator class (v1 or v2): a name a 3D label map may hold."""
    return name in _structures()


def _unknown(name: str) -> ValueError:
    import difflib

    if name in _catalog()["radiographic"]:
        return ValueError(f"{name!r} is a radiographic structure (derived from 2D projected masks, see "
                          "ts2d_xray.radiographic), not a TotalSegmentator class")
    candidates = list(_structures()) + list(_catalog()["derived"]) + list(_catalog()["radiographic"])
    close = difflib.get_close_matches(name, candidates, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown structure {name!r}{hint}")


def structure(name: str) -> Structure:
    """The catalog entry of one class (v1 or v2); ValueError for any other name."""
    try:
        return _structures()[name]
    except KeyError:
        raise _unknown(name) from None


def color(name: str) -> tuple[int, int, int]:
    """Display colour (R, G, B, 0-255) of a class or derived structure.

    A derived structure has its own colour where the catalog gives one, else the
    colour of its first member; a radiographic structure has its own.
    """
    if name in _structures():
        return _structures()[name].color
    own = _catalog()["derived_colors"].get(name)
    return tuple(own) if own else structure(expand(name)[0]).color


#: Colours (R, G, B, 0-255) of structure names outside the catalog; a name always gets
#: the same one (picked by the CRC32 of the name).
FALLBACK_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 255), (0, 255, 255), (255, 255, 0), (255, 128, 0), (128, 0, 255), (0, 255, 128),
)


def display_color(name: str) -> tuple[int, int, int]:
    """Colour (R, G, B, 0-255) that overlays and mask files give a structure.

    The catalog's colour (:func:`color`) for a known name; any other name (a user's own
    structure) gets a fixed colour of :data:`FALLBACK_COLORS`.
    """
    if is_known(name):
        return tuple(int(c) for c in color(name))
    return FALLBACK_COLORS[zlib.crc32(name.encode()) % len(FALLBACK_COLORS)]


@lru_cache(maxsize=None)
def terminology(name: str) -> Terminology:
    """The DICOM segment codes (SNOMED CT) of a catalog class or derived structure.

    Classes carry TotalSegmentator's codes; a derived structure carries TotalSegmentator's
    codes for the same union where it has them (``kidneys``: ``Kidney``), else codes
    composed of them (``lung_left``: ``Lung``, ``Left``).  ``Terminology.source`` says which.
    """
    entry = _catalog()["terminology"].get(name)
    if entry is None:
        raise _unknown(name)

    def code(key: str) -> Code | None:
        return None if entry[key] is None else Code(*entry[key])

    return Terminology(category=code("category"), type=code("type"), type_modifier=code("type_modifier"),
                       region=code("region"), region_modifier=code("region_modifier"), source=entry["source"])


def group_of(name: str) -> str:
    """The TS2D group model that predicts a v2 class."""
    g = structure(name).group
    if g is None:
        raise ValueError(f"{name!r} is a TotalSegmentator v1 class only; no TS2D group predicts it")
    return g


def group_classes(group: str) -> tuple[str, ...]:
    """Classes of one group, in the order of the group model's output channels."""
    groups = _catalog()["groups"]
    if group not in groups:
        raise ValueError(f"group must be one of {list(GROUPS)}, got {group!r}")
    return tuple(groups[group])


def derived_names() -> tuple[str, ...]:
    """Names of all derived structures (unions of classes)."""
    return tuple(_catalog()["derived"])


def radiographic_names() -> tuple[str, ...]:
    """Names of all radiographic structures (derived from 2D projected masks, not unions)."""
    return tuple(_catalog()["radiographic"])


def expand(name: str) -> tuple[str, ...]:
    """The catalog classes a structure stands for.

    A class expands to itself; a derived structure to the classes of its union,
    following nested derived structures (``lungs`` -> five lobes).  A radiographic
    structure is no union: it expands to itself, as a class.
    """
    if name in _catalog()["radiographic"]:
        return (name,)
    derived = _catalog()["derived"]
    if name in derived:
        out: list[str] = []
        for member in derived[name]:
            out.extend(m for m in expand(member) if m not in out)
        return tuple(out)
    structure(name)  # raises for unknown names
    return (name,)


def preview_subset(names) -> tuple[str, ...]:
    """The :data:`PREVIEW_STRUCTURES` that can be formed from ``names`` (directly or as unions).

    Where both radiographic lung fields are among ``names``, they stand in for the lung
    projections (``lung_right``, ``lung_left``), and the heart silhouette for the heart:
    what a film shows, and what the cardiothoracic ratio is measured on.
    """
    present = set(names)
    coarse = tuple(n for n in PREVIEW_STRUCTURES if any(m in present for m in expand(n)))
    if all(f in present for f in LUNG_FIELDS):
        coarse = (*LUNG_FIELDS, *(n for n in coarse if n not in ("lung_right", "lung_left")))
    if HEART_SILHOUETTE in present:
        coarse = tuple(HEART_SILHOUETTE if n == "heart" else n for n in coarse)
        coarse = coarse if HEART_SILHOUETTE in coarse else (*coarse, HEART_SILHOUETTE)
    return coarse


def v1_to_v2(name: str) -> str | None:
    """The v2 class that a v1 class's voxels belong to.

    Unchanged names map to themselves; the five v1 heart chambers map to ``"heart"``;
    ``face`` and ``pulmonary_artery`` left v2's ``total`` task and map to None.
    """
    s = structure(name)
    if s.v1_id is None:
        raise ValueError(f"{name!r} is not a TotalSegmentator v1 class")
    renamed = _catalog()["v1_to_v2"]
    return renamed[name] if name in renamed else name
