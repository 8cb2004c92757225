"""Seeded fuzzing of every input file type: mutated files end in a valid result or a clean InputError.

Small real files of the shared data folder (or crops of them) are mutated into
``tmp_path``: truncated at random offsets, bits and bytes flipped, header fields edited
(NIfTI dims, datatype, spacing, direction, offsets and scaling; NRRD and MetaImage header
lines; DICOM tags).  Each mutated file goes through its reader; a few go through the
CLI in process.  Every one must end in a result or an :class:`InputError` (exit 2),
never another exception (a traceback), never a hang (:data:`TIME_LIMIT_S` per input),
and never a wrong but confident answer: a damaged *checksummed* pixel stream (gzip,
zlib, PNG) that is accepted must give exactly the original pixels.  Header edits that
declare huge images must be refused within :data:`MAX_REFUSAL_MB` of memory.

The number of mutated inputs tried is printed (``pytest -s``) and at least
:data:`MIN_INPUTS`.
"""

from __future__ import annotations

import gzip
import shutil
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import model_fixtures as mf
from ts2d_xray.cli import main
from ts2d_xray.errors import InputError
from ts2d_xray.image import Masks, Plane
from ts2d_xray.io import read_ct, read_image2d, read_labels, read_radiograph, write_masks
from ts2d_xray.io.mask_sources import read_mask_source

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SEED = 13
#: Mutated inputs per default run (the test fails below it).
MIN_INPUTS = 500
#: Seconds one input may take before it counts as a hang.
TIME_LIMIT_S = 10.0
#: Peak memory growth allowed while refusing an edited header (a size bomb).
MAX_REFUSAL_MB = 200


@dataclass(frozen=True)
class Source:
    """A sound file, its reader, and what its format protects with a checksum."""

    name: str
    path: Path
    read: Callable[[Path], np.ndarray]
    header: int  # bytes before the pixel stream in the file
    checksummed: bool  # a damaged pixel stream can be told from a sound one


def _ct_array(path: Path) -> np.ndarray:
    return read_ct(path).array


def _sources(data: Path, tmp: Path) -> list[Source]:
    """Small files of every type, from the shared data (crops written with SimpleITK, masks with write_masks)."""
    ct = sitk.ReadImage(str(data / "ct" / "ts_example" / "ct_small.nii.gz"))[20:60, 20:60, 5:20]
    tmp.mkdir(parents=True, exist_ok=True)
    crops = {}
    for suffix, compress in ((".nii.gz", True), (".nii", False), (".nrrd", True), (".mha", True)):
        crops[suffix] = tmp / f"crop{suffix}"
        sitk.WriteImage(ct, str(crops[suffix]), compress)
    masks = Masks(np.random.default_rng(SEED).random((3, 40, 30)) > 0.5, ("liver", "spleen", "heart"),
                  Plane((40, 30), (1.5, 1.5), origin=(0.0, 0.0, 0.0)))
    seg, nii = write_masks(masks, tmp / "masks.seg.nrrd"), write_masks(masks, tmp / "masks.nii.gz")
    label = data / "ct" / "crops" / "aorta" / "vertebrae_T12.nii.gz"
    xray, dicom = data / "xray", data / "xray" / "dicom"

    def mask_array(path: Path) -> np.ndarray:
        return read_mask_source(path).masks.array

    def label_array(path: Path) -> np.ndarray:
        return read_labels(path, classmap={1: "vertebrae_T12"}).layers

    def image_array(path: Path) -> np.ndarray:
        return read_image2d(path).array

    def xray_array(path: Path) -> np.ndarray:
        return read_radiograph(path).array

    return [
        Source("nii.gz", crops[".nii.gz"], _ct_array, 0, True),
        Source("nii", crops[".nii"], _ct_array, 352, False),
        Source("nrrd", crops[".nrrd"], _ct_array, _nrrd_header_length(crops[".nrrd"]), True),
        Source("mha", crops[".mha"], _ct_array, crops[".mha"].read_bytes().index(b"LOCAL\n") + 6, True),
        Source("label", label, label_array, 0, True),
        Source("projection", data / "projections" / "ts2d_samples" / "sample_s0332.nrrd", image_array,
               _nrrd_header_length(data / "projections" / "ts2d_samples" / "sample_s0332.nrrd"), True),
        Source("seg.nrrd", seg, mask_array, _nrrd_header_length(seg), True),
        Source("masks.nii.gz", nii, mask_array, 0, True),
        Source("dicom", dicom / "highdicom_dx_dog_chest_monochrome1.dcm", xray_array, 0, False),
        Source("dicom-jpeg", dicom / "siim_nih_cr_chest_monochrome2.dcm", xray_array, 0, False),
        Source("png", xray / "nih_cxr14" / "00000001_000.png", xray_array, 8, True),
    ]


def _nrrd_header_length(path: Path) -> int:
    return path.read_bytes().index(b"\n\n") + 2


# --- mutations ---------------------------------------------------------------------------
def _truncate(rng: np.random.Generator, raw: bytes, source: Source) -> tuple[bytes, bool]:
    cut = int(rng.integers(1, len(raw)))
    return raw[:cut], True


def _flip_bits(rng: np.random.Generator, raw: bytes, source: Source) -> tuple[bytes, bool]:
    out = bytearray(raw)
    start = int(rng.integers(0, len(raw) - 8))
    positions = [start + int(k) for k in rng.integers(0, 8, size=int(rng.integers(1, 9)))]
    for p in positions:
        out[p] ^= 1 << int(rng.integers(0, 8))
    return bytes(out), min(positions) >= source.header


def _flip_bytes(rng: np.random.Generator, raw: bytes, source: Source) -> tuple[bytes, bool]:
    out = bytearray(raw)
    start = int(rng.integers(0, len(raw) - 8))
    for p in range(start, start + 8):
        out[p] ^= 0xFF
    return bytes(out), start >= source.header


#: NIfTI-1 header fields (offset, struct format) and values that break them.
_NIFTI_FIELDS = {
    "dim": (40, "8h", lambda r: [3, *r.choice([0, 1, 7, 1000, 32767, -5], 3), 1, 1, 1, 1]),
    "dim0": (40, "h", lambda r: [int(r.choice([0, 4, 5, 8, -1]))]),
    "datatype": (70, "h", lambda r: [int(r.choice([0, 1, 3, 16, 64, 128, 1536, 2304, 9999]))]),
    "pixdim": (76, "8f", lambda r: [1.0, *r.choice([0.0, -1.0, np.nan, np.inf, 1e30, 1e-30], 3), 0, 0, 0, 0]),
    "vox_offset": (108, "f", lambda r: [float(r.choice([0, 100, 352, 1e9, -1e9, np.nan]))]),
    "scl": (112, "2f", lambda r: [float(r.choice([0, np.nan, np.inf, 1e30])), float(r.choice([0, np.nan, 1e30]))]),
    "qform": (252, "2h", lambda r: [int(r.choice([0, 1, 2, 99])), int(r.choice([0, 1, 2, 99]))]),
    "quatern": (256, "6f", lambda r: list(r.choice([0.0, 1.0, -1.0, np.nan, 1e30, 0.7071], 6))),
    "srow": (280, "12f", lambda r: list(r.choice([0.0, 1.0, -1.0, np.nan, 1e30, 0.7071], 12))),
}


def _edit_nifti(rng: np.random.Generator, raw: bytes, source: Source) -> tuple[bytes, bool]:
    gz = raw.startswith(b"\x1f\x8b")
    data = bytearray(gzip.decompress(raw) if gz else raw)
    offset, fmt, values = _NIFTI_FIELDS[str(rng.choice(list(_NIFTI_FIELDS)))]
    struct.pack_into("<" + fmt, data, offset, *values(rng))
    return (gzip.compress(bytes(data), 1) if gz else bytes(data)), False


_TEXT_EDITS = {
    "sizes": [b"sizes: 0 0 0", b"sizes: 100000 100000 100000", b"sizes: -3 4 5", b"sizes: 40", b"sizes: a b c"],
    "type": [b"type: double", b"type: block", b"type: nonsense", b"type: uchar"],
    "space directions": [b"space directions: (0,0,0) (0,0,0) (0,0,0)", b"space directions: (nan,0,0) (0,1,0) (0,0,1)",
                         b"space directions: (1,0,0) (1,0,0) (0,0,1)"],
    "encoding": [b"encoding: raw", b"encoding: bzip2", b"encoding: ascii", b"encoding: zstd"],
    "endian": [b"endian: big"],
    "DimSize": [b"DimSize = 0 0 0", b"DimSize = 100000 100000 100000", b"DimSize = 40 40"],
    "ElementType": [b"ElementType = MET_DOUBLE", b"ElementType = MET_NONE"],
    "ElementSpacing": [b"ElementSpacing = 0 0 0", b"ElementSpacing = nan 1 1"],
    "TransformMatrix": [b"TransformMatrix = 0 0 0 0 0 0 0 0 0", b"TransformMatrix = 1 0 0 1 0 0 0 0 1"],
    "CompressedData": [b"CompressedData = False"],
    "CompressedDataSize": [b"CompressedDataSize = 10", b"CompressedDataSize = 99999999999"],
}


def _edit_text_header(rng: np.random.Generator, raw: bytes, source: Source) -> tuple[bytes, bool]:
    head, body = raw[:source.header], raw[source.header:]
    lines = head.split(b"\n")
    keys = [k for k in _TEXT_EDITS if any(line.startswith(k.encode()) for line in lines)]
    key = str(rng.choice(keys))
    replacement = _TEXT_EDITS[key][int(rng.integers(len(_TEXT_EDITS[key])))]
    lines = [replacement if line.startswith(key.encode()) else line for line in lines]
    return b"\n".join(lines) + body, False


_DICOM_EDITS: dict[str, list] = {
    "Rows": [0, 1, 65535], "Columns": [0, 3, 65535], "BitsAllocated": [1, 8, 12, 32], "BitsStored": [0, 1, 40],
    "HighBit": [0, 31], "PixelRepresentation": [1, 5], "SamplesPerPixel": [0, 3], "NumberOfFrames": ["0", "5", "-1"],
    "PhotometricInterpretation": ["RGB", "PALETTE COLOR", "", "MONOCHROME1"], "PixelSpacing": [[0, 0], ["nan", 1], [1e30, 1e30]],
    "RescaleSlope": ["0", "nan", "1e308", "-1"], "RescaleIntercept": ["nan", "1e308"], "WindowWidth": ["0", "-5", "nan"],
    "WindowCenter": ["nan", "1e308"], "PatientOrientation": [["X", "Y"], ["L", "L"], "LF"], "ViewPosition": ["", "LL"],
    "PixelData": [b"", b"\x00" * 10],
}


def _edit_dicom(rng: np.random.Generator, raw: bytes, source: Source) -> tuple[bytes, bool]:
    from io import BytesIO

    ds = pydicom.dcmread(BytesIO(raw))
    key = str(rng.choice(list(_DICOM_EDITS)))
    values = _DICOM_EDITS[key]
    value = values[int(rng.integers(len(values)))]
    if key == "PixelData" and rng.random() < 0.3:
        del ds.PixelData
    elif key == "PixelData" and ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.PixelData = pydicom.encaps.encapsulate([value or b"\0\0"])
    else:
        setattr(ds, key, value)
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue(), False


def _mutators(source: Source) -> list[Callable[[np.random.Generator, bytes, Source], tuple[bytes, bool]]]:
    common = [_truncate, _flip_bits, _flip_bytes]
    if source.name in ("nii.gz", "nii", "label", "masks.nii.gz"):
        return [*common, _edit_nifti, _edit_nifti]
    if source.name in ("nrrd", "mha", "projection", "seg.nrrd"):
        return [*common, _edit_text_header, _edit_text_header]
    if source.name.startswith("dicom"):
        return [*common, _edit_dicom, _edit_dicom, _edit_dicom]
    return common


# --- running one input -----------------------------------------------------------------
class Hang(Exception):
    """An input that took longer than TIME_LIMIT_S."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


def _peak_reset() -> int | None:
    """Reset this process' peak resident set (Linux) and return the current one in kB, or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmRSS")
    except OSError:
        return None


def _status(field: str) -> int:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0])


@dataclass
class Outcome:
    name: str
    result: str  # "ok", "same", "refused"; failures: "traceback", "hang", "confident", "memory"
    detail: str = ""


def _run(source: Source, path: Path, expected: np.ndarray, checksummed_stream: bool, header_edit: bool) -> Outcome:
    label = f"{source.name}:{path.name}"
    before = _peak_reset() if header_edit else None
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    started = time.perf_counter()
    try:
        array = source.read(path)
    except InputError as err:
        outcome = Outcome(label, "refused", str(err)[-160:])
    except Hang:
        outcome = Outcome(label, "hang", f"over {TIME_LIMIT_S} s")
    except Exception as err:  # noqa: BLE001 - any other exception is a failure (a traceback for the user)
        outcome = Outcome(label, "traceback", f"{type(err).__name__}: {str(err)[:200]}")
    else:
        same = array.shape == expected.shape and np.array_equal(array, expected)
        wrong = checksummed_stream and source.checksummed and not same
        outcome = Outcome(label, "confident" if wrong else "same" if same else "ok",
                          "accepted a damaged checksummed stream with other pixels" if wrong else "")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if time.perf_counter() - started > TIME_LIMIT_S and outcome.result != "traceback":
        outcome = Outcome(label, "hang", f"{time.perf_counter() - started:.1f} s")
    if before is not None and outcome.result == "refused" and (_status("VmHWM") - before) / 1024 > MAX_REFUSAL_MB:
        outcome = Outcome(label, "memory", f"peak grew by {(_status('VmHWM') - before) / 1024:.0f} MB")
    return outcome


def _mutate_all(sources: list[Source], folder: Path, per_source: int) -> list[Outcome]:
    rng = np.random.default_rng(SEED)
    outcomes = []
    for source in sources:
        raw = source.path.read_bytes()
        expected = source.read(source.path)
        mutators = _mutators(source)
        for n in range(per_source):
            mutate = mutators[n % len(mutators)]
            content, in_stream = mutate(rng, raw, source)
            target = folder / source.name / f"{n:03d}_{mutate.__name__.strip('_')}{_suffix(source.path)}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            if source.name == "masks.nii.gz":
                shutil.copy(source.path.with_name("masks.json"), target.with_name(target.name[:-7] + ".json"))
            header_edit = mutate.__name__.startswith("_edit")
            outcomes.append(_run(source, target, expected, in_stream and mutate is not _truncate or
                                 mutate is _truncate and source.checksummed, header_edit))
    return outcomes


def _suffix(path: Path) -> str:
    name = path.name
    for suffix in (".seg.nrrd", ".nii.gz"):
        if name.endswith(suffix):
            return suffix
    return path.suffix


@pytest.fixture(scope="module")
def fuzzed(data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    folder = tmp_path_factory.mktemp("fuzz")
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        sources = _sources(data, folder / "sources")
        return _mutate_all(sources, folder / "mutated", per_source=-(-MIN_INPUTS // len(sources)))
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_every_mutated_input_gives_a_result_or_a_clean_refusal(fuzzed: list[Outcome]) -> None:
    counts = {r: sum(o.result == r for o in fuzzed) for r in ("same", "ok", "refused")}
    print(f"\nfuzz: {len(fuzzed)} mutated inputs: {counts['same']} read as the original, {counts['ok']} read "
          f"differently (no checksum to tell), {counts['refused']} refused")
    failures = [o for o in fuzzed if o.result not in counts]
    assert len(fuzzed) >= MIN_INPUTS
    assert not failures, "\n".join(f"{o.name}: {o.result}: {o.detail}" for o in failures)


def test_mutated_inputs_through_the_cli_exit_0_or_2(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(SEED)
    ct = data / "ct" / "ts_example" / "ct_small.nii.gz"
    seg = write_masks(Masks(np.ones((1, 20, 10), bool), ("liver",), Plane((20, 10), (1.0, 1.0))),
                      tmp_path / "good.seg.nrrd")
    runs = []
    for n in range(6):
        source = Source("nii.gz", ct, _ct_array, 0, True)
        mutate = (_truncate, _flip_bytes, _edit_nifti)[n % 3]
        bad = tmp_path / f"ct{n}.nii.gz"
        bad.write_bytes(mutate(rng, ct.read_bytes(), source)[0])
        runs.append(["project", str(bad), "-o", str(tmp_path / f"out{n}" / "p.nrrd")])
    for n in range(4):
        source = Source("seg.nrrd", seg, np.asarray, _nrrd_header_length(seg), True)
        bad = tmp_path / f"bad{n}.seg.nrrd"
        bad.write_bytes((_truncate, _flip_bytes)[n % 2](rng, seg.read_bytes(), source)[0])
        runs.append(["evaluate", str(bad), str(seg)])
    model = mf.deterministic_bundle(tmp_path / "xray-test", kind="xray", spacing=2.0)
    dog = data / "xray" / "dicom" / "highdicom_dx_dog_chest_monochrome1.dcm"
    for n in range(3):
        source = Source("dicom", dog, np.asarray, 0, False)
        bad = tmp_path / f"dog{n}.dcm"
        bad.write_bytes((_truncate, _flip_bytes, _edit_dicom)[n](rng, dog.read_bytes(), source)[0])
        runs.append(["segment", str(bad), "-o", str(tmp_path / f"seg{n}"), "--model", str(model), "--device", "cpu"])
    for argv in runs:
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 2), f"{argv}: exit {code}\n{err}"
        assert "Traceback" not in err
        if code == 2 and argv[0] in ("project", "segment"):
            assert not Path(argv[argv.index("-o") + 1]).exists()
