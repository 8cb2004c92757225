"""Segment CTs, coronal projections and radiographs with a model bundle, in one process.

:class:`Segmenter` loads every group model of a bundle once (no worker process per
model, no temporary files) and runs them on each input:

1. **Read** the input and tell its kind from the header (:mod:`ts2d_xray.segment.inputs`): a
   3D CT is projected as the model was trained (``projection_mode``, at the model's
   pixel size, radiograph display); a 2-channel projection is used as it is; a
   radiograph goes through the radiograph reader (DICOM modality and VOI LUTs,
   MONOCHROME1 inversion, [0, 1]).  A model of the other kind is refused.
2. **Orient**: flip (and, for a header with rows along left-right, transpose) the
   image into the model's display convention.  No interpolation.
3. **Resample** to each group's pixel size (:func:`ts2d_xray.projection.resample`, as
   in training), **normalise** and **predict** (:mod:`ts2d_xray.segment.groups` on
   :mod:`ts2d_xray.nnunet`).
4. **Back**: sigmoid probabilities are resampled (bilinear) to the oriented input grid,
   thresholded, and un-flipped: masks land on the input's own pixel grid.

A published TS2D/TSXR model runs as TS2D runs it (:func:`ts2d_xray.segment.groups.predict_exact`):
a CT projected on its own grid, one channel per channel name, steps 3-4 nnU-Net's.

Example:
    >>> from ts2d_xray import Segmenter
    >>> with Segmenter(model="my-model", device="cpu") as seg:   # doctest: +SKIP
    ...     result = seg("chest.dcm")
    ...     result.save("out/chest")
    ...     heart = result.mask("heart")                          # (H, W) bool
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import DISPLAYS, Image2D, Masks, Plane, Volume, require_finite
from ts2d_xray.orientation import Orientation
from ts2d_xray.kinds import CHANNELS, INPUT_MODEL_KIND
from ts2d_xray.records import field_types, record_from_dict
from ts2d_xray.segment.inputs import MAX_CT_VOXELS, MAX_PIXELS, InputInfo, inspect_input
from ts2d_xray.segment.integrity import verify_weights
from ts2d_xray.segment.manifest import ModelManifest
from ts2d_xray.segment.models import bundled_models, installed_summary, list_models, open_model
from ts2d_xray.segment.result import Result

if TYPE_CHECKING:  # torch is imported when a Segmenter is made, not when this module is
    import torch

    from ts2d_xray.segment.groups import GroupNetwork

__all__ = ["MAX_MASK_BYTES", "SegmentOptions", "Segmenter", "default_model"]

log = logging.getLogger(__name__)

#: Largest output mask stack (K structures x H x W bytes) a segmentation may allocate.
MAX_MASK_BYTES = 8 * 2**30
_KIND_WORDS = {"coronal": "coronal CT projections (2 channels: mean, max; or a 3D CT, projected)",
               "xray": "radiographs (1 channel)"}
_INPUT_WORDS = {"ct": "a 3D CT", "projection": "a 2-channel coronal projection", "radiograph": "a 1-channel radiograph"}


@dataclass(frozen=True)
class SegmentOptions:
    """How a :class:`Segmenter` runs.

    Attributes:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        groups: Group models to run (default: all of the bundle's).
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
    """

    device: str = "auto"
    groups: tuple[str, ...] | None = None
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

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0 < self.step <= 1:
            raise ValueError(f"step must be in (0, 1], got {self.step}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(self.groups))


def default_model(kind: str | None = None) -> str:
    """The model used when none is named, for inputs of ``kind`` (when given).

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


class Segmenter:
    """Segments images with every group model of one bundle, loaded once.

    Args:
        model: Installed or bundled model name, bundle folder, nnU-Net folder or
            ``.zip``; default: :func:`default_model` without a kind (the only installed
            model, else the only bundled one; with the two bundled defaults, name one).
        options: A :class:`SegmentOptions`; or give its fields as keyword arguments.

    Call it on a path (CT file or DICOM folder, projection, radiograph), a
    :class:`~ts2d_xray.image.Volume`, an :class:`~ts2d_xray.image.Image2D`, or a numpy
    array ``(H, W)`` / ``(C, H, W)`` (in the model's display convention, at ``spacing``
    mm, default the model's).  Returns a :class:`~ts2d_xray.segment.result.Result`.
    """

    def __init__(self, model: str | PathLike | None = None, *, options: SegmentOptions | None = None,
                 **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise TypeError("give either options= or keyword options, not both")
        unknown = sorted(set(kwargs) - set(field_types(SegmentOptions)))
        if unknown:  # a TypeError, as for any unknown keyword argument
            raise TypeError(f"unknown option(s) {unknown}; SegmentOptions has {sorted(field_types(SegmentOptions))}")
        self.options = options or record_from_dict(SegmentOptions, kwargs)
        from ts2d_xray.device import resolve_device  # imports torch: not at module import time

        self.device = resolve_device(self.options.device)
        self.bundle = open_model(default_model() if model is None else model, display=self.options.display)
        try:
            manifest = self.bundle.manifest
            selected = tuple(dict.fromkeys(self.options.groups or manifest.group_names))
            specs = [manifest.group(g) for g in selected]
            if self.options.verify is not False:
                verify_weights(self.bundle.root, manifest, remember=self.bundle.installed)
            from ts2d_xray.segment.groups import load_group

            if self.device.type == "cuda":
                import torch

                torch.backends.cudnn.benchmark = True
            self.groups = [load_group(self.bundle.root, s, device=self.device, trust=self.options.trust_checkpoint)
                           for s in specs]
        except BaseException:
            self.bundle.close()
            raise
        self.structures = tuple(dict.fromkeys(s for g in self.groups for s in g.structures))
        #: True when a group is a published TS2D model: CTs are then projected on their own grid, as TS2D does.
        self.exact = any(g.exact is not None for g in self.groups)
        threshold = self.options.threshold
        self.thresholds = {s: threshold if threshold is not None else manifest.thresholds.get(s, manifest.threshold)
                           for s in self.structures}

    @property
    def manifest(self) -> ModelManifest:
        """The bundle's manifest."""
        return self.bundle.manifest

    @property
    def kind(self) -> str:
        """``"coronal"`` or ``"xray"``: the input kind the model segments."""
        return self.manifest.kind

    def close(self) -> None:
        """Release the networks (and GPU memory) and any unpacked archive."""
        self.groups = []
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        self.bundle.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- inputs -------------------------------------------------------------------
    def check(self, path: str | PathLike) -> InputInfo:
        """Inspect a path's header (kind, size limits) and refuse a kind the model cannot segment."""
        info = inspect_input(path, max_pixels=self.options.max_pixels, max_voxels=self.options.max_voxels)
        self._check_kind(info.kind, info.path)
        return info

    def _check_kind(self, input_kind: str, source: str | PathLike | None) -> None:
        if INPUT_MODEL_KIND[input_kind] != self.kind:
            raise InputError(source, f"model {self.manifest.name!r} segments {_KIND_WORDS[self.kind]}; "
                                     f"this is {_INPUT_WORDS[input_kind]}")

    def _read(self, x: str | PathLike | Volume | Image2D | np.ndarray,
              spacing: float | Sequence[float] | None) -> tuple[Image2D, str, str | None]:
        from ts2d_xray.io import read_ct, read_projection, read_radiograph

        if isinstance(x, (str, PathLike)):
            info = self.check(x)
            if info.kind == "ct":
                return self._project(read_ct(info.path)), "ct", str(info.path)
            if info.kind == "projection":
                return read_projection(info.path, display=None), "projection", str(info.path)
            return read_radiograph(info.path, display=None, invert=self.options.invert), "radiograph", str(info.path)
        if isinstance(x, Volume):
            self._check_kind("ct", x.source)
            if x.array.size > self.options.max_voxels:
                raise InputError(x.source, f"{x.array.size:,} voxels exceed max_voxels={self.options.max_voxels:,}")
            return self._project(x), "ct", x.source
        if isinstance(x, Image2D):
            kind = {2: "projection", 1: "radiograph"}.get(x.array.shape[0])
            if kind is None:
                raise InputError(x.meta.get("source"), f"an image with {x.array.shape[0]} channels; expected 1 or 2")
            self._check_kind(kind, x.meta.get("source"))
            require_finite(x.array, x.meta.get("source"))
            return x, kind, x.meta.get("source")
        if isinstance(x, np.ndarray):
            return self._from_array(x, spacing)
        raise TypeError(f"input must be a path, Volume, Image2D or numpy array, got {type(x).__name__}")

    def _project(self, ct: Volume) -> Image2D:
        from ts2d_xray.projection import project_ct, resample

        image = project_ct(ct, mode=self.manifest.projection_mode, spacing=None, display="radiograph")
        return image if self.exact else resample(image, self.manifest.spacing_mm)

    def _from_array(self, array: np.ndarray, spacing: float | Sequence[float] | None) -> tuple[Image2D, str, None]:
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[0] not in (1, 2):
            raise ValueError(f"array input must be (H, W) or (C, H, W) with C = 1 or 2, got shape {array.shape}")
        if array.size == 0 or array.dtype.kind not in "biuf":
            raise ValueError(f"array input must hold numbers and pixels, got {array.dtype} of shape {array.shape}")
        require_finite(array, None)
        kind = "projection" if array.shape[0] == 2 else "radiograph"
        self._check_kind(kind, None)
        spacing = self.manifest.spacing_mm if spacing is None else tuple(np.broadcast_to(np.asarray(spacing, float), 2))
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be (row_mm, col_mm), both finite and > 0; got {spacing}")
        col = (1.0, 0.0, 0.0) if DISPLAYS[self.manifest.display] == "L" else (-1.0, 0.0, 0.0)
        plane = Plane(tuple(array.shape[1:]), tuple(float(s) for s in spacing), col, (0.0, 0.0, -1.0))
        return Image2D(np.asarray(array, np.float32), plane, CHANNELS[self.kind]), kind, None

    # --- segmentation -------------------------------------------------------------
    def __call__(self, x: str | PathLike | Volume | Image2D | np.ndarray, *, spacing: float | Sequence[float] | None = None,
                 progress: Callable[[], None] | None = None) -> Result:
        """Segment one input (see the class docstring); ``progress`` is called after each group model."""
        if not self.groups:
            raise ValueError("this Segmenter is closed")
        started = time.perf_counter()
        image, kind, source = self._read(x, spacing)
        read = time.perf_counter() - started
        try:
            orient = Orientation.for_display(image.plane, self.manifest.display)
        except ValueError as err:
            raise InputError(source, str(err)) from None
        masks, scores = self._predict(orient.apply(image), source, progress, kind == "ct")
        masks = Masks(orient.inverse(masks), self.structures, image.plane)
        total = time.perf_counter() - started
        return Result(masks, image, kind, self.manifest.name, source, scores,
                      {"read": read, "predict": total - read, "total": total})

    def _predict(self, image: Image2D, source: str | None, progress: Callable[[], None] | None,
                 projected: bool = False) -> tuple[np.ndarray, dict]:
        """Masks ``(K, H, W)`` on the (oriented) image's grid, and scores; ``projected``: a CT's projection."""
        import torch

        with torch.inference_mode():
            return self._predict_groups(image, source, progress, projected)

    def _predict_groups(self, image: Image2D, source: str | None, progress: Callable[[], None] | None,
                        projected: bool) -> tuple[np.ndarray, dict]:
        import torch

        from ts2d_xray.segment.groups import add_masks, add_scores

        h, w = image.plane.shape
        if len(self.structures) * h * w > MAX_MASK_BYTES:
            raise InputError(source, f"masks of {len(self.structures)} structures at {w}x{h} px would need "
                                     f"{len(self.structures) * h * w / 2**30:.1f} GiB (limit "
                                     f"{MAX_MASK_BYTES / 2**30:.0f} GiB)")
        masks = np.zeros((len(self.structures), h, w), bool)
        scores: dict[str, dict] = {}
        resampled: dict[tuple[float, float], Image2D] = {}
        written: set[int] = set()
        for group in self.groups:
            if group.exact is not None:
                self._exact_group(group, image, projected, source, masks, scores, written)
                if progress is not None:
                    progress()
                continue
            if group.spacing not in resampled:
                resampled[group.spacing] = self._resample(image, group.spacing, source)
            probs = self._probabilities(group, resampled[group.spacing])
            thresholds = torch.tensor([self.thresholds[s] for s in group.structures], device=self.device)[:, None, None]
            add_masks(masks, probs, thresholds, [self.structures.index(n) for n in group.structures], written)
            add_scores(scores, group.structures, probs, probs >= thresholds)
            if progress is not None:
                progress()
        return masks, scores

    def _exact_group(self, group: GroupNetwork, image: Image2D, projected: bool, source: str | None,
                     masks: np.ndarray, scores: dict, written: set[int]) -> None:
        """A published TS2D group on the image's own grid (its masks united into ``masks``, its scores added)."""
        import torch

        from ts2d_xray.segment.groups import add_scores, channel_order, predict_exact

        self._check_size(image, group.exact.spacing, source)
        order = channel_order(group, image.channels) if projected else list(range(image.array.shape[0]))
        group_masks, probs, _ = predict_exact(group, image.array[order], image.plane.spacing, step=self.options.step,
                                              thresholds=[self.thresholds[s] for s in group.structures],
                                              exact=self.options.exact)
        rows = [self.structures.index(n) for n in group.structures]
        masks[rows] |= group_masks
        written.update(rows)
        add_scores(scores, group.structures, torch.from_numpy(probs), torch.from_numpy(group_masks))

    def _resample(self, image: Image2D, spacing: tuple[float, float], source: str | None) -> Image2D:
        """The image at a group's pixel size (InputError when that would exceed ``max_pixels``)."""
        from ts2d_xray.projection import resample

        self._check_size(image, spacing, source)
        return resample(image, spacing)

    def _check_size(self, image: Image2D, spacing: Sequence[float], source: str | None) -> None:
        """InputError when the image at a group's pixel size would exceed ``max_pixels``."""
        shape = np.maximum(1, np.round(np.asarray(image.plane.extent) / spacing))
        if np.prod(shape) > self.options.max_pixels:
            raise InputError(source, f"at the model's {spacing[0]:g} mm pixels the image would be "
                                     f"{int(shape[1])}x{int(shape[0])} px, above max_pixels="
                                     f"{self.options.max_pixels:,}; check the pixel spacing")

    def _probabilities(self, group: GroupNetwork, work: Image2D) -> torch.Tensor:
        """Sigmoid probabilities ``(K, h, w)`` of a group on the image at its pixel size."""
        import torch

        from ts2d_xray.nnunet.normalize import normalize
        from ts2d_xray.segment.groups import predict_group

        batch = self.options.batch_size or (4 if self.device.type == "cuda" else 1)
        x = normalize(work.array, group.normalization)[list(group.channel_source)]
        x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return torch.sigmoid(predict_group(group, x, step=self.options.step, batch_size=batch, tta=self.options.tta))


