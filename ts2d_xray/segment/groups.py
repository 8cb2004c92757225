"""A bundle's group models loaded for inference, on top of the nnU-Net runtime (:mod:`ts2d_xray.nnunet`).

:func:`load_group` reads one group of a bundle (its ``plans.json``, ``dataset.json``
and one checkpoint per fold) into a :class:`GroupNetwork`; :func:`predict_group` runs
it on a prepared image (sliding windows, folds averaged,
:func:`ts2d_xray.nnunet.predict.sliding_window_logits`).  On a CPU the networks run in
float32 with their instance norms computed as group norms
(:func:`~ts2d_xray.nnunet.network.speed_up_for_cpu`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json
from ts2d_xray.nnunet.checkpoint import load_network
from ts2d_xray.nnunet.layout import CONFIGURATION, DATASET_FILE, PLANS_FILE
from ts2d_xray.nnunet.network import input_divisor, speed_up_for_cpu
from ts2d_xray.nnunet.normalize import plans_normalization
from ts2d_xray.nnunet.predict import DEFAULT_STEP, sliding_window_logits
from ts2d_xray.segment.manifest import GroupSpec

__all__ = ["GroupNetwork", "describe", "load_group", "predict_group"]


@dataclass(eq=False)
class GroupNetwork:
    """A loaded group model, ready to predict.

    Attributes:
        name: Group name.
        structures: Output structures, in output order (K).
        networks: One network per fold (eval mode, on the device); logits are averaged.
        spacing: ``(row, column)`` pixel size the network works at, in mm.
        patch_size: ``(H, W)`` training patch in pixels.
        divisor: ``(H, W)``: input sizes must be multiples of these (product of strides).
        normalization: Per image channel, ``(scheme, intensity properties)`` with
            nnU-Net's scheme names (``CTNormalization``, ``ZScoreNormalization``, ...).
        channel_source: For each network input, the image channel it reads.
        mirror_axes: Axes the checkpoint allows for mirroring at inference (nnU-Net's
            ``inference_allowed_mirroring_axes``, in (H, W) axes), or ().
    """

    name: str
    structures: tuple[str, ...]
    networks: list[torch.nn.Module]
    spacing: tuple[float, float]
    patch_size: tuple[int, int]
    divisor: tuple[int, int]
    normalization: tuple[tuple[str, Mapping[str, float]], ...]
    channel_source: tuple[int, ...]
    mirror_axes: tuple[int, ...] = ()


def _group_plan(plans: Mapping[str, Any], dataset: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The :class:`GroupNetwork` fields that ``plans.json`` and ``dataset.json`` give (InputError naming ``path``)."""
    try:
        config = plans["configurations"][CONFIGURATION]
        ours = plans.get("ts2d") if isinstance(plans.get("ts2d"), dict) else {}
        normalization = plans_normalization(plans)
        n_channels = len(dataset.get("channel_names", {})) or len(normalization)
        fields = {
            "normalization": normalization,
            "channel_source": tuple(int(c) for c in ours.get("channel_source", range(n_channels))),
            "divisor": input_divisor(plans),
            "spacing": tuple(float(s) for s in config["spacing"][-2:]),
            "patch_size": tuple(int(p) for p in config["patch_size"][-2:]),
        }
    except (KeyError, TypeError, ValueError) as err:
        problem = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(path, f"not a usable 2D nnU-Net plan ({problem})") from None
    if len(normalization) != n_channels:
        raise InputError(path, f"{len(normalization)} normalization schemes for {n_channels} channels")
    source = fields["channel_source"]
    if not source or max(source) >= n_channels:
        raise InputError(path, f"channel_source {list(source)} for {n_channels} channels")
    return fields


def load_group(root: Path, spec: GroupSpec, *, device: torch.device, trust: bool = False) -> GroupNetwork:
    """Build and load one group model of a bundle onto ``device``.

    Raises:
        InputError: Naming the file: unreadable or unusable plans, a checkpoint that
            :func:`~ts2d_xray.nnunet.checkpoint.read_checkpoint` refuses, weights that
            do not fit the plans or the group's structures.
    """
    folder = root / spec.path
    plans_path = folder / PLANS_FILE
    plans, dataset = read_json(plans_path), read_json(folder / DATASET_FILE)
    fields = _group_plan(plans, dataset, plans_path)
    networks, mirror = [], ()
    for rel in spec.checkpoints():
        network, checkpoint = load_network(root / rel, plans, len(fields["channel_source"]), len(spec.structures),
                                           device="cpu", trust=trust, plans_path=plans_path)
        if device.type == "cpu":
            network.float()  # half-precision weights would run slowly (or not at all) on CPUs
            speed_up_for_cpu(network)
        networks.append(network.to(device).eval())
        mirror = tuple(int(a) for a in (checkpoint.get("inference_allowed_mirroring_axes") or ()))
    return GroupNetwork(name=spec.name, structures=spec.structures, networks=networks, mirror_axes=mirror, **fields)


def predict_group(group: GroupNetwork, image: torch.Tensor, *, step: float = DEFAULT_STEP, batch_size: int = 1,
                  tta: bool = False) -> torch.Tensor:
    """Logits ``(K, H, W)`` float32 of one group for a normalised ``(C_in, H, W)`` image on its device.

    See :func:`ts2d_xray.nnunet.predict.sliding_window_logits`; ``tta`` mirrors along
    the axes the group's checkpoints allow.
    """
    return sliding_window_logits(group.networks, image, group.patch_size, group.divisor, step=step,
                                 batch_size=batch_size, tta=tta, mirror_axes=group.mirror_axes)


def describe(groups: Sequence[GroupNetwork]) -> str:
    """One line per group: outputs, spacing, patch and parameter count."""
    lines = []
    for g in groups:
        params = sum(p.numel() for p in g.networks[0].parameters())
        lines.append(f"{g.name}: {len(g.structures)} structures, {g.spacing[0]:g}x{g.spacing[1]:g} mm, "
                     f"patch {g.patch_size[0]}x{g.patch_size[1]}, {params / 1e6:.1f} M parameters x "
                     f"{len(g.networks)} fold(s)")
    return "\n".join(lines)
