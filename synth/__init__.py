"""Synthetic training data from labelled CTs: radiographs (DRRs) with masks, and data sets.

Steps of one synthetic radiograph (:func:`synthesize`, settings from a preset,
:func:`load_preset`):

1. :func:`prepare`: CT in HU -> per-material densities (:mod:`synth.materials`), once per CT.
2. A view is drawn from the preset's ranges (:class:`ViewRanges` -> :class:`View`,
   :mod:`synth.geometry`); per-structure attenuation scales and physics parameters
   too (:mod:`synth.randomize`, :mod:`synth.physics_params`).
3. Ray casting of the densities and of every structure's path length on the same rays
   (:mod:`synth.render`); masks are the pixels whose path exceeds a threshold.
4. Image formation: Beer-Lambert with a tube spectrum, scatter, noise, blur, tone curve
   (:func:`radiograph`, :mod:`synth.physics`).
5. Domain randomisation of image and masks together (:func:`augment`, shared with
   training: :mod:`ts2d_xray.xray_randomize`).

:func:`synth.build.build` writes nnU-Net v2 raw data sets of such radiographs, or of
coronal projections, from folders of labelled CTs (:mod:`synth.case`,
:mod:`synth.runners`), optionally from randomly deformed copies of each CT
(:func:`synth.deform.deform`).  Everything random comes from the generator passed in
(per case: :func:`case_rng`), so a seed reproduces the same files.

Layers: synth imports ``ts2d_xray``'s core, ``io``, ``xray_randomize``, ``dataset`` and
``nnunet`` layers only (never ``segment``, ``train``, ``evaluate``), except its command
line :mod:`synth.cli`, which takes its argument types from ``ts2d_xray.cli.argtypes``
and is imported only by ``ts2d_xray.cli``; ``ts2d_xray`` never imports synth except
lazily from its command line.  Names from the modules that import torch (seconds) are loaded on first use.  The
three functions named like their modules are reached through them:
``synth.build.build``, ``synth.deform.deform`` and ``synth.render.render``.

Example:
    >>> import numpy as np
    >>> import synth
    >>> from ts2d_xray.io import read_ct, read_labels
    >>> ct = read_ct("ct.nii.gz")  # doctest: +SKIP
    >>> prepared = synth.prepare(ct, read_labels("segmentations/", reference=ct))  # doctest: +SKIP
    >>> sample = synth.synthesize(prepared, preset="chest-pa", rng=np.random.default_rng(0))  # doctest: +SKIP
    >>> synth.save_sample(sample, out_folder, "drr")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Light modules (no torch) are imported now.  The functions named like their modules
# (build, deform, render) are not bound here: ``synth.build`` stays the module, as
# ``import synth.build`` makes it anyway.
from synth.build import ALL_GROUPS, BuildOptions, BuildReport
from synth.case import SampleSpec, case_rng
from synth.deform import DeformSpec, random_transform
from synth.geometry import View, ViewRanges, detector_rays, view_plane
from synth.presets import LabelThresholds, Preset, load_preset, preset_names
from synth.randomize import AugmentParams, attenuation_scales, augment
from synth.subjects import Subject, find_subjects

#: Names from modules that import torch (seconds): loaded on first use.
_LAZY: dict[str, str] = {
    "Prepared": "synth.drr", "Sample": "synth.drr", "prepare": "synth.drr", "save_sample": "synth.drr",
    "synthesize": "synth.drr",
    "MATERIALS": "synth.materials", "MaterialThresholds": "synth.materials", "hu_to_densities": "synth.materials",
    "mass_attenuation": "synth.materials", "tube_spectrum": "synth.materials",
    "PhysicsParams": "synth.physics_params", "PhysicsRanges": "synth.physics_params",
    "radiograph": "synth.physics",
    "RenderResult": "synth.render", "label_masks": "synth.render",
}

__all__ = sorted([
    "ALL_GROUPS", "AugmentParams", "BuildOptions", "BuildReport", "DeformSpec", "LabelThresholds", "Preset",
    "SampleSpec", "Subject", "View", "ViewRanges", "attenuation_scales", "augment", "case_rng", "detector_rays", "find_subjects", "load_preset", "preset_names", "random_transform", "view_plane",
    *_LAZY,
])


def __getattr__(name: str) -> Any:
    """Import a torch-backed public name's module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see of the lazy names
    from synth.drr import Prepared, Sample, prepare, save_sample, synthesize
    from synth.materials import MATERIALS, MaterialThresholds, hu_to_densities, mass_attenuation, tube_spectrum
    from synth.physics import radiograph
    from synth.physics_params import PhysicsParams, PhysicsRanges
    from synth.render import RenderResult, label_masks
