"""Cold start of synth: the user cache of tube spectra and attenuation tables (ts2d_xray.io.cache,
synth.materials), and HU -> densities on one thread.

Each test starts as a new process would: an empty cache home and cleared in-process
caches.  spekpy and xraydb are the real libraries, wrapped to count their calls.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from synth import materials
from ts2d_xray.io.cache import cache_home, cached_arrays, table_path
from ts2d_xray.segment.models import model_home


def _new_process() -> None:
    """Forget everything computed in this process, as a new ``ts2d-xray`` call would."""
    materials.spectrum_table.cache_clear()
    materials._mass_attenuation.cache_clear()
    for known in materials._KNOWN_MU.values():
        known.clear()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("TS2D_XRAY_HOME", str(folder))
    _new_process()
    yield folder
    _new_process()  # later tests must not see entries of a deleted home


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of spekpy.Spek and xraydb.mu_elam calls (the real functions run)."""
    import spekpy
    import xraydb

    counts = {"spekpy": 0, "xraydb": 0}
    spek, mu_elam = spekpy.Spek, xraydb.mu_elam

    def counted_spek(*args, **kwargs):
        counts["spekpy"] += 1
        return spek(*args, **kwargs)

    def counted_mu(*args, **kwargs):
        counts["xraydb"] += 1
        return mu_elam(*args, **kwargs)

    monkeypatch.setattr(spekpy, "Spek", counted_spek)
    monkeypatch.setattr(xraydb, "mu_elam", counted_mu)
    return counts


def _spectra(home: Path) -> list[Path]:
    return sorted((home / "tables" / "spectra").glob("*.npz"))


def test_second_call_reads_the_cache_without_spekpy_or_xraydb(home, calls):
    first = materials.tube_spectrum(117.3, 3.1)
    bone = materials.mass_attenuation("bone", first[0])
    assert calls["spekpy"] == 1 and calls["xraydb"] > 0
    assert len(_spectra(home)) == 1

    _new_process()
    calls.update(spekpy=0, xraydb=0)
    second = materials.tube_spectrum(117.3, 3.1)
    again = materials.mass_attenuation("bone", second[0])
    assert calls == {"spekpy": 0, "xraydb": 0}
    np.testing.assert_array_equal(second[0], first[0])
    np.testing.assert_array_equal(second[1], first[1])
    np.testing.assert_array_equal(again, bone)


def test_keyed_by_the_physics_settings(home, calls):
    materials.tube_spectrum(117.0)
    materials.tube_spectrum(117.4, 1.0)  # the same whole kVp and bins: the same entry
    assert calls["spekpy"] == 1 and len(_spectra(home)) == 1
    materials.tube_spectrum(90.0)
    materials.tube_spectrum(117.0, energy_bin_kev=2.0)
    assert calls["spekpy"] == 3 and len(_spectra(home)) == 3
    (e90, f90), (e117, f117) = materials.tube_spectrum(90.0), materials.tube_spectrum(117.0)
    assert e90.max() < 90 < e117.max() and (e90 * f90).sum() < (e117 * f117).sum()  # each entry its own kVp


def test_cached_values_equal_the_libraries(home):
    import spekpy
    import xraydb

    materials.tube_spectrum(100.0)  # fill the cache, then read it as a new process
    _new_process()
    table = materials.spectrum_table(100, 1.0)
    energies, fluence = (np.asarray(a, dtype=np.float64) for a in spekpy.Spek(kvp=100, th=12.0, dk=1.0).get_spectrum())
    np.testing.assert_array_equal(table["energies_keV"], energies[fluence > 0])
    np.testing.assert_array_equal(table["fluence"], fluence[fluence > 0])
    e_ev = energies[fluence > 0] * 1000.0
    np.testing.assert_array_equal(table["aluminium_mu_per_cm"],
                                  np.asarray(xraydb.mu_elam("Al", e_ev, kind="total")) * 2.699)
    for material, composition in materials.ICRU44_COMPOSITION.items():
        direct = np.zeros(e_ev.size)
        for element, fraction in composition.items():
            direct += fraction * np.asarray(xraydb.mu_elam(element, e_ev, kind="total"))
        np.testing.assert_array_equal(table[f"mu_rho_{material}"], direct)
        # A filtered spectrum's energies (a subset) answered from the table, as xraydb would.
        subset = table["energies_keV"][7:60]
        np.testing.assert_array_equal(materials.mass_attenuation(material, subset), direct[7:60])
    # Energies off every table's grid are computed, not looked up.
    assert materials.mass_attenuation("soft_tissue", 60.25)[0] == pytest.approx(0.2048, abs=2e-3)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty", "other_settings"])
def test_a_damaged_file_is_ignored_and_rewritten(home, calls, damage, caplog):
    good_e, good_f = materials.tube_spectrum(120.0, 2.5)
    (path,) = _spectra(home)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # one bit inside the fluence values: the zip's CRC-32 catches it
        with np.load(path) as npz:
            raw = npz["fluence"].tobytes()
        at = data.index(raw[64:96]) + 3
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a valid table of 80 kVp under 120 kVp's name
        materials.tube_spectrum(80.0)
        other = next(p for p in _spectra(home) if p != path)
        path.write_bytes(other.read_bytes())
    _new_process()
    calls.update(spekpy=0)
    with caplog.at_level(logging.INFO, logger="ts2d_xray.io.cache"):
        e, f = materials.tube_spectrum(120.0, 2.5)
    assert calls["spekpy"] == 1, "a damaged entry must be computed again"
    assert "computing it again" in caplog.text
    np.testing.assert_array_equal(e, good_e)
    np.testing.assert_array_equal(f, good_f)
    _new_process()  # the file was rewritten: read back without spekpy
    calls.update(spekpy=0)
    np.testing.assert_array_equal(materials.tube_spectrum(120.0, 2.5)[1], good_f)
    assert calls["spekpy"] == 0


def test_unwritable_home_computes_and_warns(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TS2D_XRAY_HOME", str(blocker / "home"))
    with caplog.at_level(logging.WARNING, logger="ts2d_xray.io.cache"):
        arrays = cached_arrays("test", {"n": 3}, lambda: {"x": np.arange(3.0)})
    np.testing.assert_array_equal(arrays["x"], [0.0, 1.0, 2.0])
    assert "not written" in caplog.text and not table_path("test", {"n": 3}).exists()


def test_keys_and_names_are_checked(home):
    first = cached_arrays("test", {"a": 1, "b": [1.5, 2]}, lambda: {"x": np.array([1, 2], np.int16)})
    again = cached_arrays("test", {"b": [1.5, 2], "a": 1}, lambda: pytest.fail("computed again"))  # key order
    np.testing.assert_array_equal(again["x"], first["x"])
    assert again["x"].dtype == np.int16
    other = cached_arrays("test", {"a": 2, "b": [1.5, 2]}, lambda: {"x": np.zeros(1)})
    np.testing.assert_array_equal(other["x"], [0.0])
    assert len(list((home / "tables" / "test").glob("*.npz"))) == 2
    assert not list((home / "tables" / "test").glob(".tmp*"))  # atomic writes leave no temporary files


def test_one_home_for_models_and_tables(tmp_path, monkeypatch):
    monkeypatch.delenv("TS2D_XRAY_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == model_home() == tmp_path / "xdg" / "ts2d-xray"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: ignored
    assert cache_home() == Path("~/.cache/ts2d-xray").expanduser()
    monkeypatch.setenv("TS2D_XRAY_HOME", str(tmp_path / "mine"))
    assert cache_home() == model_home() == tmp_path / "mine"


def test_hu_to_densities_runs_on_one_thread_and_restores_the_pool():
    import torch

    hu = torch.linspace(-1100.0, 3100.0, 3_000_000).reshape(3, 1000, 1000)  # several chunks
    threads = torch.get_num_threads()
    seen = []
    fill = materials._fill_densities

    def watched(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return fill(*args, **kwargs)

    materials._fill_densities = watched
    try:
        d = materials.hu_to_densities(hu)
    finally:
        materials._fill_densities = fill
    assert seen == [1] and torch.get_num_threads() == threads
    # the same values as the Schneider curve split by the bone ramp, voxel by voxel
    rho = np.interp(hu.numpy().ravel(), materials.SCHNEIDER_2000_HU, materials.SCHNEIDER_2000_DENSITY_G_CM3)
    rho[hu.numpy().ravel() <= -950.0] = 0.0
    np.testing.assert_allclose(d.numpy().reshape(2, -1).sum(axis=0), rho, rtol=1e-5, atol=1e-5)
