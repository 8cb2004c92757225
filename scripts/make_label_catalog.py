"""Carry TotalSegmentator's terminology table into the label catalog (``configs/labels.json``).

Run once, from the repository root, when the table changes::

    python scripts/make_label_catalog.py [path/to/totalsegmentator_snomed_mapping.csv]

The table (default: ``../shared/data/labels/totalsegmentator_snomed_mapping.csv``,
TotalSegmentator's ``totalsegmentator/resources/totalsegmentator_snomed_mapping.csv``,
Apache-2.0) gives every TotalSegmentator structure its DICOM segment terminology
(SNOMED CT category, type and type-modifier codes, an anatomic region where the type
needs one) and a DICOM RGB colour.  This script writes into the catalog:

* ``colors``: every catalog class (v1 and v2) takes the table's colour, so that no two
  v2 classes share one (left and right kidney differ);
* ``terminology``: the table's codes of every catalog class, and codes for every derived
  structure (``DERIVED``): the table's own row where TotalSegmentator has one for the
  same union (``kidney`` for ``kidneys``), else codes composed of the table's codes
  (``Lung`` + ``Left`` for ``lung_left``) or, where the table has none, of DICOM PS3.16
  as pydicom's code dictionary lists them (``pelvis``, ``gluteus``);
* ``derived_colors``: the table's colour where a derived structure has a table row, else
  the project's own colour, kept as it was;
* ``radiographic``: the radiographic structures (``RADIOGRAPHIC``: the lung fields, computed
  from 2D projected masks by ``ts2d_xray.radiographic``, and the heart silhouette, drawn on
  real films), each with the organ whose visible part or shadow it is; their colours go into ``derived_colors``, their codes into ``terminology``;
* ``_license``: where these facts come from.

The package reads only ``configs/labels.json``; it never reads the table at run time.
The script checks that every v2 class and every derived structure has its own colour.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "configs" / "labels.json"
TABLE = ROOT.parent / "shared" / "data" / "labels" / "totalsegmentator_snomed_mapping.csv"

LICENSE = ("Class maps, the five-group split, SNOMED CT terminology codes (category, type, type modifier, "
           "anatomic region) and colours of the catalog classes: TotalSegmentator "
           "(https://github.com/wasserth/TotalSegmentator, totalsegmentator/resources/"
           "totalsegmentator_snomed_mapping.csv), Copyright Jakob Wasserthal, Apache License 2.0. "
           "SNOMED CT codes are used as DICOM PS3.16 uses them. Written by scripts/make_label_catalog.py.")

# Corrections of the table, each a plain typo of a code meaning (the code value is right).
MEANING_FIXES = {("SCT", "75297007"): "Gluteus minimus muscle"}  # the table says "Gluteus minius muscle"

_LEFT = ["SCT", "7771000", "Left"]
_RIGHT = ["SCT", "24028007", "Right"]
_ANATOMY = ["SCT", "123037004", "Anatomical Structure"]
_LUNG = ["SCT", "39607008", "Lung"]  # the table's region code of lung_vessels
_RIB = ["SCT", "113197003", "Rib"]  # the table's type code of ribs
_VERTEBRA = ["SCT", "51282000", "Vertebra"]  # the table's type code of vertebrae_cervical/thoracic/lumbar
_HEART = ["SCT", "80891009", "Heart"]
_MUSCLE = ["SCT", "127954009", "Skeletal muscle"]
_PS316 = "DICOM PS3.16 (pydicom.sr.codedict)"


def _composed(type_code: list[str], modifier: list[str] | None = None, region: list[str] | None = None,
              source: str = "ts2d-xray, from codes of TotalSegmentator's table") -> dict[str, Any]:
    return {"category": _ANATOMY, "type": type_code, "type_modifier": modifier, "region": region,
            "region_modifier": None, "source": source}


# Derived structure -> the table's row of the same union, or composed codes.
DERIVED: dict[str, str | dict[str, Any]] = {
    "lung_left": _composed(_LUNG, _LEFT),
    "lung_right": _composed(_LUNG, _RIGHT),
    "lungs": _composed(_LUNG),
    "ribs_left": _composed(_RIB, _LEFT),
    "ribs_right": _composed(_RIB, _RIGHT),
    "ribs": "ribs",
    "vertebrae_cervical": "vertebrae_cervical",
    "vertebrae_thoracic": "vertebrae_thoracic",
    "vertebrae_lumbar": "vertebrae_lumbar",
    "spine": _composed(_VERTEBRA),  # 51282000: the bone structure of the spine, sacrum included
    "heart_chambers": _composed(_HEART),  # myocardium and the four chambers: the heart
    "kidneys": "kidney",
    "adrenal_glands": "adrenal_gland",
    "clavicles": "clavicula",
    "scapulae": "scapula",
    "humeri": "humerus",
    "femurs": "femur",
    "pelvis": _composed(["SCT", "118645006", "Pelvis"], source=_PS316 + ": bone structure of pelvis"),
    "autochthon": "autochthon",
    "iliopsoas": "iliopsoas",
    "gluteus": _composed(_MUSCLE, region=["SCT", "46862004", "Buttock"],
                         source="ts2d-xray: the table's Skeletal muscle, region Buttock of " + _PS316),
}

# Radiographic structure -> (the organ whose visible part or shadow it is, colour, codes).  SNOMED CT has no
# "lung field" concept among DICOM PS3.16's anatomic codes: a lung field is coded as the lung of
# its side (Lung + Right/Left, as lung_right/lung_left); the segment label tells the two apart.
_FIELD_SOURCE = "ts2d-xray: the radiographic lung field, coded as the lung of its side (TotalSegmentator's table codes)"
# The heart silhouette (the heart's shadow as a film shows it and radiologists draw it) is
# coded as the heart, for the same reason.
_SILHOUETTE_SOURCE = "ts2d-xray: the radiographic heart silhouette, coded as the heart (TotalSegmentator's table codes)"
RADIOGRAPHIC: dict[str, tuple[str, list[int], dict[str, Any]]] = {
    "lung_field_right": ("lung_right", [250, 200, 80], _composed(_LUNG, _RIGHT, source=_FIELD_SOURCE)),
    "lung_field_left": ("lung_left", [235, 130, 50], _composed(_LUNG, _LEFT, source=_FIELD_SOURCE)),
    "heart_silhouette": ("heart", [225, 60, 90], _composed(_HEART, source=_SILHOUETTE_SOURCE)),
}

_FIELDS = {"category": "SegmentedPropertyCategoryCodeSequence", "type": "SegmentedPropertyTypeCodeSequence",
           "type_modifier": "SegmentedPropertyTypeModifierCodeSequence", "region": "AnatomicRegionSequence",
           "region_modifier": "AnatomicRegionModifierSequence"}


def _code(row: dict[str, str], sequence: str) -> list[str] | None:
    scheme, value, meaning = (row[f"{sequence}.{part}"].strip() for part in
                              ("CodingSchemeDesignator", "CodeValue", "CodeMeaning"))
    if not value:
        return None
    return [scheme, value, MEANING_FIXES.get((scheme, value), meaning)]


def read_table(path: Path) -> dict[str, dict[str, Any]]:
    """The table's rows: structure -> terminology fields and ``color`` (R, G, B)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        entry: dict[str, Any] = {field: _code(row, seq) for field, seq in _FIELDS.items()}
        entry["source"] = "TotalSegmentator"
        entry["color"] = [int(c) for c in row["DicomRGBColor"].split(",")]
        out[row["Structure"].strip()] = entry
    return out


def _derived_entries(table: dict[str, dict[str, Any]], old_colors: dict[str, list[int]]
                     ) -> tuple[dict[str, Any], dict[str, list[int]]]:
    terminology, colors = {}, {}
    for name, how in DERIVED.items():
        if isinstance(how, str):
            row = table[how]
            terminology[name] = {k: v for k, v in row.items() if k != "color"}
            if how != name:
                terminology[name]["source"] = f"TotalSegmentator (its '{how}')"
            colors[name] = row["color"]
        else:
            terminology[name] = how
            colors[name] = old_colors[name]
    return terminology, colors


def _check_distinct(catalog: dict[str, Any]) -> None:
    v2 = catalog["classmaps"]["v2"].values()
    named = {n: tuple(catalog["colors"][n]) for n in v2} | {n: tuple(c) for n, c in catalog["derived_colors"].items()}
    seen: dict[tuple[int, ...], str] = {}
    for name, rgb in named.items():
        if rgb in seen:
            raise SystemExit(f"{name} and {seen[rgb]} share the colour {rgb}")
        seen[rgb] = name


def make_catalog(table_path: Path = TABLE) -> dict[str, Any]:
    """The catalog with the table's colours and terminology (see the module docstring)."""
    catalog = json.loads(CATALOG.read_text())
    table = read_table(table_path)
    classes = list(catalog["colors"])
    missing = [n for n in classes if n not in table]
    if missing or set(DERIVED) != set(catalog["derived"]):
        raise SystemExit(f"classes without a table row: {missing}; derived names to map: "
                         f"{sorted(set(catalog['derived']) ^ set(DERIVED))}")
    catalog["colors"] = {n: table[n]["color"] for n in classes}
    terminology = {n: {k: v for k, v in table[n].items() if k != "color"} for n in classes}
    derived_terms, catalog["derived_colors"] = _derived_entries(table, catalog["derived_colors"])
    catalog["radiographic"] = {name: lung for name, (lung, _, _) in RADIOGRAPHIC.items()}
    catalog["derived_colors"] |= {name: rgb for name, (_, rgb, _) in RADIOGRAPHIC.items()}
    catalog["terminology"] = terminology | derived_terms | {name: t for name, (_, _, t) in RADIOGRAPHIC.items()}
    catalog["_about"] = catalog["_about"].replace(
        "Colours: RGB 0-255, chosen for this project.",
        "Colours: DICOM RGB 0-255 from TotalSegmentator's terminology table.")
    catalog["_about"] = catalog["_about"].replace(
        "derived_colors: display colours of derived structures (others take their first member's).",
        "derived_colors: display colours of derived structures (the table's where it has the union, else the "
        "project's). terminology: DICOM segment codes [scheme, value, meaning] per class and derived structure "
        "(category, type, type_modifier, region, region_modifier; null where none) and their source.")
    catalog["_about"] = catalog["_about"].replace(
        "derived_colors: display colours of derived structures (",
        "radiographic: structures computed from 2D projected masks, not unions (the radiographic lung fields), "
        "each with the lung whose visible part it is. derived_colors: display colours of derived and "
        "radiographic structures (")
    catalog["_about"] = catalog["_about"].replace(
        "(the radiographic lung fields), each with the lung whose visible part it is.",
        "(the radiographic lung fields) or drawn on real films (the heart silhouette), each with the organ "
        "whose visible part or shadow it is.")
    catalog["_license"] = LICENSE
    _check_distinct(catalog)
    return catalog


def _dump(obj: Any, level: int = 0) -> str:
    """JSON with one space of indent per level, and colours and codes (short lists of scalars) on one line."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dump(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and obj and (len(obj) > 3 or any(isinstance(v, (dict, list)) for v in obj)):
        return "[\n" + ",\n".join(f"{inner}{_dump(v, level + 1)}" for v in obj) + f"\n{pad}]"
    return json.dumps(obj)


def main(argv: list[str]) -> int:
    catalog = make_catalog(Path(argv[0]) if argv else TABLE)
    order = ["_about", "_license", *[k for k in catalog if not k.startswith("_")]]
    if "radiographic" in order:  # keep it beside "derived" for readers of the file
        order.remove("radiographic")
        order.insert(order.index("derived_colors"), "radiographic")
    text = _dump({k: catalog[k] for k in order})
    assert json.loads(text) == {k: catalog[k] for k in order}
    CATALOG.write_text(text + "\n")
    print(f"wrote {CATALOG}: {len(catalog['terminology'])} terminology entries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
