"""Outputs that cannot be written (disk full, read-only place): one line naming the path and the cause,
exit code 3, the input never blamed, and no partial file or folder left (checked by listing the folders).

A full disk is made real with RLIMIT_FSIZE: the kernel then fails every write past the
limit with EFBIG ("File too large"), in C libraries as in Python, as a full disk fails
them with ENOSPC; it works for root too (unlike a read-only chmod), and needs no tmpfs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

import model_fixtures as mf
from ts2d_xray.cli import main
from ts2d_xray.errors import OutputError
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.io import write_image2d, write_masks
from ts2d_xray.io.files import new_folder, staged_folder, write_json
from ts2d_xray.nnunet.checkpoint import save_checkpoint

resource = pytest.importorskip("resource")  # POSIX only
signal = pytest.importorskip("signal")

LIMIT = 1000  # bytes: every file below is larger
FULL = "File too large"


@contextlib.contextmanager
def disk_full(limit: int = LIMIT) -> Iterator[None]:
    """Writes past ``limit`` bytes of a file fail (EFBIG) inside the block, in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def _listing(folder: Path) -> list[str]:
    """Every path under ``folder``, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _plane(h: int = 64, w: int = 48) -> Plane:
    return Plane((h, w), (1.0, 1.0), col_dir=(1, 0, 0), row_dir=(0, 0, -1))


def _image() -> Image2D:
    return Image2D(np.random.default_rng(0).random((2, 64, 48), np.float32), _plane(), ("mean", "max"))


def _masks() -> Masks:
    layers = np.random.default_rng(1).random((4, 128, 96)) > 0.5
    return Masks(layers, ("liver", "spleen", "heart", "aorta"), _plane(128, 96))


WRITERS: dict[str, Callable[[Path], object]] = {
    "json": lambda out: write_json(out / "a.json", {"values": list(range(1000))}),
    "image.nrrd": lambda out: write_image2d(_image(), out / "image.nrrd"),
    "image.nii.gz": lambda out: write_image2d(_image(), out / "image.nii.gz"),
    "image.png": lambda out: write_image2d(_image(), out / "image.png"),
    "masks.seg.nrrd": lambda out: write_masks(_masks(), out / "masks.seg.nrrd"),
    "masks.nii.gz": lambda out: write_masks(_masks(), out / "masks.nii.gz"),
    "masks (png folder)": lambda out: write_masks(_masks(), out / "masks"),
    "checkpoint": lambda out: save_checkpoint(out / "checkpoint.pth", {"w": np.zeros(1000)}),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_is_an_output_error_naming_the_file_and_leaves_nothing(tmp_path: Path, writer: str) -> None:
    out = tmp_path / "out"
    with disk_full(), pytest.raises(OutputError, match=FULL) as err:
        WRITERS[writer](out)
    assert err.value.path.startswith(str(out)) and ".tmp" not in err.value.path  # the final name, not a temp
    assert _listing(out) == []
    WRITERS[writer](out)  # with room, the same call works


def test_no_space_left_is_an_output_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError, match="No space left on device") as err:
        write_json(tmp_path / "report.json", {"a": 1})
    assert err.value.path == str(tmp_path / "report.json")
    assert _listing(tmp_path) == []


def test_a_parent_path_that_is_a_file_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(OutputError, match="is a file, not a folder") as err:
        write_json(tmp_path / "taken" / "sub" / "a.json", {})
    assert err.value.path == str(tmp_path / "taken")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        with staged_folder(tmp_path / "taken" / "case"):
            pass
    assert _listing(tmp_path) == ["taken"]


def test_reading_an_input_inside_a_folder_writer_is_not_an_output_error(tmp_path: Path) -> None:
    """Only writing errors become OutputError: a missing input read while filling a folder stays what it is."""
    with pytest.raises(FileNotFoundError):
        with new_folder(tmp_path / "out") as temp:
            (temp / "copy.txt").write_bytes((tmp_path / "missing.txt").read_bytes())
    assert _listing(tmp_path) == []


def test_project_into_a_full_disk_exits_3_with_one_line(tmp_path: Path, data: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["project", str(data / "ct" / "ts_example" / "ct_small.nii.gz"), "-o", str(out / "p.nrrd"),
            "--preview", str(out / "p.png")]
    with disk_full():
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1
    assert err.startswith(f"ts2d-xray project: error: cannot write {out}") and FULL in err
    assert _listing(tmp_path) == []


def test_project_under_a_file_exits_3(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("a file")
    argv = ["project", str(data / "ct" / "ts_example" / "ct_small.nii.gz"), "-o", str(tmp_path / "taken" / "p.nrrd")]
    assert main(argv) == 3
    assert f"cannot write {tmp_path / 'taken'}: is a file" in capsys.readouterr().err
    assert _listing(tmp_path) == ["taken"]


def test_segment_into_a_full_disk_exits_3_and_leaves_no_case_folder(tmp_path: Path, data: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bundle = mf.deterministic_bundle(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["segment", str(data / "projections" / "ts2d_samples" / "sample_s0332.nrrd"), "-o", str(out),
            "--model", str(bundle), "--device", "cpu"]
    with disk_full():
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"ts2d-xray segment: error: cannot write {out / 'sample_s0332'}" in err and FULL in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _synth_build_with_limit(source: Path, out: Path, limit: int) -> subprocess.CompletedProcess:
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))\n"
            "from ts2d_xray.cli import main\n"
            f"sys.exit(main(['synth', 'build', {str(source)!r}, '-o', {str(out)!r}, '--kind', 'coronal']))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _aorta_subjects(root: Path, names: tuple[str, ...], data: Path) -> Path:
    crop = data / "ct" / "crops" / "aorta"
    for name in names:
        (root / name / "segmentations").mkdir(parents=True)
        (root / name / "ct.nii.gz").symlink_to(crop / "ct.nii.gz")
        for m in ("aorta.nii.gz", "vertebrae_T12.nii.gz"):
            (root / name / "segmentations" / m).symlink_to(crop / m)
    return root


def test_synth_build_on_a_full_disk_stops_with_exit_3_and_blames_no_subject(tmp_path: Path, data: Path) -> None:
    source = _aorta_subjects(tmp_path / "subjects", ("a", "b"), data)
    out = tmp_path / "out"
    result = _synth_build_with_limit(source, out, 2000)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("ts2d-xray: warning: ")]
    assert len(errors) == 1 and errors[0].startswith(f"ts2d-xray synth: error: cannot write {out}"), result.stderr
    assert FULL in errors[0] and "failed" not in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == ["subjects"]  # no debris at all


def test_synth_build_keeps_complete_cases_when_the_disk_fills_and_resumes(tmp_path: Path, data: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import nibabel

    source = _aorta_subjects(tmp_path / "subjects", ("a", "b", "c"), data)
    out = tmp_path / "out"
    save = nibabel.save

    def fills_at_b(image: object, path: str) -> None:
        if "b_000" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(image, path)

    monkeypatch.setattr(nibabel, "save", fills_at_b)
    assert main(["synth", "build", str(source), "-o", str(out), "--kind", "coronal"]) == 3
    err = capsys.readouterr().err
    assert f"cannot write {out / 'imagesTr' / 'b_000_0000.nii.gz'}: No space left on device" in err
    assert "failed: " not in err
    files = _listing(out)
    assert not [f for f in files if ".tmp" in f or ".partial" in f or "b_000" in f or "c_000" in f]
    assert "cases/a_000.json" in files  # complete cases stay for a re-run
    monkeypatch.setattr(nibabel, "save", save)
    assert main(["synth", "build", str(source), "-o", str(out), "--kind", "coronal"]) == 0
    assert "2 done, 1 skipped" in capsys.readouterr().out
