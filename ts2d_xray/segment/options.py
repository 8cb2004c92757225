"""How a :class:`~ts2d_xray.segment.segmenter.Segmenter` runs, which model it uses, and which structures it computes.

:class:`SegmentOptions` holds every setting (the CLI's ``segment`` flags map onto it
one to one); :func:`default_model` is the model used when none is named, per input
kind, for the CLI and the API alike; :func:`needed_structures` turns ``--structures``
(catalog classes and derived names) into the model's structures to compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ts2d_xray.errors import InputError
from ts2d_xray.labels import expand, is_known
from ts2d_xray.nnunet.backend import BACKENDS
from ts2d_xray.segment.inputs import MAX_CT_VOXELS, MAX_PIXELS
from ts2d_xray.segment.models import bundled_models, installed_summary, list_models

__all__ = ["SegmentOptions", "default_model", "needed_structures"]


@dataclass(frozen=True)
class SegmentOptions:
    """How a :class:`~ts2d_xray.segment.segmenter.Segmenter` runs.

    Attributes:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        groups: Group models to run (default: all of the bundle's).
        structures: Structures to compute and write (the model's own names, catalog
            classes, and derived names such as ``lungs``, which stand for their member
            classes); default: all of the model's.  Only the groups that predict one of
            them run.  Checked against the model when it is loaded
            (:func:`needed_structures`).
        tta: Test-time augmentation (shifted copies, allowed mirrorings); off by default.
        threshold: Sigmoid threshold for every structure, overriding the manifest's.
        step: Sliding-window step as a fraction of the patch (nnU-Net: 0.5).
        batch_size: Windows per forward pass (default 1 on CPU, 4 on CUDA).
        trust_checkpoint: Load checkpoints that ``weights_only=True`` refuses (can run
            code from the file).
        verify: Check the weights before loading them (default: always; see
            :func:`ts2d_xray.segment.integrity.verify_weights`); False skips it.
        display: Display convention of a bundle without a manifest (see
            :func:`ts2d_xray.segment.manifest.infer_manifest`).
        invert: Override the radiograph reader's MONOCHROME1 inversion.
        max_pixels: Largest 2D input (and working image), in pixels.
        max_voxels: Largest CT, in voxels.
        exact: Run published TS2D/TSXR models exactly as TS2D does (default); False pads
            only to the network's stride, not the full patch: faster, not TS2D's masks.
        backend: What runs the networks (:mod:`ts2d_xray.nnunet.backend`): ``"torch"``,
            ``"onnx"`` (ONNX Runtime on the CPU, ``pip install 'ts2d-xray[onnx]'``; each
            network exported once into ``$TS2D_XRAY_HOME/onnx``, keyed by its weights'
            checksum) or ``"auto"`` (default: onnx on a CPU when it is installed, else torch).
    """

    device: str = "auto"
    groups: tuple[str, ...] | None = None
    structures: tuple[str, ...] | None = None
    tta: bool = False
    threshold: float | None = None
    step: float = 0.5
    batch_size: int | None = None
    trust_checkpoint: bool = False
    verify: bool | None = None
    display: str | None = None
    invert: bool | None = None
    max_pixels: int = MAX_PIXELS
    max_voxels: int = MAX_CT_VOXELS
    exact: bool = True
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0 < self.step <= 1:
            raise ValueError(f"step must be in (0, 1], got {self.step}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("groups", "structures"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"{name} must be a sequence of names, not the string {value!r}")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.structures is not None and not self.structures:
            raise ValueError("structures is empty; give at least one name, or None for all")


def default_model(kind: str | None = None) -> str:
    """The model used when none is named, for inputs of ``kind`` (``"coronal"`` or ``"xray"``, when given).

    The only installed model (of ``kind``); with none installed, the only bundled one
    (see :func:`ts2d_xray.segment.models.bundled_models`); InputError listing them otherwise.
    """
    models = [m for m in list_models() if kind is None or m.kind == kind]
    if not models:
        models = [m for m in bundled_models() if kind is None or m.kind == kind]
    if len(models) == 1:
        return models[0].name
    what = f"{kind} " if kind else ""
    if not models:
        raise InputError(None, f"no {what}model to use: pass --model NAME_OR_PATH (model=...); {installed_summary()}")
    raise InputError(None, f"{len(models)} {what}models are installed ({', '.join(m.name for m in models)}); "
                           "choose one with --model (model=...)")


def needed_structures(requested: Sequence[str] | None, available: Sequence[str], model: str) -> tuple[str, ...]:
    """The model's structures to compute for ``requested`` names, in the model's order (all for None).

    A name the model has stands for itself; a derived name (``lungs``) for its member
    classes the model has.

    Raises:
        ValueError: A name the catalog does not know (with suggestions), or one none of
            whose classes the model predicts.
    """
    if requested is None:
        return tuple(available)
    wanted: set[str] = set()
    for name in requested:
        members = {name} if name in available else {m for m in expand(name) if m in available}
        if not members:
            what = "structure" if is_known(name) else "name"
            raise ValueError(f"model {model!r} predicts no {what} of {name!r}; it has "
                             f"{len(available)} structures (ts2d-xray models info {model})")
        wanted |= members
    return tuple(s for s in available if s in wanted)
