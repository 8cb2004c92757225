"""Fix the train/validation split of the Wingspan chest radiographs: ``configs/wingspan_split.json``.

Wingspan (``xray/wingspan/`` of the shared data folder, see its README entry) holds 220
real adult chest PA films named by their DICOM SOP Instance UIDs.  A UID starts with
the root its maker registered, so the first four components of the file name
(e.g. ``1.2.840.113619``) tell the vendor (or site) group; those groups differ in
exposure, processing and field of view, which is why the split is stratified by them.

Per group, ``round(fraction * n)`` films go to validation (a group of one stays in
training), drawn with a seeded generator from the sorted names, so the split depends
only on the file names, the seed and the fraction.  Never train on the validation part:
it is the held-out score of ``scripts/evaluate_wingspan.py`` and of docs/models.md.

Usage: ``.venv/bin/python scripts/make_wingspan_split.py [--check]`` (``--check``: exit 1
when the stored split differs from a fresh one, write nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLIT_FILE = ROOT / "configs" / "wingspan_split.json"
SEED = 20261212
VALIDATION_FRACTION = 0.2
#: UID components that make up the vendor group (the registered root of the UID).
PREFIX_COMPONENTS = 4


def vendor_prefix(name: str) -> str:
    """The vendor group of a Wingspan file name: the first four UID components."""
    return ".".join(Path(name).name.split(".")[:PREFIX_COMPONENTS])


def make_split(names: Sequence[str], seed: int = SEED, fraction: float = VALIDATION_FRACTION) -> dict[str, Any]:
    """The split of ``names``: ``{"train": [...], "validation": [...], "groups": {prefix: {...}}}``, sorted.

    Stratified by :func:`vendor_prefix`: each group sends ``round(fraction * n)`` of its
    ``n`` films to validation, chosen by a generator seeded with ``seed`` and the group.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        groups.setdefault(vendor_prefix(name), []).append(name)
    train: list[str] = []
    validation: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for k, (prefix, members) in enumerate(sorted(groups.items())):
        n_val = int(round(fraction * len(members)))
        order = np.random.default_rng([seed, k]).permutation(len(members))
        chosen = {members[i] for i in order[:n_val]}
        validation += [m for m in members if m in chosen]
        train += [m for m in members if m not in chosen]
        counts[prefix] = {"train": len(members) - n_val, "validation": n_val}
    return {"train": sorted(train), "validation": sorted(validation), "groups": counts}


def wingspan_names(data: Path) -> list[str]:
    """The Wingspan film names (``png/*.png``), sorted."""
    names = sorted(p.name for p in (data / "xray" / "wingspan" / "png").glob("*.png"))
    if not names:
        raise FileNotFoundError(f"no Wingspan films in {data / 'xray' / 'wingspan' / 'png'}")
    return names


def split_document(names: Sequence[str]) -> dict[str, Any]:
    """The JSON document stored in ``configs/wingspan_split.json``."""
    return {
        "description": "Fixed train/validation split of the Wingspan chest radiographs "
                       "(shared data xray/wingspan/), stratified by vendor group (the first "
                       f"{PREFIX_COMPONENTS} UID components of the file name). Made by "
                       "scripts/make_wingspan_split.py; never train on 'validation'.",
        "seed": SEED,
        "validation_fraction": VALIDATION_FRACTION,
        **make_split(names),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the stored split."""
    from ts2d_xray.examples import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored split; write nothing")
    args = parser.parse_args(argv)
    document = split_document(wingspan_names(shared_data_dir()))
    text = json.dumps(document, indent=1) + "\n"
    if args.check:
        same = SPLIT_FILE.is_file() and json.loads(SPLIT_FILE.read_text()) == document
        print(f"{SPLIT_FILE}: {'up to date' if same else 'DIFFERS from a fresh split'}")
        return 0 if same else 1
    SPLIT_FILE.write_text(text)
    print(f"wrote {SPLIT_FILE}: {len(document['train'])} train, {len(document['validation'])} validation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
