import json

import pytest

from ts2d_xray import labels


def test_class_maps_match_totalsegmentator(data):
    for version, count in (("v1", 104), ("v2", 117)):
        reference = json.loads((data / "labels" / f"totalsegmentator_{version}_classmap.json").read_text())
        cmap = labels.class_map(version)
        assert len(cmap) == count
        assert {str(k): v for k, v in cmap.items()} == reference


def test_groups_partition_v2_with_ts2d_sizes():
    sizes = {g: len(labels.group_classes(g)) for g in labels.GROUPS}
    assert sizes == {"organs": 24, "vertebrae": 26, "cardiac": 18, "muscles": 23, "ribs": 26}
    members = [n for g in labels.GROUPS for n in labels.group_classes(g)]
    assert sorted(members) == sorted(labels.classes("v2"))  # each v2 class exactly once
    assert labels.group_of("heart") == "cardiac"
    assert labels.group_of("spinal_cord") == "muscles"
    assert labels.group_of("costal_cartilages") == "ribs"


def test_every_structure_has_a_colour():
    for name in set(labels.classes("v1")) | set(labels.classes("v2")):
        rgb = labels.color(name)
        assert len(rgb) == 3 and all(0 <= c <= 255 for c in rgb)


def test_derived_structures_expand_to_classes():
    assert labels.expand("lung_left") == ("lung_upper_lobe_left", "lung_lower_lobe_left")
    assert set(labels.expand("lungs")) == set(labels.expand("lung_left")) | set(labels.expand("lung_right"))
    assert len(labels.expand("ribs")) == 24
    assert len(labels.expand("ribs_right")) == 12
    spine = labels.expand("spine")
    assert "vertebrae_C1" in spine and "vertebrae_L5" in spine and "sacrum" in spine and len(spine) == 26
    for name in labels.derived_names():
        assert all(labels.structure(m) for m in labels.expand(name))


def test_v1_to_v2_names():
    assert labels.v1_to_v2("liver") == "liver"
    assert labels.v1_to_v2("heart_ventricle_left") == "heart"
    assert labels.v1_to_v2("face") is None
    with pytest.raises(ValueError, match="not a TotalSegmentator v1 class"):
        labels.v1_to_v2("skull")


def test_unknown_names_suggest_close_matches():
    with pytest.raises(ValueError, match="did you mean.*liver"):
        labels.structure("livr")
    with pytest.raises(ValueError, match="group must be one of"):
        labels.group_classes("bones")


# --- terminology and colours (TotalSegmentator's table) ----------------------------
def _table(data) -> dict[str, dict[str, str]]:
    import csv

    with open(data / "labels" / "totalsegmentator_snomed_mapping.csv", newline="") as f:
        return {row["Structure"]: row for row in csv.DictReader(f)}


def test_every_v2_class_and_derived_structure_has_its_own_colour():
    names = list(labels.classes("v2")) + list(labels.derived_names())
    colours = [labels.color(n) for n in names]
    assert len(names) == 117 + 21 and len(set(colours)) == len(names)
    assert labels.color("kidney_left") != labels.color("kidney_right")
    assert labels.color("kidney_left") == labels.display_color("kidney_left") == (46, 138, 184)


def test_colours_and_codes_are_totalsegmentators(data):
    table = _table(data)
    classes = set(labels.classes("v1")) | set(labels.classes("v2"))
    for name in classes:
        row, term = table[name], labels.terminology(name)
        assert labels.color(name) == tuple(int(c) for c in row["DicomRGBColor"].split(",")), name
        assert term.source == "TotalSegmentator"
        for field, seq in (("category", "SegmentedPropertyCategoryCodeSequence"),
                           ("type", "SegmentedPropertyTypeCodeSequence"),
                           ("type_modifier", "SegmentedPropertyTypeModifierCodeSequence"),
                           ("region", "AnatomicRegionSequence")):
            code = getattr(term, field)
            assert (code.value if code else "") == row[f"{seq}.CodeValue"], (name, field)
            assert (code.scheme if code else "") == row[f"{seq}.CodingSchemeDesignator"], (name, field)
    # Meanings as in the table, but for one typo of it.
    assert labels.terminology("gluteus_minimus_left").type.meaning == "Gluteus minimus muscle"
    assert labels.terminology("liver").type.meaning == table["liver"]["SegmentedPropertyTypeCodeSequence.CodeMeaning"]


def test_laterality_is_coded():
    left = labels.terminology("kidney_left")
    assert (left.category.value, left.type.value, left.type_modifier.value) == ("123037004", "64033007", "7771000")
    assert labels.terminology("kidney_right").type_modifier == labels.Code("SCT", "24028007", "Right")
    for name in set(labels.classes("v2")) | set(labels.derived_names()):
        term = labels.terminology(name)
        for side in ("left", "right"):
            if name.endswith(f"_{side}") or f"_{side}_" in name:
                modifiers = [c.meaning.lower() for c in (term.type_modifier, term.region_modifier) if c]
                assert side in modifiers or side in term.type.meaning.lower(), name


def test_derived_structures_have_terminology():
    assert labels.terminology("kidneys").type.meaning == "Kidney" and labels.terminology("kidneys").type_modifier is None
    lung_left = labels.terminology("lung_left")
    assert (lung_left.type.value, lung_left.type_modifier.meaning) == ("39607008", "Left")
    assert labels.terminology("vertebrae_lumbar").region.meaning == "Lumbar spine"
    for name in labels.derived_names():
        term = labels.terminology(name)
        assert term.category.scheme == term.type.scheme == "SCT" and term.type.value.isdigit(), name
    with pytest.raises(ValueError, match="did you mean.*kidneys"):
        labels.terminology("kidnyes")


def test_catalog_names_its_sources_and_licence():
    from importlib import resources
    from pathlib import Path

    catalog = json.loads(resources.files("ts2d_xray.configs").joinpath("labels.json").read_text())
    assert "TotalSegmentator" in catalog["_license"] and "Apache License 2.0" in catalog["_license"]
    notice = (Path(__file__).resolve().parents[1] / "NOTICE").read_text()
    assert "TotalSegmentator" in notice and "Apache" in notice
    # The package reads its catalog only; the table is read by scripts/make_label_catalog.py.
    package = Path(labels.__file__).parent
    assert not [p for p in package.rglob("*.py") if "data/labels" in p.read_text()]
    assert "csv" not in Path(labels.__file__).read_text().replace("mapping.csv", "")
