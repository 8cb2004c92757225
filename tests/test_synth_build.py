"""synth build: nnU-Net data sets from real labelled CTs (symlinked, never copied)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synth import build as sb
from synth.build import BuildOptions, SampleSpec, build
from synth.subjects import find_subjects
from ts2d_xray import labels as catalog
from ts2d_xray.dataset import iter_cases, read_case
from ts2d_xray.cli import main
from ts2d_xray.examples import missing_data_message, shared_data_dir

DATA = shared_data_dir()
pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=missing_data_message()),
    # segmentations_v1 holds three files that are not catalog classes (lung, ...).
    pytest.mark.filterwarnings("ignore:.*not catalog classes"),
]


def _subject(root: Path, name: str, ct: Path, masks: list[Path] | Path) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "ct.nii.gz").symlink_to(ct)
    if isinstance(masks, Path):
        (folder / "segmentations").symlink_to(masks, target_is_directory=True)
    else:
        (folder / "segmentations").mkdir()
        for m in masks:
            (folder / "segmentations" / m.name).symlink_to(m)
    return folder


def _abdomen(root: Path, name: str = "s1") -> Path:
    """TotalSegmentator's abdomen CT (3 mm) with its 104 v1 label files."""
    ts = DATA / "ct" / "ts_example"
    return _subject(root, name, ts / "ct.nii.gz", ts / "segmentations_v1")


def _aorta(root: Path, name: str = "s2") -> Path:
    """A chest-abdomen crop labelled with only the aorta and T12."""
    crop = DATA / "ct" / "crops" / "aorta"
    return _subject(root, name, crop / "ct.nii.gz", [crop / "aorta.nii.gz", crop / "vertebrae_T12.nii.gz"])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("subjects")
    _abdomen(root)
    _aorta(root)
    return root


@pytest.fixture(scope="module")
def built(source, tmp_path_factory) -> Path:
    """One coronal build of both subjects, in this process (the reference for the others)."""
    out = tmp_path_factory.mktemp("built") / "Dataset001_Coronal"
    report = build(source, out, BuildOptions(SampleSpec("coronal", seed=7)))
    assert report.done == ("s1_000", "s2_000") and not report.failed
    return out


def _arrays(dataset: Path) -> dict[str, bytes]:
    """Array bytes of every image and label file (headers and paths aside)."""
    files = sorted((dataset / "imagesTr").glob("*.nii.gz")) + sorted((dataset / "labelsTr").glob("*.nii.gz"))
    return {p.name: np.asarray(nib.load(p).dataobj).tobytes() for p in files}


def _all_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# --- the format -------------------------------------------------------------------
def test_coronal_build_writes_nnunet_dataset(built):
    meta = json.loads((built / "dataset.json").read_text())
    every = [n for g in catalog.GROUPS for n in catalog.group_classes(g)] + list(catalog.LUNG_FIELDS)
    assert meta["structures"] == every and len(every) == 119  # the 117 v2 classes, then the lung fields
    assert meta["labels"] == {"background": 0, **{n: k + 1 for k, n in enumerate(every)}}
    assert meta["multilabel"] is True and meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["channel_names"] == {"0": "CT", "1": "CT"} and meta["channels"] == ["mean", "max"]
    assert (meta["kind"], meta["preset"], meta["seed"], meta["spacing"]) == ("coronal", None, 7, 1.5)
    for case in ("s1_000", "s2_000"):
        assert (built / "imagesTr" / f"{case}_0000.nii.gz").is_file()
        assert (built / "imagesTr" / f"{case}_0001.nii.gz").is_file()
        assert (built / "cases" / f"{case}.json").is_file()
    assert not (built / ".partial").exists()

    # The documented layout: uint8 (x = W, y = H, z = 1, t = K), one binary layer per structure.
    label = nib.load(built / "labelsTr" / "s1_000.nii.gz")
    data = np.asarray(label.dataobj)
    assert data.dtype == np.uint8 and data.ndim == 4 and data.shape[2:] == (1, 119)
    assert set(np.unique(data)) <= {0, 1}
    liver = data[:, :, 0, every.index("liver")].T  # (H, W)
    assert liver.sum() > 1000
    # Radiograph display: the liver (patient's right) on the image left.
    assert np.nonzero(liver)[1].mean() < liver.shape[1] / 2

    image, masks = read_case(built, "s1_000")
    assert image.array.shape == (2, *liver.shape) and masks.array.shape == (119, *liver.shape)
    assert np.array_equal(masks.mask("liver"), liver.astype(bool))
    assert image.plane.spacing == pytest.approx((1.5, 1.5), abs=0.02) and image.plane.display == "radiograph"
    assert image.array[1].max() > 1000  # max channel sees bone (HU)


def test_images_read_as_2d_cases_by_simpleitk(built):
    import SimpleITK as sitk

    # nnU-Net's default reader (SimpleITKIO) takes a (W, H, 1) image as one 2D case.
    image = sitk.ReadImage(str(built / "imagesTr" / "s2_000_0000.nii.gz"))
    assert image.GetDimension() == 3 and image.GetSize()[2] == 1


def test_empty_and_unlabelled_structures_are_recorded(built):
    meta = json.loads((built / "dataset.json").read_text())
    records = {r["case"]: r for r in iter_cases(built)}
    assert set(records) == {"s1_000", "s2_000"}
    crop = records["s2_000"]
    # The crop labels only aorta and T12: everything else is empty *and* unlabelled.
    assert set(meta["structures"]) - set(crop["empty_structures"]) == {"aorta", "vertebrae_T12"}
    assert set(crop["unlabelled_structures"]) == set(meta["structures"]) - {"aorta", "vertebrae_T12"}
    abdomen = records["s1_000"]
    assert "liver" not in abdomen["empty_structures"] and "brain" in abdomen["empty_structures"]
    assert "sternum" in abdomen["unlabelled_structures"]  # a v2 class that v1 labels lack
    assert "brain" not in abdomen["unlabelled_structures"]  # labelled, and absent: a true negative
    # Empty in every case: in neither CT.
    assert "brain" in meta["empty_structures"] and "liver" not in meta["empty_structures"]
    assert "aorta" not in meta["empty_structures"]


def test_one_dataset_per_group_from_a_list_file(tmp_path):
    root = tmp_path / "subjects"
    _aorta(root)
    listing = tmp_path / "cts.csv"
    listing.write_text("ct_path,labels_path,classmap\n# the crop\nsubjects/s2/ct.nii.gz,subjects/s2\n")
    out = tmp_path / "out"
    report = build(listing, out, BuildOptions(SampleSpec("coronal"), groups=("organs", "cardiac")))
    assert report.done == ("s2_000",) and report.datasets == (out / "organs", out / "cardiac")
    organs = json.loads((out / "organs" / "dataset.json").read_text())
    assert organs["structures"] == list(catalog.group_classes("organs")) and len(organs["structures"]) == 24
    assert organs["groups"] == ["organs"]
    data = np.asarray(nib.load(out / "organs" / "labelsTr" / "s2_000.nii.gz").dataobj)
    assert data.shape[3] == 24 and not data.any()  # no organ labelled in the crop: empty, no error
    _, cardiac = read_case(out / "cardiac", "s2_000")
    assert cardiac.names == catalog.group_classes("cardiac") and cardiac.mask("aorta").sum() > 100


# --- determinism, workers, dask ---------------------------------------------------
def test_same_seed_same_arrays_with_two_worker_processes(built, source, tmp_path):
    out = tmp_path / "Dataset001_Coronal"
    report = build(source, out, BuildOptions(SampleSpec("coronal", seed=7), workers=2))
    assert report.done == ("s1_000", "s2_000")
    assert _arrays(out) == _arrays(built)
    # Whole files too (nibabel's gzip stores no time or name), records included.
    for name in ("labelsTr/s1_000.nii.gz", "imagesTr/s2_000_0001.nii.gz", "cases.jsonl"):
        assert (out / name).read_bytes() == (built / name).read_bytes()


@pytest.mark.parametrize("kind", ["coronal", "xray"])
def test_dask_cluster_gives_the_same_arrays(kind, request, source, tmp_path):
    from distributed import LocalCluster

    if kind == "coronal":
        reference, options = request.getfixturevalue("built"), BuildOptions(SampleSpec("coronal", seed=7))
    else:
        reference = request.getfixturevalue("xray_built")
        options = BuildOptions(SampleSpec("xray", preset="whole-body", seed=5, shape=(64, 64)), per_ct=2)
    out = tmp_path / "dask"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        report = build(source, out, replace(options, scheduler=cluster.scheduler_address))
    assert len(report.done) == 2 * options.per_ct and not report.failed
    assert _arrays(out) == _arrays(reference)


def test_stable_hash_and_case_rng_do_not_depend_on_the_process():
    # Fixed values: a change here changes every data set built with a seed.
    assert sb.stable_hash("s1_000") == 15125953958263123743
    assert sb.case_rng(3, "s1_000").random(2).tolist() == pytest.approx([0.6557005410279271, 0.2385047769381905])
    assert sb.case_rng(3, "s1_001").random() != pytest.approx(0.6557005410279271)


# --- resume -----------------------------------------------------------------------
_BUILD_CASE = sb.build_case  # the real one, whatever a test patches in
def _counting(monkeypatch) -> list[str]:
    """Record the case ids build_case is called with (in-process builds)."""
    calls: list[str] = []

    def counted(job):
        calls.append(job.case_id)
        return _BUILD_CASE(job)

    monkeypatch.setattr(sb, "build_case", counted)
    return calls


class _Killed(BaseException):
    """Stands for the build being killed (not an Exception: nothing may catch it)."""


def test_resume_after_a_killed_build(tmp_path, monkeypatch):
    source = tmp_path / "subjects"
    _aorta(source, "a")
    _aorta(source, "b")
    out = tmp_path / "out"

    def killed_on_b(job):
        if job.case_id == "b_000":
            # Leave what a kill while writing leaves: a temporary folder and a stray image.
            partial = out / ".partial" / "b_000-dead"
            partial.mkdir(parents=True)
            (partial / "junk.nii.gz").write_bytes(b"half")
            shutil.copy(out / "imagesTr" / "a_000_0000.nii.gz", out / "imagesTr" / "b_000_0000.nii.gz")
            raise _Killed
        return _BUILD_CASE(job)

    monkeypatch.setattr(sb, "build_case", killed_on_b)
    with pytest.raises(_Killed):
        build(source, out, BuildOptions(SampleSpec("coronal")))
    assert (out / "cases" / "a_000.json").is_file() and not (out / "cases" / "b_000.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in (out / "imagesTr").glob("a_000*")}

    calls = _counting(monkeypatch)
    report = build(source, out, BuildOptions(SampleSpec("coronal")))
    assert calls == ["b_000"] and report.done == ("b_000",) and report.skipped == ("a_000",)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not redone
    assert not (out / ".partial").exists()
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    assert _arrays(out)["a_000.nii.gz"] == _arrays(out)["b_000.nii.gz"]  # same CT, same labels


def _files_and_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_build_killed_with_sigkill_resumes_to_the_same_bytes(tmp_path):
    """A real SIGKILL mid-build, then a re-run: every file byte-identical to an uninterrupted build."""
    import signal
    import subprocess
    import sys
    import time

    source = tmp_path / "subjects"
    for name in ("a", "b", "c", "d", "e", "f"):
        _aorta(source, name)
    argv = ["synth", "build", str(source), "--kind", "coronal", "--seed", "3", "-o"]
    reference = tmp_path / "uninterrupted" / "Dataset001_Coronal"  # the name is in dataset.json
    assert main([*argv, str(reference)]) == 0

    out = tmp_path / "killed" / "Dataset001_Coronal"
    code = f"import sys; from ts2d_xray.cli import main; sys.exit(main({[*argv, str(out)]!r}))"
    build_process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "cases" / "a_000.json").exists() and build_process.poll() is None:
        assert time.monotonic() < deadline, "the build wrote no case in 120 s"
        time.sleep(0.005)
    build_process.send_signal(signal.SIGKILL)
    assert build_process.wait(60) == -signal.SIGKILL, "the build finished before it could be killed"
    killed = _files_and_bytes(out)
    assert "cases/f_000.json" not in killed  # killed mid-build

    assert main([*argv, str(out)]) == 0
    assert _files_and_bytes(out) == _files_and_bytes(reference)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_resume_rebuilds_a_case_with_a_missing_file(built, tmp_path, monkeypatch, source):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    (out / "labelsTr" / "s2_000.nii.gz").unlink()
    kept = (out / "labelsTr" / "s1_000.nii.gz").stat().st_mtime_ns
    calls = _counting(monkeypatch)
    report = build(source, out, BuildOptions(SampleSpec("coronal", seed=7)))
    assert calls == ["s2_000"] and report.skipped == ("s1_000",)
    assert (out / "labelsTr" / "s1_000.nii.gz").stat().st_mtime_ns == kept
    assert _arrays(out) == _arrays(built)


# --- failures and bad input (through the CLI) -------------------------------------
def test_a_corrupted_subject_fails_alone(tmp_path, capsys):
    source = tmp_path / "subjects"
    _aorta(source, "good")
    bad = _aorta(source, "bad")
    (bad / "ct.nii.gz").unlink()
    (bad / "ct.nii.gz").write_bytes(os.urandom(2000))  # garbage, not an image
    out = tmp_path / "out"
    code = main(["synth", "build", str(source), "-o", str(out), "--kind", "coronal"])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 done, 0 skipped (already there), 1 failed" in captured.out
    assert "failed: bad_000:" in captured.err and "not a readable image" in captured.err
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1
    assert not any("bad_000" in name for name in _all_files(out))


def test_a_subject_without_labels_fails_alone(tmp_path, capsys):
    source = tmp_path / "subjects"
    _aorta(source, "good")
    unlabelled = _aorta(source, "nolabels")
    shutil.rmtree(unlabelled / "segmentations")
    out = tmp_path / "out"
    assert main(["synth", "build", str(source), "-o", str(out), "--kind", "coronal"]) == 1
    err = capsys.readouterr().err
    assert "failed: nolabels_000:" in err and "segmentations: no such file or folder" in err
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing", "-o", "{out}", "--kind", "coronal"], "missing: no such file or folder"),
        (["{tmp}/empty", "-o", "{out}", "--kind", "coronal"], "no subjects"),
        (["{src}", "-o", "{out}", "--kind", "coronal", "--groups", "organs,lungs"], "unknown group 'lungs'"),
        (["{src}", "-o", "{out}", "--kind", "xray", "--preset", "chest-lateral"], "unknown preset 'chest-lateral'"),
        (["{src}", "-o", "{out}", "--kind", "xray"], "needs a preset"),
        (["{src}", "-o", "{tmp}/a_file", "--kind", "coronal"], "a_file: exists and is not a folder"),
        (["{src}", "-o", "{tmp}/not_ours", "--kind", "coronal"], "holds no synth data set"),
        (["{src}", "-o", "{out}", "--kind", "coronal", "--per-ct", "2"], "per_ct must be 1 for kind 'coronal'"),
        (["{src}", "-o", "{out}", "--kind", "coronal", "--shape", "64,64"], "shape is for kind 'xray'"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    src = tmp_path / "subjects"
    _aorta(src)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "not_ours").mkdir()
    (tmp_path / "not_ours" / "notes.txt").write_text("mine")
    before = _all_files(tmp_path)
    argv = [a.format(tmp=tmp_path, src=src, out=tmp_path / "out") for a in args]
    assert main(["synth", "build", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ts2d-xray synth: error:") and message in err and "\n" not in err
    assert _all_files(tmp_path) == before and not (tmp_path / "out").exists()


def test_resume_with_other_settings_is_refused(built, source, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["synth", "build", str(source), "-o", str(out), "--kind", "coronal", "--seed", "8"]) == 2
    assert "seed=7 there, 8 now" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_options_name_the_bad_parameter():
    with pytest.raises(ValueError, match="groups: 'all' cannot be combined"):
        BuildOptions(groups=("all", "organs"))
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        BuildOptions(workers=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        SampleSpec(seed=-1)
    with pytest.raises(ValueError, match="preset is for kind 'xray'"):
        SampleSpec("coronal", preset="chest-pa")


def test_list_file_errors_name_the_line(tmp_path):
    listing = tmp_path / "cts.txt"
    listing.write_text("a/ct.nii.gz,a\nonly_one_field\n")
    with pytest.raises(ValueError, match=r"cts.txt: line 2: expected ct_path,labels_path\[,classmap\]"):
        find_subjects(listing)
    listing.write_text("x/ct.nii.gz,x\ny/x.nii.gz,y\n")
    with pytest.raises(ValueError, match="subject ids must be unique, repeated: x"):
        find_subjects(listing)


# --- synthetic radiographs (synth.drr) ----------------------------------------------
XRAY = ["--kind", "xray", "--preset", "whole-body", "--shape", "64,64", "--seed", "5"]


@pytest.fixture(scope="module")
def xray_built(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("xray") / "Dataset002_Xray"
    assert main(["synth", "build", str(source), "-o", str(out), "--per-ct", "2", *XRAY]) == 0
    return out


def test_xray_build_writes_radiographs_with_masks(xray_built):
    meta = json.loads((xray_built / "dataset.json").read_text())
    assert meta["numTraining"] == 4 and meta["channel_names"] == {"0": "zscore"} and meta["channels"] == ["xray"]
    assert (meta["kind"], meta["preset"], meta["seed"], meta["spacing"], meta["shape"]) == (
        "xray", "whole-body", 5, None, [64, 64])
    assert sorted(p.name for p in (xray_built / "imagesTr").glob("*.nii.gz")) == [
        f"{s}_{k:03d}_0000.nii.gz" for s in ("s1", "s2") for k in range(2)]
    image, masks = read_case(xray_built, "s1_001")
    assert image.array.shape == (1, 64, 64) and masks.array.shape == (119, 64, 64)
    assert 0.0 <= image.array.min() and image.array.max() <= 1.0 and image.array.std() > 0.01
    assert masks.mask("liver").any() and masks.mask("lungs").any()
    records = {r["case"]: r for r in iter_cases(xray_built)}
    assert records["s1_000"]["params"] != records["s1_001"]["params"]  # two draws of one CT
    assert records["s1_000"]["shape"] == [64, 64] and len(records["s1_000"]["spacing_mm"]) == 2


def test_xray_cases_do_not_depend_on_build_order(xray_built, source, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(xray_built, out)
    (out / "labelsTr" / "s1_000.nii.gz").unlink()  # rebuilt now, after s1_001 and s2
    assert main(["synth", "build", str(source), "-o", str(out), "--per-ct", "2", *XRAY]) == 0
    assert _arrays(out) == _arrays(xray_built)


def test_synth_drr_writes_radiographs_previews_and_masks(tmp_path, capsys):
    from ts2d_xray.io import read_masks

    subject = _abdomen(tmp_path / "subjects")
    out = tmp_path / "drr"
    code = main(["synth", "drr", str(subject / "ct.nii.gz"), "--labels", str(subject), "-o", str(out),
                 "--preset", "whole-body", "-n", "2", "--shape", "64,64"])
    assert code == 0 and "2 radiographs" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    for i in range(2):
        assert {f"drr_{i:03d}.nii.gz", f"drr_{i:03d}.png", f"drr_{i:03d}.seg.nrrd"} <= names
    image = np.asarray(nib.load(out / "drr_000.nii.gz").dataobj)
    assert image.shape[:2] == (64, 64) and 0.0 <= image.min() and image.max() <= 1.0
    masks = read_masks(out / "drr_001.seg.nrrd")
    assert masks.mask("liver").any() and masks.mask("lungs").any()
    params = json.loads((out / "params.json").read_text())
    assert [s["image"] for s in params["samples"]] == ["drr_000.nii.gz", "drr_001.nii.gz"]
    # An existing output folder is refused, and left as it was.
    assert main(["synth", "drr", str(subject / "ct.nii.gz"), "-o", str(out), "--preset", "whole-body"]) == 2
    assert {p.name for p in out.iterdir()} == names
