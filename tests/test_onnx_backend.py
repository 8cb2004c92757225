"""The ONNX Runtime backend (``--backend onnx``): the same masks and logits as torch, one cached export per checksum.

Real inputs: the TotalSegmentator example CT, TS2D's sample projection s0332 and a real
chest CR.  Models: our bundled defaults (our own path: stride padding, whole image),
and stand-ins in TS2D's published layout (``model_fixtures``: random weights, and
groups cut from the bundled model) run the exact TS2D way (full-patch padding,
Gaussian-weighted windows).  Acceptance (issue 15): masks agree on >= 99.99 % of the
pixel-labels; logits within about 1e-4.

The tests that run ONNX Runtime skip when it is not installed; the one about the
missing dependency runs everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import model_fixtures as mf
from ts2d_xray import Segmenter, read_projection
from ts2d_xray.cli import main
from ts2d_xray.examples import shared_data_dir
from ts2d_xray.nnunet import backend
from ts2d_xray.nnunet.normalize import normalize
from ts2d_xray.projection import resample
from ts2d_xray.segment.groups import load_group, predict_exact, predict_group
from ts2d_xray.segment.manifest import sha256_file

pytestmark = pytest.mark.filterwarnings("ignore:.*(assum|fallback|spans).*:UserWarning")
needs_onnx = pytest.mark.skipif(not backend.onnx_available(), reason="onnxruntime is not installed "
                                                                     "(pip install 'ts2d-xray[onnx]')")

DATA = shared_data_dir()
CT = DATA / "ct" / "ts_example" / "ct.nii.gz"
PROJECTION = DATA / "projections" / "ts2d_samples" / "sample_s0332.nrrd"
CHEST = DATA / "xray" / "dicom" / "pydicomdata_RG1_UNCR_cr_chest_monochrome1.dcm"
#: Acceptance: share of pixel-labels (structures x pixels) on which the two backends agree.
MIN_AGREEMENT = 0.9999
#: Logits: the two backends differ by float32 rounding only (measured: about 3e-5 on TS2D-size networks).
LOGIT_TOLERANCE = 2e-4


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TS2D_XRAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _masks(model: str | Path, path: Path, backend_name: str, **options) -> np.ndarray:
    with Segmenter(model, device="cpu", backend=backend_name, **options) as seg:
        assert seg.backend == backend_name
        return seg(path).masks.array


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == bool
    return float((a == b).mean())


@needs_onnx
@pytest.mark.parametrize("model, path", [("ts2d-xray-coronal", CT), ("ts2d-xray-xray", CHEST)],
                         ids=["coronal-ct", "xray-cr"])
def test_bundled_models_give_torch_masks(model, path):
    if not path.exists():
        pytest.skip(f"shared data missing: {path}")
    torch_masks, onnx_masks = _masks(model, path, "torch"), _masks(model, path, "onnx")
    assert torch_masks.sum() > 1000  # anatomy found, not two empty stacks
    assert _agreement(torch_masks, onnx_masks) >= MIN_AGREEMENT


@needs_onnx
def test_bundled_coronal_model_gives_torch_logits():
    """Our own path (stride padding) on a real TS2D projection: logits within float32 rounding."""
    from ts2d_xray.segment.models import open_model

    if not PROJECTION.exists():
        pytest.skip(f"shared data missing: {PROJECTION}")
    with open_model("ts2d-xray-coronal") as bundle:
        spec = bundle.manifest.groups[0]
        groups = {b: load_group(bundle.root, spec, device=torch.device("cpu"), backend=b) for b in ("torch", "onnx")}
    assert isinstance(groups["onnx"].networks[0], backend.OnnxNetwork)
    group = groups["torch"]
    image = resample(read_projection(PROJECTION), group.spacing)
    x = torch.from_numpy(np.ascontiguousarray(normalize(image.array, group.normalization)[list(group.channel_source)]))
    logits = {b: predict_group(g, x).numpy() for b, g in groups.items()}
    assert np.abs(logits["torch"]).max() > 1.0
    assert np.abs(logits["onnx"] - logits["torch"]).max() <= LOGIT_TOLERANCE * max(1.0, np.abs(logits["torch"]).max())


def _exact_logits(root: Path, image: np.ndarray, spacing: tuple[float, float]) -> dict[str, list[np.ndarray]]:
    """Per backend, per group: nnU-Net's native-grid logits (blended in float32) of a published stand-in."""
    from ts2d_xray.segment.models import open_model

    out: dict[str, list[np.ndarray]] = {}
    with open_model(root) as bundle:
        for b in ("torch", "onnx"):
            out[b] = []
            for spec in bundle.manifest.groups:
                group = load_group(bundle.root, spec, device=torch.device("cpu"), backend=b)
                *_, native = predict_exact(group, image, spacing, accumulate=torch.float32)
                out[b].append(native.astype(np.float32))
    return out


@needs_onnx
@pytest.mark.parametrize("kind", ["random", "bundled"])
def test_published_layout_standins_give_torch_masks_and_logits(kind, tmp_path):
    """TS2D's exact path (full-patch padding, Gaussian windows) through ONNX Runtime, on the real CT."""
    if not CT.exists():
        pytest.skip(f"shared data missing: {CT}")
    root = tmp_path / "published"
    if kind == "random":  # a patch smaller than the projection: several Gaussian-weighted windows
        mf.random_published(root)
    else:  # TS2D's five groups, anatomy-like outputs
        mf.bundled_published(root, groups=["organs", "cardiac"])
    torch_masks, onnx_masks = _masks(root, CT, "torch"), _masks(root, CT, "onnx")
    assert torch_masks.any()
    assert _agreement(torch_masks, onnx_masks) >= MIN_AGREEMENT
    image = read_projection(PROJECTION, display="ts2d")
    logits = _exact_logits(root, image.array, image.plane.spacing)
    for t, o in zip(logits["torch"], logits["onnx"]):
        assert t.shape == o.shape
        assert np.abs(o - t).max() <= LOGIT_TOLERANCE * max(1.0, np.abs(t).max())


def _export_calls(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = backend.export_onnx

    def counting(network, in_channels, example_size, path):
        calls.append(Path(path))
        return real(network, in_channels, example_size, path)

    monkeypatch.setattr(backend, "export_onnx", counting)
    return calls


@needs_onnx
def test_exports_are_cached_and_keyed_by_the_weights_checksum(tmp_path, home, monkeypatch, caplog):
    root = mf.random_published(tmp_path / "published", groups={"organs": ("liver", "spleen")})
    calls = _export_calls(monkeypatch)
    first = _masks(root, CT, "onnx")
    cached = backend.cached_exports(home / "onnx")
    assert len(calls) == 1 and cached == calls
    stamp = cached[0].stat().st_mtime_ns
    assert np.array_equal(_masks(root, CT, "onnx"), first)  # a new Segmenter: the export is reused
    assert len(calls) == 1 and cached[0].stat().st_mtime_ns == stamp
    # New weights (same architecture, same file name): a new checksum, a new export.
    (checkpoint,) = root.rglob("checkpoint_final.pth")
    old_sha = sha256_file(checkpoint)
    state = torch.load(checkpoint, weights_only=False)
    state["network_weights"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in state["network_weights"].items()}
    torch.save(state, checkpoint)
    assert sha256_file(checkpoint) != old_sha
    _masks(root, CT, "onnx")
    assert len(calls) == 2 and calls[1] != calls[0]
    assert len(backend.cached_exports(home / "onnx")) == 2
    # A damaged cached file is exported again, with a warning.
    calls[1].write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger=backend.__name__):
        _masks(root, CT, "onnx")
    assert len(calls) == 3 and calls[2] == calls[1]
    assert "unusable cached ONNX export" in caplog.text


@needs_onnx
def test_the_cache_key_covers_checksum_architecture_and_channels():
    arch = {"network_class_name": "PlainConvUNet", "arch_kwargs": {"n_stages": 2}}
    key = backend.export_key("ab" * 32, arch, 2, 4)
    assert key == backend.export_key("ab" * 32, json.loads(json.dumps(arch)), 2, 4)
    assert len({key, backend.export_key("cd" * 32, arch, 2, 4), backend.export_key("ab" * 32, arch, 1, 4),
                backend.export_key("ab" * 32, arch, 2, 5),
                backend.export_key("ab" * 32, {**arch, "arch_kwargs": {"n_stages": 3}}, 2, 4)}) == 5


def test_missing_onnxruntime_is_a_clear_error(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    cpu = torch.device("cpu")
    assert backend.resolve_backend("auto", cpu) == "torch"  # auto: the installed one
    with pytest.raises(ValueError, match=r"needs onnxruntime.*pip install 'ts2d-xray\[onnx\]'"):
        Segmenter("ts2d-xray-xray", device="cpu", backend="onnx")
    code = main(["segment", str(CHEST), "-o", str(tmp_path / "out"), "--backend", "onnx", "--device", "cpu"])
    assert code == 2
    assert "pip install 'ts2d-xray[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_backend_names_and_devices_are_checked():
    from ts2d_xray import SegmentOptions

    with pytest.raises(ValueError, match="backend must be one of auto, torch, onnx, got 'tensorrt'"):
        SegmentOptions(backend="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        backend.resolve_backend("onnx", torch.device("cuda"))
    assert backend.resolve_backend("auto", torch.device("cuda")) == "torch"
    assert backend.resolve_backend("torch", torch.device("cpu")) == "torch"


@needs_onnx
def test_a_read_only_cache_exports_in_memory(tmp_path, home, monkeypatch, caplog):
    root = mf.random_published(tmp_path / "published", groups={"organs": ("liver", "spleen")})
    home.mkdir(parents=True)
    (home / "onnx").write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger=backend.__name__):
        masks = _masks(root, CT, "onnx")
    assert "kept in memory only" in caplog.text
    assert _agreement(masks, _masks(root, CT, "torch")) >= MIN_AGREEMENT
    assert not backend.cached_exports(home)


@needs_onnx
def test_sessions_run_on_the_threads_torch_uses_and_let_them_sleep_between_runs():
    options = backend.session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()
    # spinning threads would hold the cores that the work around each run needs
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
