"""The training log: one JSON line per epoch in ``fold_N/training_log.jsonl``.

Each line is the epoch's record (:meth:`ts2d_xray.train.Trainer.fit` returns them as
``history``): ``epoch`` (0-based), ``train_loss``, ``val_loss``, ``lr``, ``mean_dice``,
``ema_dice``, ``dice`` (per structure), ``iterations``, ``encoder_frozen``, ``seconds``.
Dice values that are not defined (nan: a structure neither present nor predicted) are
written as ``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from ts2d_xray.io.files import write_text

__all__ = ["LOG_FILE", "append_record", "read_log"]

LOG_FILE = "training_log.jsonl"


def _nan_to_none(value: Any) -> Any:
    """``value`` with nan floats (also inside dicts) as None, which JSON writes as ``null``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return value


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """Append one epoch's record as a line."""
    with open(path, "a") as f:
        f.write(json.dumps(_nan_to_none(dict(record))) + "\n")


def read_log(path: Path, epochs: int) -> list[dict]:
    """The records of the first ``epochs`` epochs of a training log (a resumed run's past).

    Records of later epochs (written after the checkpoint a run resumes from) are
    dropped from the file too.
    """
    if not path.is_file() or epochs == 0:
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r["epoch"] < epochs]
    if len(kept) != len(records):
        write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
