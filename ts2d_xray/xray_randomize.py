"""Domain randomisation of radiographs and their masks: inversion, gamma, contrast, albumentations.

One pipeline serves both places that randomise radiographs: :mod:`synth` applies it to
rendered DRRs (with per-structure attenuation scaling on top, see :mod:`synth.randomize`),
and training applies it to patches (:class:`ts2d_xray.train.transforms.XrayAugmentation`).
It lives here, in the core package, because ``ts2d_xray`` never imports ``synth``.

:func:`augment` randomises an image: inversion, gamma, contrast, then an albumentations
pipeline (affine, grid and elastic distortion, noise, blur, CLAHE, JPEG, downscaling).
Geometric transforms move the masks with the image; intensity transforms touch only the
image.  There are no flips (they would swap left and right structures) and rotations
are at most ±10°.

Images are ``(H, W)`` float32 in [0, 1] (0 = black), masks ``(K, H, W)`` bool.
Everything random comes from the ``numpy.random.Generator`` passed in: the same
generator state gives the same result.  albumentations (and OpenCV) are imported when
the pipeline first runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

import numpy as np

from ts2d_xray.records import field_types, is_bool_field, is_tuple_field, record_from_dict

if TYPE_CHECKING:
    import albumentations

__all__ = ["MAX_ROTATE_DEG", "XrayAugmentParams", "augment"]

#: Largest rotation allowed, in degrees: radiographs are taken roughly upright.
MAX_ROTATE_DEG = 10.0

_P = TypeVar("_P", bound="XrayAugmentParams")


@dataclass(frozen=True)
class XrayAugmentParams:
    """Strengths and probabilities of the augmentation in :func:`augment`.

    Ranges are ``(low, high)`` sampled uniformly (gamma: log-uniformly); each
    ``*_probability`` is the chance that its step runs.  Pixel units refer to the image
    as augmented.

    Attributes:
        invert_probability: Chance of ``1 - image`` (bone dark).
        gamma_range: Exponent ``g`` of ``image ** g``.
        gamma_probability: Chance of a gamma change.
        contrast_range: Factor ``c`` of ``mean + c·(image - mean)``.
        contrast_probability: Chance of a contrast change.
        albumentations: Run the albumentations pipeline below at all.
        rotate_deg: Rotations uniform in ``±rotate_deg`` (at most 10°).
        scale_range: Isotropic zoom factors.
        translate_fraction: Shifts up to this fraction of the width/height.
        affine_probability: Chance of the affine transform (rotate, scale, shift).
        grid_distortion_limit: ``distort_limit`` of ``A.GridDistortion`` (5 steps);
            0.1 moves pixels ~6 px on a 512² image.
        grid_distortion_probability: Its chance.
        elastic_alpha: ``alpha`` of ``A.ElasticTransform``; with ``elastic_sigma`` 40
            px, 1000 moves pixels ~1 px on average, up to ~5 px.
        elastic_sigma: Smoothness of the elastic field in px.
        elastic_probability: Its chance.
        noise_std_range: Std of additive Gaussian noise (image range is 1).
        noise_probability: Its chance.
        blur_sigma_range: Gaussian blur sigma in px.
        blur_probability: Its chance.
        clahe_clip_range: CLAHE clip limit (8×8 tiles).
        clahe_probability: Its chance.
        jpeg_quality_range: JPEG quality (1-100).
        jpeg_probability: Its chance.
        downscale_range: Down-and-up scaling factor (< 1 loses resolution).
        downscale_probability: Its chance.
        aspect_range: Zoom of the rows relative to the columns (``A.Affine`` with
            ``keep_ratio=False``): films resized to a square from another aspect
            ratio (e.g. Wingspan's) look squashed or stretched by 0.8-1.25.
        aspect_probability: Its chance.
        marker_probability: Chance of burnt-in text markers ("L", "R", "PA", "ERECT",
            ...), 1-3 of them near the border, white or black, as real films carry.
        marker_height_range: Marker letter height as a fraction of the image height.
    """

    invert_probability: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    gamma_probability: float = 0.5
    contrast_range: tuple[float, float] = (0.75, 1.25)
    contrast_probability: float = 0.5
    albumentations: bool = True
    rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    translate_fraction: float = 0.05
    affine_probability: float = 0.5
    grid_distortion_limit: float = 0.1
    grid_distortion_probability: float = 0.2
    elastic_alpha: float = 1000.0
    elastic_sigma: float = 40.0
    elastic_probability: float = 0.2
    noise_std_range: tuple[float, float] = (0.005, 0.03)
    noise_probability: float = 0.3
    blur_sigma_range: tuple[float, float] = (0.3, 1.2)
    blur_probability: float = 0.2
    clahe_clip_range: tuple[float, float] = (1.0, 3.0)
    clahe_probability: float = 0.2
    jpeg_quality_range: tuple[float, float] = (40.0, 95.0)
    jpeg_probability: float = 0.2
    downscale_range: tuple[float, float] = (0.5, 0.9)
    downscale_probability: float = 0.1
    aspect_range: tuple[float, float] = (1.0, 1.0)
    aspect_probability: float = 0.0
    marker_probability: float = 0.0
    marker_height_range: tuple[float, float] = (0.03, 0.08)

    def __post_init__(self) -> None:
        for name in field_types(type(self)):
            self._check_type(name, getattr(self, name))
        self._check_bounds()

    def _check_type(self, name: str, value: Any) -> None:
        """Switches are bools, ranges ``(low, high)`` with ``low <= high``, the rest finite numbers."""
        cls = type(self)
        if is_bool_field(cls, name):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"augment parameter {name!r} must be true or false, got {value!r}")
        elif is_tuple_field(cls, name):
            if (
                not isinstance(value, tuple) or len(value) != 2
                or not all(_is_number(v) for v in value) or not value[0] <= value[1]
            ):
                raise ValueError(f"augment parameter {name!r} must be [low, high] with low <= high, got {value!r}")
        elif not _is_number(value):
            raise TypeError(f"augment parameter {name!r} must be a finite number, got {value!r}")
        if name.endswith("_probability") and not 0 <= value <= 1:
            raise ValueError(f"augment parameter {name!r} must be in [0, 1], got {value!r}")

    def _check_bounds(self) -> None:
        """Each strength within what its albumentations transform accepts (and rotations <= 10°)."""
        positive_ranges = ("gamma_range", "scale_range", "clahe_clip_range", "aspect_range", "marker_height_range")
        bounds = {
            "contrast_range": (0.0, math.inf), "noise_std_range": (0.0, 1.0), "blur_sigma_range": (0.0, math.inf),
            "jpeg_quality_range": (1.0, 100.0), "downscale_range": (0.0, 1.0),
            "rotate_deg": (0.0, MAX_ROTATE_DEG), "translate_fraction": (0.0, 0.5),
            "grid_distortion_limit": (0.0, 1.0), "elastic_alpha": (0.0, math.inf),
            "marker_height_range": (0.0, 0.5),
        }
        for name in positive_ranges:
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"augment parameter {name!r} must be > 0, got {getattr(self, name)!r}")
        for name, (lo, hi) in bounds.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(lo <= v <= hi for v in values):
                raise ValueError(f"augment parameter {name!r} must be within [{lo}, {hi}], got {value!r}")
        if not self.elastic_sigma > 0:
            raise ValueError(f"augment parameter 'elastic_sigma' must be > 0, got {self.elastic_sigma!r}")
        if self.downscale_range[0] <= 0:
            raise ValueError(f"augment parameter 'downscale_range' must be > 0, got {self.downscale_range!r}")

    @classmethod
    def from_dict(cls: type[_P], d: Mapping[str, Any]) -> _P:
        """Parameters (of this class or a subclass) from a mapping, e.g. a preset's
        ``"augment"`` section; ranges as lists.

        Missing keys keep their defaults; unknown keys raise ValueError (see
        :func:`ts2d_xray.records.record_from_dict`).
        """
        return record_from_dict(cls, d)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def augment(
    image: np.ndarray,
    masks: np.ndarray | None,
    params: XrayAugmentParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Randomly augment a radiograph and, consistently, its masks.

    Steps: inversion, gamma, contrast (image only), then the albumentations pipeline
    of :func:`_pipeline` seeded from ``rng``, then burnt-in text markers (image only).  Masks are bit-packed 8 per uint8
    channel for albumentations (13 channels instead of 104 masks); geometric
    transforms use nearest-neighbour interpolation and fill 0 for masks, so the packed
    bits move exactly like separate masks would.

    Args:
        image: ``(H, W)`` float32 in [0, 1].
        masks: ``(K, H, W)`` bool, or None.
        params: Strengths and probabilities.
        rng: Random source (the only one).

    Returns:
        ``(image, masks)``: ``(H, W)`` float32 in [0, 1] and ``(K, H, W)`` bool (or
        None), new arrays.

    Example:
        >>> img = np.random.default_rng(0).random((64, 64), dtype=np.float32)
        >>> out, _ = augment(img, None, XrayAugmentParams(), np.random.default_rng(1))
        >>> out.shape, out.dtype
        ((64, 64), dtype('float32'))
    """
    image, masks = _checked(image, masks)
    # Draw everything up front, in a fixed order, so one step's probability does not
    # shift the others' draws.
    u_invert, u_gamma, u_contrast, t_gamma, t_contrast = rng.random(5)
    seed = int(rng.integers(0, 2**32))

    out = _invert_gamma_contrast(image, params, (u_invert, u_gamma, u_contrast), (t_gamma, t_contrast))
    if params.albumentations:
        out, out_masks = _albumentations(out, masks, params, seed)
    else:
        out_masks = None if masks is None else masks.copy()
    # Drawn last, so that parameters without markers give the results they always gave.
    if params.marker_probability > 0 and rng.random() < params.marker_probability:
        out = _burn_markers(np.clip(out, 0.0, 1.0), params.marker_height_range, rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False), out_masks


#: Texts of burnt-in markers: side, view and position markers of chest films.
MARKER_TEXTS = ("L", "R", "PA", "AP", "ERECT", "SUPINE", "PORTABLE", "LT", "RT", "INSP")


def _burn_markers(image: np.ndarray, height_range: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``image`` with 1-3 text markers near its border (image only: markers hide no anatomy label).

    Letters come from PIL's built-in bitmap font, drawn at the chosen height (a fraction
    of the image height) and in white or black, at a random place in the outer fifth.
    """
    from PIL import Image, ImageDraw, ImageFont

    h, w = image.shape
    out = image.copy()
    for _ in range(int(rng.integers(1, 4))):
        text = MARKER_TEXTS[int(rng.integers(len(MARKER_TEXTS)))]
        size = max(6, int(round(h * rng.uniform(*height_range))))
        font = ImageFont.load_default(size=size)
        box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
        tw, th = box[2] - box[0] + 2, box[3] - box[1] + 2
        if tw >= w or th >= h:
            continue
        layer = Image.new("L", (tw, th), 0)
        ImageDraw.Draw(layer).text((1 - box[0], 1 - box[1]), text, fill=255, font=font)
        alpha = np.asarray(layer, dtype=np.float32) / 255.0
        edge_rows = int(rng.integers(0, 2))  # near the top or bottom edge, else near a side
        top = int(rng.choice([rng.integers(0, max(1, h // 5)), rng.integers(max(0, h - h // 5 - th), h - th + 1)])) \
            if edge_rows else int(rng.integers(0, h - th + 1))
        left = int(rng.integers(0, w - tw + 1)) if edge_rows else \
            int(rng.choice([rng.integers(0, max(1, w // 5)), rng.integers(max(0, w - w // 5 - tw), w - tw + 1)]))
        value = np.float32(rng.uniform(0.9, 1.0) if rng.random() < 0.8 else rng.uniform(0.0, 0.1))
        window = out[top:top + th, left:left + tw]
        out[top:top + th, left:left + tw] = window * (1 - alpha) + value * alpha
    return out


def _checked(image: np.ndarray, masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` and ``masks`` as arrays, refused unless ``(H, W)`` float and ``(K, H, W)`` bool."""
    image = np.asarray(image)
    if image.ndim != 2 or not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be a (H, W) float array, got shape {image.shape} dtype {image.dtype}")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[1:] != image.shape or masks.dtype != bool:
            raise ValueError(f"masks must be (K, *{image.shape}) bool, got shape {masks.shape} dtype {masks.dtype}")
    return image, masks


def _invert_gamma_contrast(
    image: np.ndarray, params: XrayAugmentParams, chances: tuple[float, float, float], strengths: tuple[float, float]
) -> np.ndarray:
    """The image-only steps: inversion, gamma, contrast, each run when its chance is under its probability.

    Args:
        image: ``(H, W)`` float, clipped to [0, 1] first.
        params: Probabilities and ranges.
        chances: Uniform draws in [0, 1) deciding inversion, gamma and contrast.
        strengths: Uniform draws in [0, 1) placing gamma (log scale) and contrast in their ranges.
    """
    u_invert, u_gamma, u_contrast = chances
    t_gamma, t_contrast = strengths
    out = np.clip(image.astype(np.float32), 0.0, 1.0)
    if u_invert < params.invert_probability:
        out = 1.0 - out
    if u_gamma < params.gamma_probability:
        lo, hi = np.log(params.gamma_range)
        out = out ** np.float32(np.exp(lo + (hi - lo) * t_gamma))
    if u_contrast < params.contrast_probability:
        lo, hi = params.contrast_range
        mean = out.mean()
        out = np.clip(mean + np.float32(lo + (hi - lo) * t_contrast) * (out - mean), 0.0, 1.0)
    return out


def _albumentations(
    image: np.ndarray, masks: np.ndarray | None, params: XrayAugmentParams, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the pipeline of :func:`_pipeline` on the image and the bit-packed masks."""
    data = {"image": np.ascontiguousarray(image, dtype=np.float32)}
    packed = masks is not None and masks.shape[0] > 0
    if packed:
        data["mask"] = np.ascontiguousarray(_pack(masks).transpose(1, 2, 0))
    result = _pipeline(params, seed)(**data)
    if not packed:  # no masks, or none to move
        return result["image"], None if masks is None else masks.copy()
    return result["image"], _unpack(np.ascontiguousarray(result["mask"].transpose(2, 0, 1)), masks.shape[0])


def _pack(masks: np.ndarray) -> np.ndarray:
    """``(K, H, W)`` bool -> ``(ceil(K/8), H, W)`` uint8, mask ``k`` in bit ``k % 8`` of channel ``k // 8``.

    (``np.packbits`` along the first axis is ~10x slower for large masks.)
    """
    packed = np.zeros(((masks.shape[0] + 7) // 8, *masks.shape[1:]), dtype=np.uint8)
    for k in range(masks.shape[0]):
        packed[k // 8] |= masks[k].view(np.uint8) << np.uint8(k % 8)
    return packed


def _unpack(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`_pack`: ``(C, H, W)`` uint8 -> ``(count, H, W)`` bool."""
    masks = np.empty((count, *packed.shape[1:]), dtype=bool)
    scratch = np.empty(packed.shape[1:], dtype=np.uint8)
    for k in range(count):
        np.right_shift(packed[k // 8], np.uint8(k % 8), out=scratch)
        np.bitwise_and(scratch, np.uint8(1), out=masks[k].view(np.uint8))
    return masks


def _pipeline(params: XrayAugmentParams, seed: int) -> albumentations.Compose:
    """The albumentations ``Compose`` of ``params``, seeded; geometric steps first.

    Built per call (a few ms) so that concurrent callers never share random state.
    """
    import albumentations as A
    import cv2

    fill = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0, "mask_interpolation": cv2.INTER_NEAREST}
    transforms = [
        A.Affine(scale={"x": (1.0, 1.0), "y": params.aspect_range}, keep_ratio=False, p=params.aspect_probability,
                 **fill),
        A.Affine(
            rotate=(-params.rotate_deg, params.rotate_deg),
            scale=params.scale_range,
            keep_ratio=True,
            translate_percent=(-params.translate_fraction, params.translate_fraction),
            p=params.affine_probability,
            **fill,
        ),
        A.GridDistortion(
            num_steps=5,
            distort_limit=(-params.grid_distortion_limit, params.grid_distortion_limit),
            p=params.grid_distortion_probability,
            **fill,
        ),
        A.ElasticTransform(
            alpha=params.elastic_alpha, sigma=params.elastic_sigma, p=params.elastic_probability, **fill
        ),
        A.Downscale(scale_range=params.downscale_range, p=params.downscale_probability),
        A.GaussianBlur(sigma_limit=params.blur_sigma_range, blur_limit=0, p=params.blur_probability),
        A.CLAHE(clip_limit=params.clahe_clip_range, tile_grid_size=(8, 8), p=params.clahe_probability),
        A.GaussNoise(std_range=params.noise_std_range, p=params.noise_probability),
        A.ImageCompression(
            quality_range=(int(params.jpeg_quality_range[0]), int(params.jpeg_quality_range[1])),
            p=params.jpeg_probability,
        ),
    ]
    return A.Compose(transforms, seed=seed)
