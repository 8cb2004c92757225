"""Presets for synthetic radiographs: one JSON file per preset in ``ts2d_xray/configs/synth/``.

A preset has a ``description`` and four sections (each optional; what is missing keeps
its defaults):

``view``
    Ranges the acquisition geometry is sampled from (:class:`synth.geometry.ViewRanges`).
``physics``
    X-ray physics settings and ranges (:class:`synth.physics_params.PhysicsRanges`).
``augment``
    Domain randomisation (:class:`synth.randomize.AugmentParams`).
``labels``
    Path-length thresholds in mm that make a structure present on a ray:
    ``default_threshold_mm`` and per-structure ``thresholds_mm`` (e.g. a higher one for
    the lung lobes, so the masks follow the lung field a reader sees).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ts2d_xray import labels as catalog
from ts2d_xray.records import record_from_dict

from synth.geometry import ViewRanges

__all__ = ["LabelThresholds", "Preset", "load_preset", "preset_names"]

@dataclass(frozen=True)
class _PresetFile:
    """A preset JSON file's sections, as written (see the module docstring)."""

    description: str = ""
    view: Mapping[str, Any] = field(default_factory=dict)
    physics: Mapping[str, Any] = field(default_factory=dict)
    augment: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _LabelsSection:
    """A preset's ``"labels"`` section as written in the JSON file."""

    default_threshold_mm: float = 1.0
    thresholds_mm: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelThresholds:
    """Path length (mm) a ray must cross inside a structure for the pixel to belong to it."""

    default_mm: float = 1.0
    per_structure_mm: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelThresholds:
        """Thresholds from a preset's ``"labels"`` section (structure names checked against the catalogue)."""
        section = record_from_dict(_LabelsSection, d, what="label settings")
        per = {str(k): float(v) for k, v in dict(section.thresholds_mm).items()}
        for name in per:
            catalog.expand(name)  # unknown structure names raise with suggestions
        default = float(section.default_threshold_mm)
        if default < 0 or any(v < 0 for v in per.values()):
            raise ValueError("label thresholds must be >= 0 mm")
        return cls(default, MappingProxyType(per))

    def threshold(self, name: str) -> float:
        """Threshold of one structure: its own, else that of a derived group holding it, else the default."""
        if name in self.per_structure_mm:
            return self.per_structure_mm[name]
        for group, value in self.per_structure_mm.items():
            if group in catalog.derived_names() and name in catalog.expand(group):
                return value
        return self.default_mm


@dataclass(frozen=True)
class Preset:
    """A parsed preset; ``physics`` and ``augment`` stay raw until their modules parse them."""

    name: str
    description: str
    view: ViewRanges
    physics: Mapping[str, object]
    augment: Mapping[str, object]
    labels: LabelThresholds


def preset_names() -> tuple[str, ...]:
    """Names of the presets shipped with ts2d-xray."""
    folder = resources.files("ts2d_xray.configs.synth")
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")))


@lru_cache(maxsize=16)
def load_preset(name_or_path: str | PathLike) -> Preset:
    """Load a shipped preset by name (``"chest-pa"``) or a preset JSON file by path."""
    text, name = _preset_text(name_or_path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"preset {name_or_path}: not valid JSON ({err})") from None
    sections = record_from_dict(_PresetFile, data, what=f"preset {name_or_path} section")
    return Preset(
        name=name,
        description=str(sections.description),
        view=ViewRanges.from_dict(sections.view),
        physics=MappingProxyType(dict(sections.physics)),
        augment=MappingProxyType(dict(sections.augment)),
        labels=LabelThresholds.from_dict(sections.labels),
    )


def _preset_text(name_or_path: str | PathLike) -> tuple[str, str]:
    """``(JSON text, preset name)`` of a preset file path or a shipped preset's name."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return path.read_text(), path.stem
    name = str(name_or_path)
    if name not in preset_names():
        raise ValueError(f"unknown preset {name!r}; shipped presets: {', '.join(preset_names())} "
                         f"(or give a path to a preset .json)")
    return resources.files("ts2d_xray.configs.synth").joinpath(f"{name}.json").read_text(), name
