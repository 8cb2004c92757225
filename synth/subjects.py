"""Where the labelled CTs of a data set build come from.

A source is a folder of subjects in TotalSegmentator's layout
(``<subject>/ct.nii.gz`` + ``<subject>/segmentations/<structure>.nii.gz``) or a text/CSV
list of ``ct_path,labels_path[,classmap]`` lines.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from ts2d_xray import labels as catalog
from ts2d_xray.errors import InputError

__all__ = ["Subject", "find_subjects", "labelled_classes"]

_SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Subject:
    """One labelled CT: paths and an optional class map for a multilabel map."""

    id: str
    ct: Path
    labels: Path
    classmap: str | None = None


def find_subjects(source: str | PathLike) -> list[Subject]:
    """The labelled CTs of a source, sorted by subject id.

    Args:
        source: A folder of subjects in TotalSegmentator's layout
            (``<subject>/ct.nii.gz`` + ``<subject>/segmentations/*.nii.gz``), or a text
            /CSV file with one ``ct_path,labels_path[,classmap]`` per line (relative
            paths are relative to the file; ``#`` starts a comment line; an optional
            header line starts with ``ct_path``).  ``classmap`` is ``v1``, ``v2`` or a
            file, needed for multilabel maps without a ``structures.csv`` beside them.

    Raises:
        InputError: Missing source, no subjects, a malformed line, repeated or unusable
            subject ids.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(source, "no such file or folder")
    subjects = _folder_subjects(source) if source.is_dir() else _listed_subjects(source)
    ids = [s.id for s in subjects]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise InputError(source, f"subject ids must be unique, repeated: {', '.join(repeated)}")
    bad = [i for i in ids if not _SUBJECT_ID.match(i)]
    if bad:
        raise InputError(source, f"subject ids may hold only letters, digits, '.', '_', '-': {', '.join(bad)}")
    return sorted(subjects, key=lambda s: s.id)


def _folder_subjects(folder: Path) -> list[Subject]:
    # Labels are required: a subject without segmentations/ fails as a case, naming the
    # missing folder, while the other subjects are built.
    subjects = [Subject(d.name, d / "ct.nii.gz", d / "segmentations")
                for d in folder.iterdir() if (d / "ct.nii.gz").is_file()]
    if not subjects:
        hint = " (this looks like one subject; give the folder above it)" if (folder / "ct.nii.gz").exists() else ""
        raise InputError(folder, f"no subjects: expected <subject>/ct.nii.gz with <subject>/segmentations/{hint}")
    return subjects


def _listed_subjects(path: Path) -> list[Subject]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read the list of CTs ({err})") from None
    subjects = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        row = [cell.strip() for cell in row]
        if not any(row) or row[0].startswith("#") or (number == 1 and row[0] == "ct_path"):
            continue
        if len(row) not in (2, 3) or not row[0] or not row[1]:
            raise InputError(path, f"line {number}: expected ct_path,labels_path[,classmap], got {','.join(row)!r}")
        ct, labels = (path.parent / row[0]), (path.parent / row[1])
        classmap = row[2] if len(row) == 3 and row[2] else None
        if classmap not in (None, "v1", "v2"):
            classmap = str(path.parent / classmap)
        subjects.append(Subject(_subject_id(ct), ct, labels, classmap))
    if not subjects:
        raise InputError(path, "lists no CTs (expected lines ct_path,labels_path[,classmap])")
    return subjects


def _subject_id(ct: Path) -> str:
    """``<subject>`` of ``<subject>/ct.nii.gz``, else the CT's file name without suffix."""
    name = ct.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return ct.parent.name if name == "ct" else name


def labelled_classes(subject: Subject) -> frozenset[str]:
    """v2 classes the subject's labels cover, empty or not.

    A folder labels the classes it has files for (the TotalSegmentator data set writes
    every class, crops only a few); a multilabel map labels every class of its map.
    Training can then tell "absent here" (a true negative) from "never labelled".
    """
    from ts2d_xray.io import read_classmap
    from ts2d_xray.kinds import LABEL_SUFFIXES

    path = subject.labels
    if path.is_dir():
        folder = path / "segmentations" if (path / "segmentations").is_dir() else path
        names = set()
        for p in folder.iterdir():
            suffix = next((s for s in LABEL_SUFFIXES if p.name.lower().endswith(s)), None)
            if suffix is not None:
                names.add(p.name[: -len(suffix)])
    else:
        names = set(read_classmap(subject.classmap or path.parent / "structures.csv").values())
    names = {n for n in names if catalog.is_class(n)}
    as_v2 = {n if catalog.structure(n).v2_id is not None else catalog.v1_to_v2(n) for n in names}
    return frozenset(as_v2 - {None})
