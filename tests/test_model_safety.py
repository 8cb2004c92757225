"""Hostile and damaged models: refused at install and at load, with the file named and nothing left behind."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import model_fixtures as mf
from ts2d_xray import Segmenter
from ts2d_xray.cli import main
from ts2d_xray.errors import InputError
from ts2d_xray.nnunet.checkpoint import read_checkpoint
from ts2d_xray.segment import manifest as manifest_module
from ts2d_xray.segment.integrity import VERIFIED_FILE
from ts2d_xray.segment.manifest import MANIFEST, hash_weights, read_manifest, write_manifest
from ts2d_xray.segment.models import install_model, list_models


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private model cache for every test (never the user's)."""
    folder = tmp_path / "home"
    monkeypatch.setenv("TS2D_XRAY_HOME", str(folder))
    return folder


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return mf.deterministic_bundle(tmp_path / "coronal-test")


def _checkpoint(bundle: Path) -> Path:
    m = read_manifest(bundle / MANIFEST)
    return bundle / m.groups[0].checkpoints()[0]


def _rehash(bundle: Path) -> None:
    """Make the manifest list the files' current SHA-256 (as whoever made the bundle would)."""
    m = read_manifest(bundle / MANIFEST)
    write_manifest(bundle, replace(m, sha256=hash_weights(bundle, m)))


def _cache_listing(home: Path) -> list[str]:
    """Everything in the model cache, hidden staging folders included."""
    models = home / "models"
    return sorted(str(p.relative_to(models)) for p in models.rglob("*")) if models.exists() else []


class _RunsCode:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor of a zip checkpoint: torch still loads it."""
    with zipfile.ZipFile(path) as zf:
        member = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[member.header_offset + 26: member.header_offset + 30])
    at = member.header_offset + 30 + name_len + extra_len + member.file_size // 2
    raw[at] ^= 0x10
    path.write_bytes(bytes(raw))


def test_a_pickle_that_runs_code_is_refused_at_install(bundle: Path, home: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    torch.save({"network_weights": {"w": torch.zeros(2)}, "payload": _RunsCode(marker)}, _checkpoint(bundle))
    _rehash(bundle)  # the attacker ships a matching manifest
    assert main(["models", "install", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint_final.pth" in err and "posix.system" in err and "trust" in err
    assert str(bundle) in err  # the file is named where it came from, not in the hidden staging folder
    assert err.count("\n") == 1
    assert not marker.exists() and list_models() == [] and _cache_listing(home) == []


def test_trusted_install_accepts_a_pickle_without_loading_it(bundle: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"network_weights": {"w": torch.zeros(2)}, "payload": _RunsCode(marker)}, _checkpoint(bundle))
    _rehash(bundle)
    assert install_model(bundle, trust=True).name == "coronal-test"
    assert not marker.exists()


@pytest.mark.parametrize("target", ["outside", "inside"])
def test_a_symbolic_link_in_a_model_folder_is_refused(bundle: Path, home: Path, tmp_path: Path, target: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the model cache")
    link = bundle / "notes.txt"
    link.symlink_to(secret if target == "outside" else bundle / MANIFEST)
    with pytest.raises(InputError, match="symbolic link") as err:
        install_model(bundle)
    assert err.value.path == str(link)
    assert _cache_listing(home) == []


def test_corrupted_weights_without_a_checksum_are_refused_at_load(bundle: Path) -> None:
    path = _checkpoint(bundle)
    _flip_tensor_byte(path)
    read_checkpoint(path)  # torch itself takes the damaged tensor as it is
    data = json.loads((bundle / MANIFEST).read_text())
    del data["sha256"]
    (bundle / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(InputError, match="CRC-32") as err:
        Segmenter(bundle, device="cpu")
    assert err.value.path == str(path)
    with pytest.raises(InputError, match="CRC-32"):
        install_model(bundle)  # never hashed into a manifest as if it were good


def test_a_model_corrupted_after_install_is_refused(bundle: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = install_model(bundle)
    hashed: list[str] = []
    sha256_file = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: hashed.append(Path(p).name) or sha256_file(p))
    Segmenter(m.name, device="cpu").close()
    assert len(hashed) == len(m.sha256) and (home / "models" / m.name / VERIFIED_FILE).is_file()
    Segmenter(m.name, device="cpu").close()
    assert len(hashed) == len(m.sha256)  # unchanged files are not hashed again
    installed = _checkpoint(home / "models" / m.name)
    _flip_tensor_byte(installed)
    with pytest.raises(InputError, match="SHA-256 mismatch") as err:
        Segmenter(m.name, device="cpu")
    assert err.value.path == str(installed)


def test_bundled_models_are_checked_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    sha256_file = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: hashed.append(str(p)) or sha256_file(p))
    Segmenter("ts2d-xray-coronal", device="cpu").close()
    assert hashed and all("weights" in p for p in hashed)
