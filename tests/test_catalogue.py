"""Issue 13's catalogue of bad inputs, the cases that no other test file checks whole.

docs/errors.md ("The hardening catalogue") maps every case of the catalogue to its test;
most live beside the code they check (test_cli, test_io_radiograph, test_bad_inputs, ...).
The cases here start from real files of the shared data folder, copied or changed into
``tmp_path`` (the shared data is never modified), and check through the command line:
exit code 2 (the input) or 3 (the output place), one line naming the file, and nothing
left in the output place.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

import model_fixtures as mf
from ts2d_xray.cli import main
from ts2d_xray.errors import InputError
from ts2d_xray.image import Masks, Plane
from ts2d_xray.io import read_ct, read_masks, write_masks
from ts2d_xray.io.files import write_json
from ts2d_xray.io.mask_sources import read_mask_source
from ts2d_xray.io.radiograph import read_radiograph

pytestmark = pytest.mark.filterwarnings("ignore:.*(no pixel spacing|no patient orientation|assum).*:UserWarning")

NIH = "xray/nih_cxr14/00000001_000.png"
DOG = "xray/dicom/highdicom_dx_dog_chest_monochrome1.dcm"
SMALL_CT = "ct/ts_example/ct_small.nii.gz"
SMALL_LABELS = "ct/ts_example/ct_small_seg_v2_multilabel.nii.gz"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private model cache (never the user's), outside the folders the tests list."""
    monkeypatch.setenv("TS2D_XRAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"coronal": mf.deterministic_bundle(root / "coronal-test"),
            "xray": mf.deterministic_bundle(root / "xray-test", kind="xray", spacing=2.0)}


def _listing(folder: Path) -> list[str]:
    """Every path under ``folder``, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], message: str, code: int = 2) -> str:
    """Run the CLI: ``code``, one error line holding ``message`` (warnings are lines of their own)."""
    assert main(argv) == code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("ts2d-xray: warning: ")]
    assert len(errors) == 1 and message in errors[0], err
    return errors[0]


# --- missing path, every command --------------------------------------------------------------
MISSING = {  # command line ({m}: the missing path), what the one error line says
    "project": (["project", "{m}", "-o", "{out}/p.nrrd"], "{m}: no such file or folder"),
    "project --labels": (["project", "{ct}", "-o", "{out}/p.nrrd", "--labels", "{m}", "--classmap", "v2",
                          "--labels-out", "{out}/m.seg.nrrd"], "{m}: no such file or folder"),
    "demo --radiograph": (["demo", "-o", "{out}", "--radiograph", "{m}"], "{m}: no such file"),
    "synth drr": (["synth", "drr", "{m}", "-o", "{out}", "--preset", "chest-pa"], "{m}: no such file or folder"),
    "synth drr --labels": (["synth", "drr", "{ct}", "--labels", "{m}", "-o", "{out}", "--preset", "chest-pa"],
                           "{m}: no such file or folder"),
    "synth build": (["synth", "build", "{m}", "-o", "{out}", "--kind", "coronal"], "{m}: no such file or folder"),
    "segment": (["segment", "{m}", "-o", "{out}"], "{m}: no such file or folder"),
    "segment --model": (["segment", "{ct}", "-o", "{out}", "--model", "{m}"], "{m}: no such model file or folder"),
    "train": (["train", "{m}", "-o", "{out}"], "{m}: no such data set folder"),
    "adapt": (["adapt", "{m}", "{m}", "-o", "{out}"], "{m}: no such model folder"),
    "export-regions": (["export-regions", "{m}", "-o", "{out}"], "{m}: no such data set folder"),
    "evaluate PRED": (["evaluate", "{m}", "{labels}", "-o", "{out}"], "{m}: no such file or folder"),
    "evaluate GT": (["evaluate", "{seg}", "{m}", "-o", "{out}"], "{m}: no such file or folder"),
    "evaluate --map": (["evaluate", "{seg}", "{seg}", "--map", "{m}", "-o", "{out}"], "{m}"),
    "models install": (["models", "install", "{m}"], "{m}: no such file or folder"),
    "models info": (["models", "info", "{m}"], "{m}: no such model file or folder"),
    "models remove": (["models", "remove", "nowhere"], "unknown model 'nowhere'"),
}


@pytest.mark.parametrize("case", MISSING)
def test_a_missing_path_exits_2_in_every_command(data: Path, tmp_path: Path, home: Path,
                                                 capsys: pytest.CaptureFixture[str], case: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    seg = write_masks(Masks(np.ones((1, 8, 8), bool), ("liver",), Plane((8, 8), (1.0, 1.0))), work / "pred.seg.nrrd")
    names = {"m": work / "nowhere", "out": work / "out", "ct": data / SMALL_CT, "labels": data / SMALL_LABELS,
             "seg": seg}
    argv, message = MISSING[case]
    line = _refused([a.format(**names) for a in argv], capsys, message.format(**names))
    assert line.startswith("ts2d-xray ") and ": error: " in line
    assert _listing(work) == ["pred.seg.nrrd"] and not home.exists()


# --- empty CT ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["project", "segment", "synth drr"])
def test_an_empty_ct_exits_2_and_writes_nothing(data: Path, tmp_path: Path, models: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str], command: str) -> None:
    ct = sitk.ReadImage(str(data / SMALL_CT))
    for name, value in (("air.nii.gz", -1024), ("zeros.nii.gz", 0)):
        empty = sitk.GetImageFromArray(np.full(sitk.GetArrayViewFromImage(ct).shape, value, np.int16))
        empty.CopyInformation(ct)
        sitk.WriteImage(empty, str(tmp_path / name))
    (tmp_path / "zero_bytes.nii.gz").write_bytes(b"")
    out = tmp_path / "out"
    for name, message in (("air.nii.gz", "the CT is empty: every voxel is -1024"),
                          ("zeros.nii.gz", "the CT is empty: every voxel is 0"),
                          ("zero_bytes.nii.gz", "file is empty (0 bytes)")):
        argv = {"project": ["project", str(tmp_path / name), "-o", str(out / "p.nrrd")],
                "segment": ["segment", str(tmp_path / name), "-o", str(out), "--model", str(models["coronal"]),
                            "--device", "cpu"],
                "synth drr": ["synth", "drr", str(tmp_path / name), "--labels", str(data / SMALL_LABELS),
                              "--classmap", "v2", "-o", str(out), "--preset", "chest-pa"]}[command]
        _refused(argv, capsys, f"{tmp_path / name}: {message}")
        assert not out.exists()


# --- colour, palette and 16-bit PNG: documented behaviour (luma; alpha dropped; / 65535) -----
def test_rgb_rgba_palette_and_16_bit_png_read_as_the_grey_original(data: Path, tmp_path: Path,
                                                                    models: dict[str, Path],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    grey = Image.open(data / NIH)
    assert grey.mode == "L"
    pixels = np.asarray(grey)
    grey.convert("RGB").save(tmp_path / "rgb.png")
    rgba = np.dstack([np.repeat(pixels[..., None], 3, axis=2), np.full(pixels.shape, 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")  # nearly transparent: alpha is dropped
    grey.convert("P").save(tmp_path / "palette.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # v/255 == 257v/65535
    original = read_radiograph(data / NIH)
    for name, bits in (("rgb.png", 8), ("rgba.png", 8), ("palette.png", 8), ("grey16.png", 16)):
        image = read_radiograph(tmp_path / name)
        assert image.meta["bit_depth"] == bits, name
        np.testing.assert_allclose(image.array, original.array, atol=1e-6, err_msg=name)
    out = tmp_path / "out"  # same pixels, so the same masks: one file through the command is enough
    assert main(["segment", str(tmp_path / "rgba.png"), "-o", str(out), "--model", str(models["xray"]),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    assert _listing(out) == ["rgba", "rgba/masks.seg.nrrd", "rgba/overlay.png", "rgba/report.json"]


# --- DICOM without pixel data or with truncated pixels, no spacing ------------------------------
def test_dicom_without_pixels_or_with_truncated_pixels_exits_2(data: Path, tmp_path: Path, models: dict[str, Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    dog = data / DOG
    ds = pydicom.dcmread(dog)
    del ds.PixelData
    ds.save_as(tmp_path / "no_pixels.dcm")
    (tmp_path / "short.dcm").write_bytes(dog.read_bytes()[:-2000])  # the end of the pixel data cut off
    out = tmp_path / "out"
    for name, message in (("no_pixels.dcm", "DICOM with no pixel data"), ("short.dcm", "cannot decode DICOM pixels")):
        with pytest.raises(InputError, match=message):
            read_radiograph(tmp_path / name)
        _refused(["segment", str(tmp_path / name), "-o", str(out), "--model", str(models["xray"]), "--device", "cpu"],
                 capsys, f"{tmp_path / name}: {message}")
        assert not out.exists()


def test_dicom_without_any_spacing_assumes_a_field_of_view_and_says_so(data: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(data / DOG)
    del ds.PixelSpacing, ds.ImagerPixelSpacing
    ds.save_as(tmp_path / "no_spacing.dcm")
    with pytest.warns(UserWarning, match=r"no_spacing\.dcm: .*assuming the longest side spans 430 mm"):
        image = read_radiograph(tmp_path / "no_spacing.dcm")
    assert image.meta["spacing_source"] == "fallback: 430 mm field of view"
    assert image.plane.spacing == pytest.approx((430 / 211, 430 / 211))


# --- 2D size bombs -------------------------------------------------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")


def _size_bombs(folder: Path) -> list[Path]:
    """A header-only PNG of 10^10 pixels, and 390 KB that inflate to 20000 x 20000 zeros (a zlib bomb)."""
    (folder / "header_only.png").write_bytes(_png(100_000, 100_000, b""))
    deflate = zlib.compressobj(9)
    row = b"\0" * 20_001  # filter byte + pixels
    stream = b"".join(deflate.compress(row) for _ in range(20_000)) + deflate.flush()
    (folder / "zlib_bomb.png").write_bytes(_png(20_000, 20_000, _chunk(b"IDAT", stream)))
    return [folder / "header_only.png", folder / "zlib_bomb.png"]


def test_2d_size_bombs_are_refused_by_the_readers_segment_evaluate_and_demo(data: Path, tmp_path: Path,
                                                                            models: dict[str, Path],
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bombs = _size_bombs(tmp_path)
    assert max(p.stat().st_size for p in bombs) < 400_000
    pred = tmp_path / "pred.seg.nrrd"
    write_masks(Masks(np.ones((1, 8, 8), bool), ("heart",), Plane((8, 8), (1.0, 1.0))), pred)
    out = tmp_path / "out"
    for bomb in bombs:
        for read in (read_radiograph, read_mask_source):
            with pytest.raises(InputError, match="too large to decode"):
                read(bomb)
        _refused(["segment", str(bomb), "-o", str(out), "--model", str(models["xray"]), "--device", "cpu"],
                 capsys, f"{bomb}: image exceeds the limit of 40,000,000 pixels")
        gt = tmp_path / "gt"
        gt.mkdir(exist_ok=True)
        shutil.copy(bomb, gt / "heart.png")
        _refused(["evaluate", str(pred), str(gt), "-o", str(out)], capsys, f"{gt / 'heart.png'}: image too large")
        _refused(["demo", "-o", str(out), "--radiograph", str(bomb)], capsys, f"{bomb}: image exceeds the limit")
        assert not out.exists()


# --- NaN/Inf: never a bare NaN token in a JSON output ---------------------------------------
def test_json_outputs_are_valid_json_or_not_written(tmp_path: Path) -> None:
    """NaN/Inf inputs are refused (test_bad_inputs); a NaN that still reached a report would be a bug:
    refused loudly (no bare ``NaN`` token, which is not JSON), and no file is left."""
    with pytest.raises(RuntimeError, match=r"report\.json: Out of range float values are not JSON compliant"):
        write_json(tmp_path / "report.json", {"ctr": np.float32("nan")})
    assert _listing(tmp_path) == []


# --- 3D size bombs through every command (the readers: test_bad_inputs) -------------------------
def _nifti_bomb(path: Path, dtype: type) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + bytes(4 + 3744)))
    return path


def test_3d_size_bombs_exit_2_in_segment_synth_and_evaluate(data: Path, tmp_path: Path, models: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    ct_bomb = _nifti_bomb(tmp_path / "ct_bomb.nii.gz", np.int16)
    label_bomb = _nifti_bomb(tmp_path / "label_bomb.nii.gz", np.uint8)
    pred = tmp_path / "pred.seg.nrrd"  # placed in the patient, as --vs-3d needs
    write_masks(Masks(np.ones((1, 8, 8), bool), ("liver",), Plane((8, 8), (1.0, 1.0), origin=(0.0, 0.0, 0.0))), pred)
    ct, labels, out = data / SMALL_CT, data / SMALL_LABELS, tmp_path / "out"
    runs = [
        (["segment", str(ct_bomb), "-o", str(out), "--model", str(models["coronal"]), "--device", "cpu"], ct_bomb),
        (["synth", "drr", str(ct_bomb), "--labels", str(labels), "--classmap", "v2", "-o", str(out),
          "--preset", "chest-pa"], ct_bomb),
        (["synth", "drr", str(ct), "--labels", str(label_bomb), "--classmap", "v2", "-o", str(out),
          "--preset", "chest-pa"], label_bomb),
        (["project", str(ct), "--labels", str(label_bomb), "--classmap", "v2", "-o", str(out / "p.nrrd"),
          "--labels-out", str(out / "m.seg.nrrd")], label_bomb),
        (["evaluate", str(pred), str(label_bomb), "--vs-3d", "--classmap", "v2", "-o", str(out)], label_bomb),
    ]
    for argv, bomb in runs:
        _refused(argv, capsys, f"{bomb}: truncated or corrupt file: the header declares")
        assert not out.exists(), argv


# --- a DICOM folder holding two series: documented behaviour (the largest, with a warning) --------
def test_a_dicom_folder_with_two_series_reads_the_largest_and_warns(data: Path, tmp_path: Path,
                                                                    models: dict[str, Path],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "two_series"
    shutil.copytree(data / "ct" / "ts_example_dicom" / "dicom", folder)  # 20 slices
    for f in sorted((data / "ct" / "dicom_misc" / "ct3slice").glob("*.dcm")):  # 3 slices of another series
        shutil.copy(f, folder / f"other_{f.name}")
    with pytest.warns(UserWarning, match=r"two_series: 2 DICOM series; reading the largest \(20 files\)"):
        both = read_ct(folder)
    alone = read_ct(data / "ct" / "ts_example_dicom" / "dicom")
    assert np.array_equal(both.array, alone.array) and both.grid == alone.grid
    out = tmp_path / "out"
    assert main(["segment", str(folder), "-o", str(out), "--model", str(models["coronal"]), "--device", "cpu"]) == 0
    assert "2 DICOM series; reading the largest (20 files)" in capsys.readouterr().err
    assert _listing(out) == ["two_series", "two_series/masks.seg.nrrd", "two_series/overlay.png",
                             "two_series/report.json"]


# --- evaluate: mismatched grids and empty masks, on real manual masks --------------------------
def _wingspan_masks(data: Path) -> Masks:
    root = data / "xray" / "wingspan"
    name = sorted((root / "png").iterdir())[0].name
    layers = [np.asarray(Image.open(root / "mask" / s / name)) > 0 for s in ("right_lung", "left_lung", "heart")]
    return Masks(np.stack(layers), ("lung_right", "lung_left", "heart"), Plane((512, 512), (0.8, 0.8)))


def test_evaluate_resamples_another_grid_refuses_another_field_and_scores_empty_masks(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fine = _wingspan_masks(data)
    write_masks(fine, tmp_path / "pred.seg.nrrd")
    coarse = fine.array.copy()
    coarse[2] = False  # no heart in the ground truth: an empty mask
    coarse = coarse.reshape(3, 256, 2, 256, 2).any(axis=(2, 4))  # the same field of view at 1.6 mm
    write_masks(Masks(coarse, fine.names, Plane((256, 256), (1.6, 1.6))), tmp_path / "gt.seg.nrrd")
    out = tmp_path / "report"
    assert main(["evaluate", str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "gt.seg.nrrd"), "-o", str(out)]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text(),
                         parse_constant=lambda token: pytest.fail(f"summary.json holds {token}: not valid JSON"))
    lungs = [summary["per_structure"][s]["dice_mean"] for s in ("lung_right", "lung_left")]
    assert min(lungs) > 0.97  # the prediction went onto the ground truth's grid
    heart = summary["per_structure"]["heart"]
    assert heart["gt_present"] == 0 and heart["pred_present"] == 1 and heart["dice_mean"] is None
    assert summary["structures_in_mean"] == 2 and summary["presence_accuracy"] == pytest.approx(2 / 3)

    write_masks(Masks(coarse, fine.names, Plane((256, 256), (1.0, 1.0))), tmp_path / "small.seg.nrrd")
    other = tmp_path / "other_report"
    _refused(["evaluate", str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "small.seg.nrrd"), "-o", str(other)],
             capsys, "physical sizes differ")
    assert not other.exists() and not list(tmp_path.glob(".tmp*"))


# --- a read-only output place ------------------------------------------------------------------
def _run_under_read_only(folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI with ``folder`` read-only: chmod, or (as root, whom chmod does not stop) a read-only
    tmpfs mounted over it in a private user and mount namespace."""
    code = f"import sys; from ts2d_xray.cli import main; sys.exit(main({argv!r}))"
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        finally:
            folder.chmod(0o755)
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without user namespaces: no way to make a folder read-only")
    script = 'mount -t tmpfs -o ro,size=64k none "$1" && exec "$2" -c "$3"'
    return subprocess.run([unshare, "-rm", "sh", "-c", script, "sh", str(folder), sys.executable, code],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["project", "segment"])
def test_a_read_only_output_folder_exits_3_naming_it(data: Path, tmp_path: Path, models: dict[str, Path],
                                                     command: str) -> None:
    place = tmp_path / "read_only"
    place.mkdir()
    argv = {"project": ["project", str(data / SMALL_CT), "-o", str(place / "out" / "p.nrrd")],
            "segment": ["segment", str(data / SMALL_CT), "-o", str(place / "out"), "--model",
                        str(models["coronal"]), "--device", "cpu"]}[command]
    result = _run_under_read_only(place, argv)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("ts2d-xray: warning: ")]
    assert result.returncode == 3, result.stderr
    assert len(errors) == 1 and errors[0].startswith(f"ts2d-xray {command}: error: cannot write {place / 'out'}")
    assert "Read-only file system" in errors[0] or "Permission denied" in errors[0]
    assert _listing(place) == []  # the folder itself, after the run: nothing left in it


# --- 45-degree oblique CT through segment (project and random rotations: test_bad_inputs, test_fuzz) ---
def test_a_ct_rotated_45_degrees_is_segmented(data: Path, tmp_path: Path, models: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    image = sitk.ReadImage(str(data / SMALL_CT))
    c = np.sqrt(0.5)
    image.SetDirection((c, -c, 0.0, c, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / "oblique.nii.gz"))
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "oblique.nii.gz"), "-o", str(out), "--model", str(models["coronal"]),
            "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    masks = read_masks(out / "oblique" / "masks.seg.nrrd")
    assert masks.array.any() and masks.plane.display == "radiograph"
    report = json.loads((out / "oblique" / "report.json").read_text())
    assert report["input_kind"] == "ct" and report["image"]["shape_hw"] == [30, 157]  # 30 slices, 45 degrees wide
