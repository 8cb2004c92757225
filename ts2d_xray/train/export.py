"""Export: trained nnU-Net folders into one slim model bundle (:mod:`ts2d_xray.segment.models`).

Each group's ``plans.json`` and ``dataset.json`` are copied; of each checkpoint only
what inference reads is kept (``network_weights``, the trainer name, the epoch),
without optimiser state or logs, and floating-point weights are stored in half
precision when asked (inference casts them back to float32 on a CPU).  The manifest
(:mod:`ts2d_xray.segment.manifest`) lists the SHA-256 of every weight file.

A group may keep only some of its network's outputs (``outputs``): the segmentation
heads of the others are dropped, so that another group of the bundle, trained for those
structures alone, is the one that segments them (a bundle's groups must not share a
structure).

A group may also be an *ensemble*: several trained folders of the same plan and outputs
(e.g. one network trained with several seeds) become its folds ``0, 1, ...``, whose
logits inference averages as nnU-Net averages cross-validation folds.

Example:
    >>> from ts2d_xray.train import export_bundle
    >>> export_bundle({"organs": "models/Ts2dMultiLabelTrainer__ts2dPlans__2d"}, "bundle",  # doctest: +SKIP
    ...               name="my-model", fold=0)
    PosixPath('bundle')
"""

from __future__ import annotations

from dataclasses import replace
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import torch

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import new_folder, read_json, write_json
from ts2d_xray.nnunet.checkpoint import network_weights, read_checkpoint, save_checkpoint
from ts2d_xray.nnunet.layout import DATASET_FILE, FINAL, PLANS_FILE, fold_folder
from ts2d_xray.nnunet.network import SEG_LAYER
from ts2d_xray.segment.manifest import hash_weights, infer_manifest, write_manifest
from ts2d_xray.train.adapt import adapt_weights

__all__ = ["export_bundle"]


def _half(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors in half precision, each shared tensor converted once."""
    out, halves = {}, {}
    for key, value in weights.items():
        if value.is_floating_point():
            # nnU-Net's blocks list each conv twice (``conv`` and ``all_modules.N``):
            # convert each tensor once, so that the file keeps one copy.
            same = (value.data_ptr(), tuple(value.shape), value.stride())
            if same not in halves:
                halves[same] = value.half()
            value = halves[same]
        out[key] = value
    return out


def _kept_outputs(weights: Mapping[str, torch.Tensor], dataset: dict, plans: dict, keep: Sequence[str],
                  folder: Path) -> dict[str, torch.Tensor]:
    """``weights`` with only the segmentation heads of ``keep``; ``dataset`` and ``plans`` edited to match."""
    structures = list(plans.get("ts2d", {}).get("structures") or dataset.get("structures") or ())
    unknown = [s for s in keep if s not in structures]
    if not structures or unknown or len(set(keep)) != len(keep) or not keep:
        raise InputError(folder / DATASET_FILE, f"cannot keep outputs {list(keep)}: the network's are {structures}")
    shapes = {k: (len(keep), *v.shape[1:]) if SEG_LAYER.search(k) else tuple(v.shape) for k, v in weights.items()}
    dataset.update(structures=list(keep), labels={"background": 0, **{s: i + 1 for i, s in enumerate(keep)}})
    plans.setdefault("ts2d", {})["structures"] = list(keep)
    heads = adapt_weights(weights, shapes, structures, keep)
    # Only the heads change: every other tensor stays the same object, so that _half
    # still stores each tensor nnU-Net lists twice once.
    return {k: heads[k] if SEG_LAYER.search(k) else v for k, v in weights.items()}


def _slim_member(folder: Path, fold: int | str, half: bool, keep: Sequence[str] | None
                 ) -> tuple[dict, dict, dict[str, Any]]:
    """One trained folder's dataset.json, plans and slimmed final checkpoint of ``fold``.

    With ``keep``, only those outputs (in that order) remain.
    """
    source = fold_folder(folder, fold) / FINAL
    state = read_checkpoint(source)
    weights = network_weights(state, source)
    dataset, plans = read_json(folder / DATASET_FILE), read_json(folder / PLANS_FILE)
    if keep is not None:
        weights = _kept_outputs(weights, dataset, plans, keep, folder)
    source_model = plans.get("ts2d", {}).get("adapted_from") or {}
    if "model" in source_model:  # a path on the training machine means nothing elsewhere
        source_model["model"] = Path(source_model["model"]).name
    slim = {"network_weights": _half(weights) if half else weights, "trainer_name": state.get("trainer_name"),
            "current_epoch": state.get("current_epoch"), "inference_allowed_mirroring_axes": None}
    return dataset, plans, slim


def _export_group(folders: Sequence[Path], target: Path, fold: int | str, half: bool,
                  keep: Sequence[str] | None) -> None:
    """One group into ``target``: the first folder's plans and dataset.json, each folder's checkpoint of ``fold``.

    One folder keeps its fold's name; the members of an ensemble become folds ``0, 1, ...``
    and must agree on the network (plans' ``2d`` configuration) and the outputs.
    """
    dataset, plans, slim = _slim_member(folders[0], fold, half, keep)
    write_json(target / DATASET_FILE, dataset)
    write_json(target / PLANS_FILE, plans)
    network, structures = plans["configurations"].get("2d"), dataset.get("structures")
    for k, folder in enumerate(folders):
        if k:
            member_dataset, member_plans, slim = _slim_member(folder, fold, half, keep)
            if member_plans["configurations"].get("2d") != network or member_dataset.get("structures") != structures:
                raise InputError(folder / PLANS_FILE, f"cannot join {folders[0]} in one ensemble: "
                                                      "another network (plans' 2d configuration) or other outputs")
        member = fold if len(folders) == 1 else k
        fold_folder(target, member).mkdir(parents=True)
        save_checkpoint(fold_folder(target, member) / FINAL, slim)


def export_bundle(groups: Mapping[str, str | PathLike | Sequence[str | PathLike]], out: str | PathLike, *,
                  name: str, fold: int | str = 0, description: str = "", training: Mapping[str, Any] | None = None,
                  half: bool = True, overwrite: bool = False,
                  outputs: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Write trained nnU-Net folders as one slim bundle: weights only, a manifest with SHA-256.

    Args:
        groups: Group name -> nnU-Net results folder (``<trainer>__<plans>__2d``), or a
            list of such folders for an ensemble (folds ``0, 1, ...`` of the group).
        out: The bundle folder to write (refused if it exists, unless ``overwrite``).
        name: Model name in the manifest.
        fold: The fold whose ``checkpoint_final.pth`` is exported.
        description, training: Written into the manifest.
        half: Store floating-point weights in half precision.
        overwrite: Replace an existing ``out``.
        outputs: Group name -> the structures it is to keep of its network's outputs,
            in that order (the other heads are dropped); groups not named keep all.

    Returns:
        ``out``.  The bundle appears complete or not at all.

    Raises:
        InputError: ``out`` exists (without ``overwrite``), a folder's files are
            missing or unreadable (naming the file), ``outputs`` names a structure its
            network lacks, two groups give the same structure, or an ensemble's members
            differ in network or outputs.
    """
    out = Path(out)
    outputs = dict(outputs or {})
    if set(outputs) - set(groups):
        raise ValueError(f"outputs names groups {sorted(set(outputs) - set(groups))} that are not in groups")
    if out.exists() and not overwrite:
        raise InputError(out, "exists; choose another folder or pass overwrite=True")
    with new_folder(out, replace=overwrite, prefix=".exporting") as staging:
        for group, members in groups.items():
            folders = [Path(f) for f in ([members] if isinstance(members, (str, PathLike)) else members)]
            if not folders:
                raise ValueError(f"group {group!r} has no folder")
            target = staging / group / folders[0].name
            target.mkdir(parents=True)
            _export_group(folders, target, fold, half, outputs.get(group))
        manifest = infer_manifest(staging, name=name)
        given = [s for g in manifest.groups for s in g.structures]
        if len(set(given)) != len(given):
            twice = sorted({s for s in given if given.count(s) > 1})
            raise InputError(out, f"structures {twice[:5]} would come from more than one group; "
                                  "keep each in one group with outputs=")
        named = tuple(replace(g, name=PurePosixPath(g.path).parts[0]) for g in manifest.groups)
        manifest = replace(manifest, groups=named, description=description, training=dict(training or {}),
                           inferred=False)
        write_manifest(staging, replace(manifest, sha256=hash_weights(staging, manifest)))
    return out
