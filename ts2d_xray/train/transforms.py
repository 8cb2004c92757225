"""Augmentation of training patches: nnU-Net's 2D pipeline without mirroring, and radiographs'.

An augmentation is any callable ``aug(image, masks) -> (image, masks)`` on torch tensors
``image (C, h, w)`` float32 and ``masks (K, h, w)`` uint8 (1 = inside).  It receives
crops of ``aug.input_size`` pixels (its attribute; the patch size if it has none) and
returns the network's patch size.  The trainer takes one as a parameter, so other
image kinds (radiographs) can bring their own.

:class:`NnUNetAugmentation` is the default: the transforms of nnU-Net v2's
``nnUNetTrainer.get_training_transforms`` (batchgeneratorsv2), with their probabilities,
except:

* no mirroring: a flip would swap left and right structures;
* rotations of ±``rotation_deg`` only (10° by default), since images are upright;
* masks are resampled as fractions and thresholded at 0.5 (one pass for all K
  structures; for a binary mask this is the label vote nnU-Net takes).

:class:`XrayAugmentation` is for radiographs (adaptation, :mod:`ts2d_xray.train.adapt`): the
albumentations pipeline of :mod:`ts2d_xray.xray_randomize` that ``synth`` applies to its
DRRs, with training strengths (:data:`XRAY_TRAINING_AUGMENT`: inversion, gamma,
contrast, noise, blur, CLAHE, affine up to ±10°, no flips).

Random numbers come from numpy's and torch's global generators, as in
batchgeneratorsv2; the sampler seeds them per batch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from ts2d_xray.xray_randomize import XrayAugmentParams, augment

if TYPE_CHECKING:
    import torch

__all__ = ["XRAY_TRAINING_AUGMENT", "Augmentation", "NnUNetAugmentation", "XrayAugmentation"]

#: Radiograph augmentation during training.  Intensity: inversion, gamma, contrast,
#: noise, blur and CLAHE, the ways real radiographs differ from each other and from
#: DRRs, and burnt-in text markers.  Geometry: the affine (rotation ±10°, zoom
#: 0.85-1.15, no shift, since the sampler already places patches anywhere) and an
#: aspect-ratio jitter of 0.8-1.25 (films resized to a square from other aspect ratios),
#: no grid or elastic distortion, JPEG or downscaling (patches at the network's pixel
#: size are coarse already).
XRAY_TRAINING_AUGMENT = XrayAugmentParams(
    invert_probability=0.1, gamma_range=(0.7, 1.5), gamma_probability=0.3, contrast_range=(0.75, 1.25),
    contrast_probability=0.3, rotate_deg=10.0, scale_range=(0.85, 1.15), translate_fraction=0.0,
    affine_probability=0.3, grid_distortion_probability=0.0, elastic_probability=0.0,
    noise_std_range=(0.005, 0.03), noise_probability=0.2, blur_sigma_range=(0.3, 1.0), blur_probability=0.2,
    clahe_clip_range=(1.0, 3.0), clahe_probability=0.2, jpeg_probability=0.0, downscale_probability=0.0,
    aspect_range=(0.8, 1.25), aspect_probability=0.3, marker_probability=0.2,
)


class Augmentation(Protocol):
    """What the trainer needs of an augmentation (``input_size`` is optional)."""

    input_size: tuple[int, int]

    def __call__(self, image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image (C, h, w)`` float32, ``masks (K, h, w)`` uint8 -> the same at the patch size."""
        ...


class NnUNetAugmentation:
    """nnU-Net's 2D training transforms without mirroring, for multi-label masks.

    Args:
        patch_size: Output ``(H, W)`` in pixels.
        rotation_deg: Rotation range, ± degrees (probability 0.2, as nnU-Net).
        scaling: Zoom range (probability 0.2; > 1 shrinks the anatomy, as nnU-Net).

    Attributes:
        input_size: ``(h, w)`` of the crops to pass in: the patch grown so that rotated
            and zoomed patches stay filled (nnU-Net's ``get_patch_size``).
    """

    def __init__(self, patch_size: Sequence[int], rotation_deg: float = 10.0,
                 scaling: tuple[float, float] = (0.7, 1.4)) -> None:
        from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
        from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
        from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
        from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
        from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
        from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
        from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
        from batchgeneratorsv2.transforms.utils.random import RandomTransform
        from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

        self.patch_size = tuple(int(p) for p in patch_size)
        rotation = (-math.radians(rotation_deg), math.radians(rotation_deg))
        # nnU-Net grows the sampled patch for its rotation range and a zoom of 0.85-1.25.
        self.input_size = tuple(int(s) for s in get_patch_size(self.patch_size, rotation, rotation, rotation,
                                                                (0.85, 1.25)))
        self.transforms = ComposeTransforms([
            SpatialTransform(self.patch_size, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                             p_rotation=0.2, rotation=rotation, p_scaling=0.2, scaling=tuple(scaling),
                             p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False),
            RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1,
                                                   synchronize_channels=True), apply_probability=0.1),
            RandomTransform(GaussianBlurTransform(blur_sigma=(0.5, 1.), synchronize_channels=False,
                                                  synchronize_axes=False, p_per_channel=0.5, benchmark=True),
                            apply_probability=0.2),
            RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=BGContrast((0.75, 1.25)),
                                                              synchronize_channels=False, p_per_channel=1),
                            apply_probability=0.15),
            RandomTransform(ContrastTransform(contrast_range=BGContrast((0.75, 1.25)), preserve_range=True,
                                              synchronize_channels=False, p_per_channel=1), apply_probability=0.15),
            RandomTransform(SimulateLowResolutionTransform(scale=(0.5, 1), synchronize_channels=False,
                                                           synchronize_axes=True, ignore_axes=None,
                                                           allowed_channels=None, p_per_channel=0.5),
                            apply_probability=0.25),
            RandomTransform(GammaTransform(gamma=BGContrast((0.7, 1.5)), p_invert_image=1, synchronize_channels=False,
                                           p_per_channel=1, p_retain_stats=1), apply_probability=0.1),
            RandomTransform(GammaTransform(gamma=BGContrast((0.7, 1.5)), p_invert_image=0, synchronize_channels=False,
                                           p_per_channel=1, p_retain_stats=1), apply_probability=0.3),
        ])

    def __call__(self, image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one patch: ``image (C, h, w)`` float32, ``masks (K, h, w)`` uint8 -> patch size."""
        # The masks ride along as a regression target: resampled bilinearly (zeros outside
        # the image, i.e. background, as nnU-Net pads), then thresholded.
        out = self.transforms(image=image, regression_target=masks.float())
        return out["image"], (out["regression_target"] >= 0.5).to(masks.dtype)

    def __repr__(self) -> str:
        return f"NnUNetAugmentation(patch_size={self.patch_size}, input_size={self.input_size})"


class XrayAugmentation:
    """Radiograph augmentation of training patches (:func:`ts2d_xray.xray_randomize.augment`).

    Patches arrive normalised (z-scored per image, see :mod:`ts2d_xray.train.data`), while the
    pipeline works on images in [0, 1].  Each channel of a crop is therefore mapped
    linearly to [0, 1] (its minimum to 0, its maximum to 1), augmented, mapped back, and
    given its former mean and standard deviation again (nnU-Net's "retain stats"):
    inference z-scores every image, so a global change of brightness or contrast would
    be undone there anyway; what the network must learn to ignore is the change of
    shape of the histogram (gamma, CLAHE, inversion), noise and blur.  The centre
    patch is cut out last, from a crop grown so that rotated and zoomed-out patches
    stay filled with image.

    Args:
        patch_size: Output ``(H, W)`` in pixels.
        params: Strengths and probabilities (default :data:`XRAY_TRAINING_AUGMENT`).

    Attributes:
        input_size: ``(h, w)`` of the crops to pass in.
    """

    def __init__(self, patch_size: Sequence[int], params: XrayAugmentParams = XRAY_TRAINING_AUGMENT) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.params = params
        # A patch rotated by up to rotate_deg and zoomed out to scale_range[0] (about the
        # crop centre) reads a square of side P (|cos| + |sin|) / scale; a shift of
        # translate_fraction of the crop on either side needs that much more.
        angle = math.radians(params.rotate_deg if params.affine_probability > 0 else 0.0)
        zoom = min(1.0, params.scale_range[0]) if params.affine_probability > 0 else 1.0
        if params.aspect_probability > 0:
            zoom *= min(1.0, params.aspect_range[0])
        shift = params.translate_fraction if params.affine_probability > 0 else 0.0
        grow = (abs(math.cos(angle)) + abs(math.sin(angle))) / zoom / (1 - 2 * shift)
        self.input_size = tuple(int(math.ceil(p * grow)) for p in self.patch_size)

    def __call__(self, image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one crop: ``image (C, h, w)`` float32 torch, ``masks (K, h, w)`` uint8 -> patch size."""
        import torch

        seed = int(np.random.randint(0, 2**63 - 1, dtype=np.int64))  # the sampler seeded numpy for this batch
        array = image.numpy()
        masks_in = masks.numpy().astype(bool)
        channels, out_masks = [], masks_in
        for c, channel in enumerate(array):
            lo, hi = float(channel.min()), float(channel.max())
            if not hi > lo:  # a flat crop (e.g. all padding): nothing to augment
                channels.append(channel)
                continue
            mean, std = float(channel.mean()), float(channel.std())
            # Every channel gets the same draws (same seed): the same geometry for all.
            out, moved = augment((channel - lo) / (hi - lo), masks_in if c == 0 else None, self.params,
                                 np.random.default_rng(seed))
            out = lo + out * (hi - lo)
            out_std = float(out.std())
            channels.append((out - out.mean()) * (std / out_std if out_std > 0 else 1.0) + mean)
            if c == 0:
                out_masks = moved
        top = [(i - p) // 2 for i, p in zip(array.shape[1:], self.patch_size)]
        window = (slice(None), slice(top[0], top[0] + self.patch_size[0]), slice(top[1], top[1] + self.patch_size[1]))
        out_image = np.stack(channels).astype(np.float32, copy=False)[window]
        return (torch.from_numpy(np.ascontiguousarray(out_image)),
                torch.from_numpy(np.ascontiguousarray(out_masks[window])).to(masks.dtype))

    def __repr__(self) -> str:
        return f"XrayAugmentation(patch_size={self.patch_size}, input_size={self.input_size})"


def input_size_of(augmentation: Callable[..., Any], patch_size: Sequence[int]) -> tuple[int, int]:
    """The crop size an augmentation takes: its ``input_size``, else the patch size."""
    size = getattr(augmentation, "input_size", None)
    size = tuple(patch_size) if size is None else tuple(size)
    if len(size) != 2 or min(size) < 1 or np.any(np.asarray(size) < np.asarray(patch_size)):
        raise ValueError(f"augmentation input_size must be (h, w) >= the patch size {tuple(patch_size)}, got {size}")
    return int(size[0]), int(size[1])
