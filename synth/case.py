"""One case of a data set build: what it is (:class:`SampleSpec`), its job, and building it.

One *case* is one 2D sample of one CT: a coronal projection (``kind="coronal"``) or a
synthetic radiograph (``kind="xray"``), written into each target data set with its
masks in that data set's structure order.  :func:`build_case` is a plain top-level
function of a picklable :class:`CaseJob` (paths and plain values), so it runs alike in
this process, a process pool or a dask.distributed worker (see :mod:`synth.runners`);
each case draws its random numbers from :func:`case_rng`, so a seed gives the same
files whatever the workers and their order.

Images and masks follow the radiograph display convention (patient's right on the image
left, head up; see :mod:`ts2d_xray.image`) and are written in the format of
:mod:`ts2d_xray.dataset`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ts2d_xray.dataset import DISPLAY, write_case
from ts2d_xray.errors import OutputError
from ts2d_xray.image import Image2D, LabelMap, Masks, Volume
from ts2d_xray.kinds import CHANNELS, KINDS, Kind
from ts2d_xray.labels import LUNG_FIELDS
from ts2d_xray.projection import DEFAULT_SPACING_MM

from synth.deform import DeformSpec, deform, random_transform
from synth.subjects import Subject, labelled_classes

if TYPE_CHECKING:
    from synth.drr import Prepared

__all__ = [
    "CORONAL_MODE",
    "CaseJob",
    "CaseResult",
    "SampleSpec",
    "Target",
    "build_case",
    "case_rng",
    "forget_loaded",
    "stable_hash",
]

log = logging.getLogger(__name__)

#: Projection mode of coronal cases: TS2D's raw-HU projection (see ts2d_xray.projection).
CORONAL_MODE = "ts2d"


@dataclass(frozen=True)
class SampleSpec:
    """What one case's pixels are; a data set is built with one spec, checked on resume.

    Attributes:
        kind: ``"coronal"`` (TS2D projection, 2 channels mean/max in HU) or ``"xray"``
            (synthetic radiograph from :func:`synth.drr.synthesize`, 1 channel in [0, 1]).
        preset: X-ray preset: a name (``ts2d_xray/configs/synth/<preset>.json``) or a preset JSON
            path (see :func:`synth.presets.load_preset`); xray only.
        seed: Base seed (>= 0) of every case's random generator.
        spacing: Pixel size in mm of coronal projections (xray: set by the preset).
        shape: ``(H, W)`` detector pixels of xray cases, or None for the preset's.
        deform: Random 3D deformation of the CT and labels before projecting or
            rendering (see :mod:`synth.deform`), or None.  Case 0 of each CT is
            always the undeformed scan; cases 1, 2, ... are deformed copies.
    """

    kind: Kind = "coronal"
    preset: str | None = None
    seed: int = 0
    spacing: float = DEFAULT_SPACING_MM
    shape: tuple[int, int] | None = None
    deform: DeformSpec | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.kind == "coronal":
            if self.preset is not None:
                raise ValueError(f"preset is for kind 'xray'; coronal projections have none (got {self.preset!r})")
            if self.shape is not None:
                raise ValueError(f"shape is for kind 'xray'; coronal projections are sized by spacing (got {self.shape})")
            if not self.spacing > 0:
                raise ValueError(f"spacing must be > 0 mm, got {self.spacing}")
        else:
            from synth.presets import load_preset, preset_names

            if self.preset is None:
                raise ValueError(f"kind 'xray' needs a preset, one of {list(preset_names())}")
            load_preset(self.preset)  # unknown names raise, listing the presets
            if self.shape is not None and (len(self.shape) != 2 or min(self.shape) < 1):
                raise ValueError(f"shape must be two positive sizes (H, W), got {self.shape}")

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names of the case images (see :data:`ts2d_xray.kinds.CHANNELS`)."""
        return CHANNELS[self.kind]

    def settings(self) -> dict[str, Any]:
        """The spec as stored in dataset.json (spacing is per case for xray)."""
        return {"kind": self.kind, "preset": self.preset, "seed": self.seed,
                "spacing": self.spacing if self.kind == "coronal" else None,
                "shape": None if self.shape is None else list(self.shape),
                "deform": None if self.deform is None else self.deform.to_dict()}


@dataclass(frozen=True)
class Target:
    """One output data set: its folder, the groups it covers and its structure order."""

    folder: Path
    groups: tuple[str, ...]
    structures: tuple[str, ...]


@dataclass(frozen=True)
class CaseJob:
    """Everything :func:`build_case` needs (paths and plain values; cheap to pickle)."""

    case_id: str
    subject: Subject
    index: int
    spec: SampleSpec
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one case: ``message`` says why it failed.

    ``output_error`` is ``(path, problem)`` when the case failed because an output could
    not be written (disk full, read-only folder: an :class:`~ts2d_xray.errors.OutputError`);
    the subject is not at fault and the build stops.
    """

    case_id: str
    ok: bool
    message: str | None = None
    seconds: float = 0.0
    output_error: tuple[str | None, str] | None = None


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string that is the same in every process and Python version.

    (Python's ``hash()`` of a string changes per process, so it cannot seed workers.)
    """
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The random generator of one case: independent of workers and build order."""
    return np.random.default_rng([seed, stable_hash(case_id)])


@dataclass(frozen=True, eq=False)
class _Loaded:
    """A subject read for sampling; ``prepared`` holds synth.drr's per-CT work (xray)."""

    ct: Volume
    labels: LabelMap
    prepared: Prepared | None
    labelled: frozenset[str]


@dataclass(frozen=True, eq=False)
class _Sample:
    """One case's pixels and masks before they are arranged for each target data set."""

    image: Image2D
    masks: Masks  # v2 names
    params: dict[str, Any]
    labelled: frozenset[str]  # v2 classes the source labels at all (even if empty here), and the lung fields


def build_case(job: CaseJob) -> CaseResult:
    """Build one case into every target data set; never raises.

    Any error (unreadable CT, labels on another grid, ...) becomes a failed result with
    its message, so that one bad subject does not stop a build.  An output that cannot
    be written is marked as such (``output_error``), for the build to stop.  Nothing of
    a failed case is left in the data sets.
    """
    started = time.perf_counter()
    try:
        sample = _make_sample(job)
        for target in job.targets:
            _write_case(job, target, sample)
    except OutputError as err:
        return CaseResult(job.case_id, False, f"cannot write {err}", time.perf_counter() - started,
                          (err.path, err.problem))
    except Exception as err:  # noqa: BLE001 - the boundary of one case: report, go on
        log.debug("%s failed", job.case_id, exc_info=True)
        return CaseResult(job.case_id, False, f"{type(err).__name__}: {err}", time.perf_counter() - started)
    return CaseResult(job.case_id, True, None, time.perf_counter() - started)


def _make_sample(job: CaseJob) -> _Sample:
    """Project or render one case of a subject (deformed for cases after the first, when asked)."""
    spec = job.spec
    loaded = _load(job.subject, spec.kind)
    rng = case_rng(spec.seed, job.case_id)
    ct, labels, prepared, deformation = loaded.ct, loaded.labels, loaded.prepared, None
    if spec.deform is not None and job.index > 0:
        transform, deformation = random_transform(ct.grid, rng, spec.deform)
        ct, labels = deform(ct, labels, transform, spec.deform.spacing_mm)
        if spec.kind == "xray":
            from synth.drr import prepare

            prepared = prepare(ct, labels)
    if spec.kind == "coronal":
        from ts2d_xray.projection import project_ct, project_labels

        image = project_ct(ct, mode=CORONAL_MODE, spacing=spec.spacing, display=DISPLAY)
        masks = _with_lung_fields(project_labels(labels, spacing=spec.spacing, display=DISPLAY), labels, spec.spacing)
        params = {"mode": CORONAL_MODE, "display": DISPLAY, "spacing_mm": spec.spacing}
    else:
        from synth.drr import synthesize

        drawn = synthesize(prepared, preset=spec.preset, rng=rng, shape=spec.shape)
        image, masks, params = drawn.image, drawn.masks, dict(drawn.params)
    if spec.deform is not None:
        params["deformation"] = deformation
    return _Sample(image, masks.to_v2(), params, _labelled(loaded.labelled))


def _labelled(classes: frozenset[str]) -> frozenset[str]:
    """The structures a case labels: the source's classes, and the lung fields where those define them."""
    from ts2d_xray.radiographic import lung_fields_labelled

    return classes | frozenset(LUNG_FIELDS) if lung_fields_labelled(classes) else classes


def _with_lung_fields(masks: Masks, labels: LabelMap, spacing: float) -> Masks:
    """Coronal ``masks`` followed by the radiographic lung fields (:mod:`ts2d_xray.radiographic`).

    The hiding structures are projected once more, at
    :data:`~ts2d_xray.radiographic.HIDING_MIN_MM` of path length.
    """
    from ts2d_xray.projection import project_labels
    from ts2d_xray.radiographic import HIDING_MIN_MM, derive_lung_fields

    hiding = project_labels(labels, spacing=spacing, display=DISPLAY, min_mm=HIDING_MIN_MM).to_v2()
    fields = derive_lung_fields(masks, hiding)
    return Masks(np.concatenate([masks.array, fields.array]), masks.names + fields.names, masks.plane)


# The cases of one CT usually follow each other in a worker (jobs are submitted subject
# by subject), so the last subject read is kept: reading a CT and its labels, and
# preparing its material densities, costs more than rendering one radiograph.
@lru_cache(maxsize=1)
def _load(subject: Subject, kind: str) -> _Loaded:
    """Read a subject's CT and labels (and prepare its densities for ``kind`` xray)."""
    from ts2d_xray.io import read_ct, read_labels

    ct = read_ct(subject.ct)
    labels = read_labels(subject.labels, classmap=subject.classmap, reference=ct)
    prepared = None
    if kind == "xray":
        from synth.drr import prepare

        prepared = prepare(ct, labels)
    return _Loaded(ct, labels, prepared, labelled_classes(subject))


def forget_loaded() -> None:
    """Drop the subject kept in memory by the last :func:`build_case` of this process."""
    _load.cache_clear()


def _arrange(masks: Masks, names: Sequence[str]) -> Masks:
    """Masks in exactly ``names`` order; structures the sample lacks are empty layers."""
    array = np.zeros((len(names), *masks.plane.shape), dtype=bool)
    for k, name in enumerate(names):
        if name in masks.names:
            array[k] = masks.array[masks.names.index(name)]
    return Masks(array, tuple(names), masks.plane)


def _record(job: CaseJob, target: Target, sample: _Sample, masks: Masks) -> dict[str, Any]:
    """The provenance of one case in one data set (``cases/<case>.json``)."""
    empty = [n for n, layer in zip(masks.names, masks.array) if not layer.any()]
    return {
        "case": job.case_id,
        "subject": job.subject.id,
        "index": job.index,
        "source_ct": str(job.subject.ct),
        "source_labels": str(job.subject.labels),
        "classmap": job.subject.classmap,
        "shape": list(sample.image.plane.shape),
        "spacing_mm": [round(s, 6) for s in sample.image.plane.spacing],
        "params": sample.params,
        "empty_structures": empty,
        "unlabelled_structures": [n for n in target.structures if n not in sample.labelled],
    }


def _write_case(job: CaseJob, target: Target, sample: _Sample) -> None:
    """Write one case into one data set (see :func:`ts2d_xray.dataset.write_case`)."""
    masks = _arrange(sample.masks, target.structures)
    write_case(target.folder, job.case_id, sample.image, masks, _record(job, target, sample, masks))
