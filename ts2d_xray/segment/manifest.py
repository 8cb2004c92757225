"""The model manifest: what a bundle expects and produces, read from a file or inferred.

A bundle (see :mod:`ts2d_xray.segment.models`) holds one nnU-Net v2 results folder per group
and the manifest :data:`MANIFEST`.  :class:`ModelManifest` says the input kind
(``"coronal"``: 2-channel [mean, max] CT projections in HU; ``"xray"``: 1-channel
radiographs in [0, 1]), the channel names, the display convention of the training
images (see :mod:`ts2d_xray.image`), the pixel size in mm, the projection mode for CTs,
the structures of each group's outputs (one sigmoid per structure), the thresholds, a
summary of the training data and the SHA-256 of every weight file.

Without a manifest, :func:`infer_manifest` reads it from ``plans.json`` and
``dataset.json``: this covers the published TS2D/TSXR zips (``"multilabel": true``,
K + 1 sigmoid outputs with background as channel 0, trainer names nnU-Net does not
know) and the output folders of :mod:`ts2d_xray.train`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json, write_json
from ts2d_xray.kinds import CHANNELS, KINDS, Kind
from ts2d_xray.labels import GROUPS
from ts2d_xray.nnunet.layout import BEST, CONFIGURATION, DATASET_FILE, FINAL, PLANS_FILE

__all__ = [
    "DEFAULT_THRESHOLD",
    "MANIFEST",
    "GroupSpec",
    "ModelManifest",
    "find_nnunet_folders",
    "hash_weights",
    "infer_manifest",
    "read_manifest",
    "sha256_file",
    "verify_bundle",
    "write_manifest",
]

log = logging.getLogger(__name__)

#: File name of the bundle manifest.
MANIFEST = "ts2d_xray_model.json"
FORMAT = "ts2d-xray-model"
FORMAT_VERSION = 1
#: Default sigmoid threshold: a pixel belongs to a structure when its probability is >= this.
DEFAULT_THRESHOLD = 0.5
_CHECKPOINTS = (FINAL, BEST)
_CHUNK = 2**20


@dataclass(frozen=True)
class GroupSpec:
    """One group model of a bundle.

    Attributes:
        name: Group name (e.g. ``"organs"``); unique within the bundle.
        path: The nnU-Net results folder, relative to the bundle root (POSIX).
        structures: The structure of each network output, in output order (without
            background).
        folds: The ``fold_<f>`` folders used; their logits are averaged.
        checkpoint: Checkpoint file name inside each fold folder.
    """

    name: str
    path: str
    structures: tuple[str, ...]
    folds: tuple[str, ...] = ("0",)
    checkpoint: str = FINAL

    def checkpoints(self) -> list[str]:
        """Relative paths of the weight files (one per fold)."""
        return [f"{self.path}/fold_{f}/{self.checkpoint}" for f in self.folds]


@dataclass(frozen=True)
class ModelManifest:
    """What a bundle expects and produces (the contents of :data:`MANIFEST`).

    Attributes:
        name: Model name.
        kind: ``"coronal"`` (2-channel CT projections [mean, max] in HU) or ``"xray"``
            (1-channel radiographs in [0, 1], 1 = white).
        channels: Image channel names, e.g. ``("mean", "max")``.
        display: Display convention of the training images: ``"radiograph"`` (patient's
            right on the image left) or ``"ts2d"`` (patient's left on the image left).
            Inputs are flipped into it before prediction and the masks flipped back.
        spacing_mm: ``(row, column)`` pixel size of the first group's network, in mm
            (each group's ``plans.json`` is authoritative for that group).
        groups: The group models.
        projection_mode: How a 3D CT is projected for this model (``"ts2d"`` or
            ``"clean"``, see :mod:`ts2d_xray.projection`); coronal models only.
        threshold: Sigmoid threshold for every structure not in ``thresholds``.
        thresholds: Per-structure thresholds.
        training: A summary of the training data (free-form: data set names, case
            counts, presets, ...).
        sha256: Relative path -> SHA-256 (hex) of the bundle's weight files.
        description: One line about the model.
        inferred: True when no manifest file exists and this was read from the
            nnU-Net files (:func:`infer_manifest`).
    """

    name: str
    kind: Kind
    channels: tuple[str, ...]
    display: str
    spacing_mm: tuple[float, float]
    groups: tuple[GroupSpec, ...]
    projection_mode: str = "ts2d"
    threshold: float = DEFAULT_THRESHOLD
    thresholds: Mapping[str, float] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    sha256: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    inferred: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if len(self.channels) != len(CHANNELS[self.kind]):
            raise ValueError(f"a {self.kind} model reads {len(CHANNELS[self.kind])} channel(s), "
                             f"the manifest lists {list(self.channels)}")
        if self.display not in ("radiograph", "ts2d"):
            raise ValueError(f"display must be 'radiograph' or 'ts2d', got {self.display!r}")
        if self.projection_mode not in ("ts2d", "clean"):
            raise ValueError(f"projection_mode must be 'ts2d' or 'clean', got {self.projection_mode!r}")
        if not self.groups:
            raise ValueError("a model needs at least one group")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be unique, got {names}")
        for t in (self.threshold, *self.thresholds.values()):
            if not 0.0 < float(t) < 1.0:
                raise ValueError(f"thresholds must be probabilities in (0, 1), got {t}")

    @property
    def structures(self) -> tuple[str, ...]:
        """Every structure, in group order (a structure in two groups is listed once)."""
        return tuple(dict.fromkeys(s for g in self.groups for s in g.structures))

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise ValueError(f"model {self.name!r} has no group {name!r}; its groups: {', '.join(self.group_names)}")

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("inferred")
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: Path | None = None) -> "ModelManifest":
        """Parse a manifest; InputError (naming ``path``) for a malformed one."""
        try:
            if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"expected format {FORMAT!r} version {FORMAT_VERSION}, got "
                                 f"{data.get('format')!r} version {data.get('format_version')!r}")
            groups = tuple(GroupSpec(name=str(g["name"]), path=_relative(g["path"]),
                                     structures=tuple(map(str, g["structures"])),
                                     folds=tuple(str(f) for f in g.get("folds", ("0",))),
                                     checkpoint=str(g.get("checkpoint", FINAL)))
                           for g in data["groups"])
            return cls(
                name=str(data["name"]), kind=data["kind"], channels=tuple(data["channels"]),
                display=data.get("display", "radiograph"), spacing_mm=tuple(map(float, data["spacing_mm"])),
                groups=groups, projection_mode=data.get("projection_mode", "ts2d"),
                threshold=float(data.get("threshold", DEFAULT_THRESHOLD)),
                thresholds={str(k): float(v) for k, v in data.get("thresholds", {}).items()},
                training=dict(data.get("training", {})),
                sha256={_relative(k): str(v).lower() for k, v in data.get("sha256", {}).items()},
                description=str(data.get("description", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            problem = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise InputError(path, f"invalid model manifest: {problem}") from None



# --- manifests --------------------------------------------------------------------
def write_manifest(root: str | PathLike, manifest: ModelManifest) -> Path:
    """Write :data:`MANIFEST` into a bundle folder (atomically); returns its path."""
    return write_json(Path(root) / MANIFEST, manifest.to_json())


def read_manifest(path: str | PathLike) -> ModelManifest:
    """Read and check a manifest file (InputError naming it when malformed)."""
    path = Path(path)
    return ModelManifest.from_json(read_json(path, what="model manifest"), path)


def find_nnunet_folders(root: str | PathLike) -> list[Path]:
    """nnU-Net results folders under ``root``: those holding ``plans.json``, ``dataset.json`` and a fold."""
    root = Path(root)
    found = []
    for plans in sorted(root.rglob(PLANS_FILE)):
        folder = plans.parent
        if (folder / DATASET_FILE).is_file() and any(folder.glob("fold_*/checkpoint_*.pth")):
            found.append(folder)
    return found


def infer_manifest(root: str | PathLike, name: str, *, display: str | None = None) -> ModelManifest:
    """A manifest read from the nnU-Net folders of a bundle that has none.

    * Groups: one per nnU-Net folder, named by ``dataset.json["groups"]`` (ours), else
      by a TS2D group name in the data set or folder name, else the data set folder's name.
    * Structures: ``dataset.json["structures"]`` (ours) else its ``labels`` without
      background, by label value (the fork's outputs 1..K).
    * Kind: ``plans["ts2d"]["kind"]`` / ``dataset.json["kind"]``, else 2 channels =
      coronal, 1 = xray.
    * Display: ``plans["ts2d"]["display"]`` / ``dataset.json["display"]``, else
      ``"ts2d"`` for a coronal model without our metadata (TS2D stores its projections
      with the patient's left on the image left) and ``"radiograph"`` otherwise.
    """
    root = Path(root)
    folders = find_nnunet_folders(root)
    if not folders:
        raise InputError(root, f"no model manifest ({MANIFEST}) and no nnU-Net model folder in it "
                               "(<trainer>__<plans>__2d with plans.json, dataset.json and fold_N/checkpoint_final.pth)")
    groups, kinds, displays, spacings, trainings = [], set(), set(), [], []
    for folder in folders:
        plans, dataset = read_json(folder / PLANS_FILE), read_json(folder / DATASET_FILE)
        ours = plans.get("ts2d", {}) if isinstance(plans.get("ts2d"), dict) else {}
        if CONFIGURATION not in plans.get("configurations", {}):
            raise InputError(folder / PLANS_FILE, "no '2d' configuration: only 2D nnU-Net models are supported")
        structures = _structures(dataset, ours, folder)
        channels = dataset.get("channel_names", {})
        n_channels = len(channels) if isinstance(channels, dict) else 0
        kind = ours.get("kind") or dataset.get("kind") or {2: "coronal", 1: "xray"}.get(n_channels)
        if kind not in CHANNELS:
            raise InputError(folder / DATASET_FILE, f"cannot tell the input kind: {n_channels} channels "
                                                    f"{channels} (expected 2 for coronal or 1 for xray)")
        kinds.add(kind)
        ours_layout = "structures" in dataset or bool(ours)
        displays.add(ours.get("display") or dataset.get("display")
                     or ("ts2d" if kind == "coronal" and not ours_layout else "radiograph"))
        spacings.append(tuple(float(s) for s in plans["configurations"][CONFIGURATION]["spacing"]))
        folds = sorted({p.parent.name[len("fold_"):] for p in folder.glob("fold_*/checkpoint_*.pth")})
        checkpoint = next((c for c in _CHECKPOINTS if all((folder / f"fold_{f}" / c).is_file() for f in folds)), None)
        if checkpoint is None:
            raise InputError(folder, f"no fold holds {' or '.join(_CHECKPOINTS)} for every fold ({folds})")
        groups.append(GroupSpec(_group_name(folder, dataset, root, [g.name for g in groups]),
                                folder.relative_to(root).as_posix(), structures, tuple(folds), checkpoint))
        trainings.append({"dataset": dataset.get("name"), "cases": dataset.get("numTraining"),
                          "trainer_folder": folder.name, **({"preset": dataset["preset"]} if dataset.get("preset") else {})})
    if len(kinds) > 1:
        raise InputError(root, f"its nnU-Net folders mix input kinds {sorted(kinds)}")
    if display is None and len(displays) > 1:
        raise InputError(root, f"its nnU-Net folders mix display conventions {sorted(displays)}; pass display=")
    kind = kinds.pop()
    return ModelManifest(
        name=name, kind=kind, channels=CHANNELS[kind], display=display or displays.pop(),
        spacing_mm=spacings[0], groups=tuple(groups), training={"groups": trainings},
        description="inferred from nnU-Net files", inferred=True,
    )


def _structures(dataset: Mapping, ours: Mapping, folder: Path) -> tuple[str, ...]:
    if ours.get("structures"):
        return tuple(ours["structures"])
    if dataset.get("structures"):
        return tuple(dataset["structures"])
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(folder / DATASET_FILE, "no 'structures' and no 'labels'")
    if any(not isinstance(v, int) for v in labels.values()):
        raise InputError(folder / DATASET_FILE, "region-based labels (lists of values) are not supported")
    return tuple(n for n, v in sorted(labels.items(), key=lambda kv: kv[1]) if v != 0)


def _group_name(folder: Path, dataset: Mapping, root: Path, taken: Sequence[str]) -> str:
    own = dataset.get("groups")
    candidates = []
    if isinstance(own, list) and len(own) == 1:
        candidates.append(str(own[0]))
    text = " ".join([str(dataset.get("name", "")), *folder.relative_to(root).parts]).lower()
    candidates += [g for g in GROUPS if g in text]
    parent = folder.parent if folder.parent != root else folder
    candidates.append(re.sub(r"[^A-Za-z0-9._-]", "_", parent.name) or "group")
    for c in candidates:
        if c not in taken:
            return c
    n = 2
    while f"{candidates[-1]}_{n}" in taken:
        n += 1
    return f"{candidates[-1]}_{n}"


def _relative(path: str) -> str:
    """A bundle-relative POSIX path; ValueError for one that leaves the bundle."""
    p = PurePosixPath(str(path).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"path {path!r} must be relative and inside the bundle")
    return p.as_posix()


# --- integrity --------------------------------------------------------------------
def sha256_file(path: str | PathLike) -> str:
    """SHA-256 (lower-case hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_weights(root: Path, manifest: ModelManifest) -> dict[str, str]:
    """Relative path -> SHA-256 of every checkpoint of a bundle."""
    return {rel: sha256_file(root / rel) for g in manifest.groups for rel in g.checkpoints()}


def verify_bundle(root: str | PathLike, manifest: ModelManifest) -> None:
    """Check that every group's files exist and every listed SHA-256 matches.

    Raises:
        InputError: A missing file, or a checksum mismatch (naming the file).
    """
    root = Path(root)
    for g in manifest.groups:
        for name in (PLANS_FILE, DATASET_FILE):
            if not (root / g.path / name).is_file():
                raise InputError(root / g.path, f"group {g.name!r}: missing {name}")
        for rel in g.checkpoints():
            if not (root / rel).is_file():
                raise InputError(root / rel, f"group {g.name!r}: missing checkpoint")
    for rel, expected in manifest.sha256.items():
        path = root / rel
        if not path.is_file():
            raise InputError(path, "listed in the manifest's sha256 but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise InputError(path, f"SHA-256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...): "
                                   "the file is corrupted or was changed")
