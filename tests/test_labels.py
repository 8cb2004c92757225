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
