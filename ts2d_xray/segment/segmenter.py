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
   only where a structure can reach its threshold, and thresholded into a view of the
   output: masks land on the input's own pixel grid.

Only the structures asked for (``structures=``, ``--structures``) are computed, by the
groups that predict them.  Without a model, a Segmenter picks the default model of each
input's kind (:func:`~ts2d_xray.segment.options.default_model`) at the first input of
that kind, as the CLI does.

A published TS2D/TSXR model runs as TS2D runs it (:func:`ts2d_xray.segment.groups.predict_exact`):
a CT projected on its own grid, one channel per channel name, steps 3-4 nnU-Net's.

Example:
    >>> from ts2d_xray import Segmenter
    >>> with Segmenter(device="cpu", structures=["lungs", "heart"]) as seg:   # doctest: +SKIP
    ...     result = seg("chest.dcm")
    ...     result.save("out/chest")
    ...     heart = result.mask("heart")                          # (H, W) bool
"""

from __future__ import annotations

import logging
import time
from os import PathLike
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks
from ts2d_xray.kinds import INPUT_MODEL_KIND
from ts2d_xray.orientation import Orientation
from ts2d_xray.segment.inputs import InputInfo, inspect_input
from ts2d_xray.segment.integrity import verify_weights
from ts2d_xray.segment.manifest import ModelManifest
from ts2d_xray.segment.models import open_model
from ts2d_xray.segment.options import SegmentOptions, default_model, needed_structures
from ts2d_xray.segment.reading import Input, input_kind, read_input
from ts2d_xray.segment.result import Result

if TYPE_CHECKING:  # torch is imported when a Segmenter is made, not when this module is
    import torch

    from ts2d_xray.segment.groups import GroupNetwork

__all__ = ["MAX_MASK_BYTES", "SegmentOptions", "Segmenter", "default_model", "model_checksum"]

log = logging.getLogger(__name__)

#: Largest output mask stack (K structures x H x W bytes) a segmentation may allocate.
MAX_MASK_BYTES = 8 * 2**30
_KIND_WORDS = {"coronal": "coronal CT projections (2 channels: mean, max; or a 3D CT, projected)",
               "xray": "radiographs (1 channel)"}
_INPUT_WORDS = {"ct": "a 3D CT", "projection": "a 2-channel coronal projection", "radiograph": "a 1-channel radiograph"}


def model_checksum(manifest: ModelManifest) -> str | None:
    """One SHA-256 for a model's weights: of its files' SHA-256 lines (``<sha256>  <path>``, sorted), or None."""
    import hashlib

    if not manifest.sha256:
        return None
    lines = "".join(f"{digest}  {path}\n" for path, digest in sorted(manifest.sha256.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


class Segmenter:
    """Segments images with every group model of one bundle, loaded once.

    Args:
        model: Installed or bundled model name, bundle folder, nnU-Net folder or
            ``.zip``; default None: for each input the default model of its kind
            (:func:`default_model`: the only installed model of the kind, else the
            bundled one), loaded at the first input of that kind, as the CLI does.
        options: A :class:`SegmentOptions`; or give its fields as the keyword arguments
            below (None: the option's default; not both).
        device, groups, structures, tta, threshold, step, batch_size, trust_checkpoint,
            verify, display, invert, max_pixels, max_voxels, exact, backend: The
            :class:`SegmentOptions` fields of the same names.

    Call it on a path (CT file or DICOM folder, projection, radiograph), a
    :class:`~ts2d_xray.image.Volume`, an :class:`~ts2d_xray.image.Image2D`, or a numpy
    array ``(H, W)`` / ``(C, H, W)`` (in the model's display convention, at ``spacing``
    mm, default the model's).  Returns a :class:`~ts2d_xray.segment.result.Result`.
    """

    def __init__(self, model: str | PathLike | None = None, *, options: SegmentOptions | None = None,
                 device: str | None = None, groups: Sequence[str] | None = None,
                 structures: Sequence[str] | None = None, tta: bool | None = None, threshold: float | None = None,
                 step: float | None = None, batch_size: int | None = None, trust_checkpoint: bool | None = None,
                 verify: bool | None = None, display: str | None = None, invert: bool | None = None,
                 max_pixels: int | None = None, max_voxels: int | None = None, exact: bool | None = None,
                 backend: str | None = None) -> None:
        given = {k: v for k, v in dict(
            device=device, groups=groups, structures=structures, tta=tta, threshold=threshold, step=step,
            batch_size=batch_size, trust_checkpoint=trust_checkpoint, verify=verify, display=display,
            invert=invert, max_pixels=max_pixels, max_voxels=max_voxels, exact=exact,
            backend=backend).items() if v is not None}
        if options is not None and given:
            raise TypeError("give either options= or keyword options, not both")
        self.options = options or SegmentOptions(**given)
        from ts2d_xray.device import resolve_device  # imports torch: not at module import time

        from ts2d_xray.nnunet.backend import resolve_backend

        self.device = resolve_device(self.options.device)
        #: ``"torch"`` or ``"onnx"``: what runs the networks (``options.backend`` resolved for the device).
        self.backend = resolve_backend(self.options.backend, self.device)
        self._by_kind: dict[str, Segmenter] = {}  # model None: one per model kind, made when first needed
        self._closed = False
        self.bundle = None if model is None else open_model(model, display=self.options.display)
        self.groups: list[GroupNetwork] = []
        self.structures: tuple[str, ...] = ()
        self.thresholds: dict[str, float] = {}
        #: True when a group is a published TS2D model: CTs are then projected on their own grid, as TS2D does.
        self.exact = False
        if self.bundle is not None:
            try:
                self._load()
            except BaseException:
                self.bundle.close()
                raise

    def _load(self) -> None:
        """Load the groups that predict the structures asked for (all by default)."""
        from ts2d_xray.segment.groups import load_group

        manifest = self.manifest
        specs = [manifest.group(g) for g in dict.fromkeys(self.options.groups or manifest.group_names)]
        offered = tuple(dict.fromkeys(s for spec in specs for s in spec.structures))
        self.structures = needed_structures(self.options.structures, offered, manifest.name)
        specs = [spec for spec in specs if set(spec.structures) & set(self.structures)]
        if self.options.verify is not False:
            verify_weights(self.bundle.root, manifest, remember=self.bundle.installed)
        if self.device.type == "cuda":
            import torch

            torch.backends.cudnn.benchmark = True
        checksums = manifest.sha256 if self.options.verify is not False else None  # verified: the export's key
        self.groups = [load_group(self.bundle.root, s, device=self.device, trust=self.options.trust_checkpoint,
                                  backend=self.backend, checksums=checksums) for s in specs]
        self.exact = any(g.exact is not None for g in self.groups)
        threshold = self.options.threshold
        #: Per structure of the loaded groups (those not asked for too: a published group's rule reads them all).
        self.thresholds = {s: threshold if threshold is not None else manifest.thresholds.get(s, manifest.threshold)
                           for g in self.groups for s in g.structures}

    @property
    def manifest(self) -> ModelManifest:
        """The bundle's manifest (ValueError for a Segmenter that picks a model per input kind)."""
        if self.bundle is None:
            raise ValueError("this Segmenter picks the default model of each input's kind; it has no manifest "
                             "(name a model: Segmenter(model=...))")
        return self.bundle.manifest

    @property
    def kind(self) -> str:
        """``"coronal"`` or ``"xray"``: the input kind the model segments."""
        return self.manifest.kind

    def close(self) -> None:
        """Release the networks (and GPU memory) and any unpacked archive."""
        self._closed = True
        for seg in self._by_kind.values():
            seg.close()
        self.groups = []
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        if self.bundle is not None:
            self.bundle.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def for_kind(self, model_kind: str) -> "Segmenter":
        """The Segmenter that segments inputs of a model kind: this one, or (model None) that kind's default."""
        if self.bundle is not None:
            return self
        if model_kind not in self._by_kind:
            self._by_kind[model_kind] = Segmenter(default_model(model_kind), options=self.options)
        return self._by_kind[model_kind]

    # --- inputs -------------------------------------------------------------------
    def check(self, path: str | PathLike) -> InputInfo:
        """Inspect a path's header (kind, size limits) and refuse a kind the model cannot segment."""
        info = inspect_input(path, max_pixels=self.options.max_pixels, max_voxels=self.options.max_voxels)
        self.for_kind(INPUT_MODEL_KIND[info.kind])._check_kind(info.kind, info.path)
        return info

    def _check_kind(self, input_kind: str, source: str | PathLike | None) -> None:
        if INPUT_MODEL_KIND[input_kind] != self.kind:
            raise InputError(source, f"model {self.manifest.name!r} segments {_KIND_WORDS[self.kind]}; "
                                     f"this is {_INPUT_WORDS[input_kind]}")

    # --- segmentation -------------------------------------------------------------
    def __call__(self, x: Input, *, spacing: float | Sequence[float] | None = None,
                 progress: Callable[[], None] | None = None) -> Result:
        """Segment one input (see the class docstring); ``progress`` is called after each group model.

        ``spacing`` (mm, one number or ``(row, col)``): the pixel spacing of a radiograph
        file or an array, replacing the file's (or the model's, for an array).
        """
        if self._closed:
            raise ValueError("this Segmenter is closed")
        started = time.perf_counter()
        kind, info = input_kind(x, max_pixels=self.options.max_pixels, max_voxels=self.options.max_voxels)
        seg = self.for_kind(INPUT_MODEL_KIND[kind])
        seg._check_kind(kind, None if info is None else info.path)
        return seg._segment(x, kind, info, spacing, progress, started)

    def _segment(self, x: Input, kind: str, info: InputInfo | None, spacing: float | Sequence[float] | None,
                 progress: Callable[[], None] | None, started: float) -> Result:
        """Read, orient, predict into the input's grid, and wrap the result."""
        prepared = read_input(x, kind, info, self.manifest, invert=self.options.invert,
                              max_voxels=self.options.max_voxels, spacing=spacing, project=not self.exact)
        image, source = prepared.image, prepared.source
        read = time.perf_counter() - started
        try:
            orient = Orientation.for_display(image.plane, self.manifest.display)
        except ValueError as err:
            raise InputError(source, str(err)) from None
        h, w = image.plane.shape
        if len(self.structures) * h * w > MAX_MASK_BYTES:
            raise InputError(source, f"masks of {len(self.structures)} structures at {w}x{h} px would need "
                                     f"{len(self.structures) * h * w / 2**30:.1f} GiB (limit "
                                     f"{MAX_MASK_BYTES / 2**30:.0f} GiB)")
        masks = np.zeros((len(self.structures), h, w), bool)  # the input's grid; filled through an oriented view
        scores = self._predict(orient.apply(image), orient.view(masks), source, progress, kind == "ct")
        total = time.perf_counter() - started
        return Result(Masks(masks, self.structures, image.plane), image, kind, self.manifest.name, source, scores,
                      {"read": read, "predict": total - read, "total": total}, file_grid=prepared.file_grid,
                      model_checksum=model_checksum(self.manifest))

    def _predict(self, image: Image2D, out: np.ndarray, source: str | None, progress: Callable[[], None] | None,
                 projected: bool = False) -> dict:
        """Fill ``out`` (``(K, H, W)`` on the oriented image's grid) and return the scores; ``projected``: a CT's."""
        import torch

        with torch.inference_mode():
            return self._predict_groups(image, out, source, progress, projected)

    def _predict_groups(self, image: Image2D, out: np.ndarray, source: str | None,
                        progress: Callable[[], None] | None, projected: bool) -> dict:
        from ts2d_xray.segment.groups import add_masks, add_scores

        scores: dict[str, dict] = {}
        resampled: dict[tuple[float, float], Image2D] = {}
        for group in self.groups:
            rows = [self.structures.index(n) if n in self.structures else None for n in group.structures]
            if group.exact is not None:
                self._exact_group(group, image, projected, source, out, rows, scores)
            else:
                if group.spacing not in resampled:
                    resampled[group.spacing] = self._resample(image, group.spacing, source)
                keep = [k for k, r in enumerate(rows) if r is not None]
                names = [group.structures[k] for k in keep]
                probs = self._probabilities(group, resampled[group.spacing])[keep]
                thresholds = [self.thresholds[n] for n in names]
                add_masks(out, probs, thresholds, [rows[k] for k in keep])
                inside = probs >= probs.new_tensor(thresholds)[:, None, None]
                add_scores(scores, names, probs, inside)
            if progress is not None:
                progress()
        return scores

    def _exact_group(self, group: GroupNetwork, image: Image2D, projected: bool, source: str | None,
                     out: np.ndarray, rows: Sequence[int | None], scores: dict) -> None:
        """A published TS2D group on the image's own grid (its masks united into ``out``, its scores added)."""
        import torch

        from ts2d_xray.segment.groups import add_scores, channel_order, predict_exact

        self._check_size(image, group.exact.spacing, source)
        order = channel_order(group, image.channels) if projected else list(range(image.array.shape[0]))
        group_masks, probs, _ = predict_exact(group, image.array[order], image.plane.spacing, step=self.options.step,
                                              thresholds=[self.thresholds[s] for s in group.structures],
                                              exact=self.options.exact)
        keep = [k for k, r in enumerate(rows) if r is not None]
        for k in keep:
            out[rows[k]] |= group_masks[k]
        add_scores(scores, [group.structures[k] for k in keep], torch.from_numpy(probs[keep]),
                   torch.from_numpy(group_masks[keep]))

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


