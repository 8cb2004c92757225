"""synth.materials: HU -> densities, tube spectra, mass attenuation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.materials import MaterialThresholds, hu_to_densities, mass_attenuation, tube_spectrum


# --- HU -> densities -------------------------------------------------------------------


def test_hu_to_densities_values():
    hu = torch.tensor([-1000.0, -960.0, -500.0, 0.0, 40.0, 1000.0, 3000.0, 5000.0, -850.0])
    d = hu_to_densities(hu)
    assert d.shape == (2, 9) and d.dtype == torch.float32
    soft, bone = d.numpy()
    # Air (at or below -950 HU) is empty in both channels.
    assert soft[0] == bone[0] == 0 and soft[1] == bone[1] == 0
    # Inflated lung parenchyma (-850 HU) is kept: about 0.15 g/cm³ of soft tissue.
    assert 0.1 < soft[8] < 0.2 and bone[8] == 0
    # Water and muscle: ~1 g/cm³, all soft tissue.
    assert soft[3] == pytest.approx(1.0, abs=0.03) and bone[3] == 0
    assert soft[4] == pytest.approx(1.06, abs=0.03) and bone[4] == 0
    # Lung-like tissue above the air threshold: low but nonzero soft-tissue density.
    assert 0.3 < soft[2] < 0.6 and bone[2] == 0
    # Cortical-like bone: > 1.5 g/cm³, all in the bone channel; clamped at the table's end.
    assert bone[5] > 1.5 and soft[5] == 0
    assert bone[6] == pytest.approx(2.8) and bone[7] == pytest.approx(2.8)


def test_hu_to_densities_transition_and_dtypes():
    th = MaterialThresholds(air_max_hu=-950.0, bone_min_hu=300.0, bone_transition_hu=200.0)
    hu = np.array([[-900, 250], [400, 600]], dtype=np.int16)
    d = hu_to_densities(torch.from_numpy(hu), th)
    assert d.shape == (2, 2, 2)
    total = d.sum(0)
    # Lung at -900 HU is kept with the lower air threshold.
    assert d[0, 0, 0] > 0.05
    # Halfway up the ramp, half bone; the split preserves the total density.
    assert float(d[1, 1, 0] / total[1, 0]) == pytest.approx(0.5, abs=1e-5)
    assert d[1, 0, 1] == 0 and d[0, 1, 1] == 0
    # The same result from float32 input, and chunking does not matter.
    assert torch.allclose(hu_to_densities(torch.from_numpy(hu).float(), th), d)


def test_hu_to_densities_chunks_match_interp(monkeypatch):
    from synth import materials

    rng = np.random.default_rng(0)
    hu = torch.from_numpy(rng.uniform(-1100, 3200, size=(3, 50, 70)).astype(np.float32))
    ref = np.interp(hu.numpy(), materials.SCHNEIDER_2000_HU, materials.SCHNEIDER_2000_DENSITY_G_CM3)
    ref[hu.numpy() <= materials.MaterialThresholds().air_max_hu] = 0
    monkeypatch.setattr(materials, "_HU_CHUNK", 1000)  # many chunks, a ragged last one
    d = hu_to_densities(hu)
    np.testing.assert_allclose(d.sum(0).numpy(), ref, atol=1e-5)


def test_material_thresholds_validated():
    with pytest.raises(ValueError, match="air_max_hu must be below bone_min_hu"):
        MaterialThresholds(air_max_hu=500.0, bone_min_hu=300.0)
    with pytest.raises(ValueError, match="bone_transition_hu"):
        MaterialThresholds(bone_transition_hu=-1.0)


# --- attenuation and spectra --------------------------------------------------------------


def test_mass_attenuation():
    e = np.arange(30.0, 151.0, 5.0)
    soft = mass_attenuation("soft_tissue", e)
    bone = mass_attenuation("bone", e)
    # NIST: water 0.2059, ICRU-44 soft tissue 0.2048 cm²/g at 60 keV.
    assert mass_attenuation("soft_tissue", 60.0)[0] == pytest.approx(0.205, rel=0.15)
    # Per gram, bone attenuates more only where the photoelectric effect matters: above
    # ~110 keV Compton scattering dominates and bone, with less hydrogen, has fewer
    # electrons per gram (NIST at 150 keV: bone 0.1480, soft tissue 0.1492 cm²/g).
    assert np.all((bone > soft)[e <= 100]) and bone[-1] < soft[-1]
    # Per cm (ICRU-44 densities 1.92 and 1.06 g/cm³) bone attenuates more at every energy.
    assert np.all(1.92 * bone > 1.06 * soft)
    assert np.all(np.diff(soft) < 0) and np.all(np.diff(bone) < 0)
    # Cortical bone at 30 keV, NIST: 1.331 cm²/g (photoelectric effect of Ca dominates).
    assert bone[0] == pytest.approx(1.33, rel=0.05)
    with pytest.raises(ValueError, match="material must be one of"):
        mass_attenuation("air", 60.0)
    with pytest.raises(ValueError, match="energies_keV must be within"):
        mass_attenuation("bone", [0.5, 60.0])


def test_tube_spectrum():
    means = []
    for kvp in (60, 90, 120):
        e, f = tube_spectrum(kvp)
        assert e.shape == f.shape and np.all(f > 0) and np.all(np.diff(e) > 0)
        assert f.sum() == pytest.approx(1.0)
        assert e.max() < kvp
        means.append(float((e * f).sum()))
    assert means[0] < means[1] < means[2]
    # More filtration hardens the beam.
    e, f = tube_spectrum(90, filtration_mm_al=6.0)
    assert (e * f).sum() > means[1]
    # Rounded to 1 kVp: the cache serves 90.3 with the 90 kVp spectrum.
    np.testing.assert_array_equal(tube_spectrum(90.3)[1], tube_spectrum(90)[1])


@pytest.mark.parametrize("kvp", [39.9, 150.5, -10])
def test_tube_spectrum_rejects_kvp(kvp):
    with pytest.raises(ValueError, match="kvp must be within"):
        tube_spectrum(kvp)
