"""Model bundles: install, list, resolve, safe archives, checksums, safe checkpoint loading."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import model_fixtures as mf
from ts2d_xray.cli import main
from ts2d_xray.errors import InputError
from ts2d_xray.segment.models import install_model, list_models, model_home, open_model, remove_model, safe_extract
from ts2d_xray.segment.manifest import MANIFEST, infer_manifest
from ts2d_xray.nnunet.checkpoint import read_checkpoint
from ts2d_xray.nnunet.network import build_network, speed_up_for_cpu
from ts2d_xray.segment.groups import load_group


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A private model cache for every test (never the user's)."""
    folder = tmp_path / "home"
    monkeypatch.setenv("TS2D_XRAY_HOME", str(folder))
    return folder


@pytest.fixture
def bundle(tmp_path) -> Path:
    return mf.deterministic_bundle(tmp_path / "coronal-test")


def _zip(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, prefix + f.relative_to(folder).as_posix())
    return archive


def test_home_follows_environment(home):
    assert model_home() == home
    assert list_models() == []


def test_install_folder_and_zip_then_list_and_open(bundle, tmp_path, home):
    m = install_model(bundle)
    assert m.name == "coronal-test" and (home / "models" / "coronal-test" / MANIFEST).is_file()
    archive = _zip(bundle, tmp_path / "b.zip", prefix="coronal-test/")  # a zipped folder
    install_model(archive, name="from-zip")
    assert [x.name for x in list_models()] == ["coronal-test", "from-zip"]
    with open_model("from-zip") as b:
        assert b.installed and b.manifest.kind == "coronal"
        assert b.manifest.group_names == ("bones", "soft")
        assert b.manifest.structures == ("bone", "dense", "dense_soft")
    with pytest.raises(InputError, match="already installed"):
        install_model(bundle)
    install_model(bundle, force=True)
    remove_model("from-zip")
    assert [x.name for x in list_models()] == ["coronal-test"]
    assert not [p for p in (home / "models").iterdir() if p.name.startswith(".")]  # no staging left


def test_names_resolve_exactly_and_unknown_names_list_installed(bundle):
    install_model(bundle, name="ts2d")
    with pytest.raises(InputError, match=r"unknown model 'ts2d_cardiac'.*installed models: ts2d"):
        open_model("ts2d_cardiac")  # TS2D resolved this key to its v1 models; here: exact names only
    with pytest.raises(InputError, match=r"did you mean ts2d\?"):
        open_model("ts2")


def test_archive_with_parent_entries_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model/plans.json", "{}")
        zf.writestr("../escaped.txt", "gotcha")
    dest = tmp_path / "dest"
    with pytest.raises(InputError, match=r"'\.\./escaped\.txt' would land outside the target folder"):
        safe_extract(archive, dest)
    assert not (tmp_path / "escaped.txt").exists() and not dest.exists()  # refused before writing anything
    with pytest.raises(InputError, match="outside the target folder"):
        install_model(archive)
    with pytest.raises(InputError, match="outside the target folder"):
        open_model(archive)


@pytest.mark.parametrize("entry", ["/abs/file.txt", "C:/win.txt", "a/../../up.txt"])
def test_archive_with_absolute_or_drive_entries_is_refused(tmp_path, entry):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(entry, "x")
    with pytest.raises(InputError, match="outside the target folder"):
        safe_extract(archive, tmp_path / "dest")


def test_archive_with_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("model/link")
    info.external_attr = (0o120777 << 16)  # a symbolic link entry
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="symbolic link"):
        safe_extract(archive, tmp_path / "dest")


def test_sha256_mismatch_is_refused(bundle):
    manifest = json.loads((bundle / MANIFEST).read_text())
    rel = next(iter(manifest["sha256"]))
    with open(bundle / rel, "r+b") as f:  # flip one byte of the checkpoint
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        install_model(bundle)
    from ts2d_xray import Segmenter

    with pytest.raises(InputError, match="SHA-256 mismatch"):
        Segmenter(bundle, device="cpu")


def test_corrupted_checkpoint_is_refused(bundle):
    from ts2d_xray import Segmenter

    rel = json.loads((bundle / MANIFEST).read_text())["groups"][0]["path"] + "/fold_0/checkpoint_final.pth"
    data = (bundle / rel).read_bytes()
    (bundle / rel).write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(InputError, match="corrupted or unreadable checkpoint"):
        Segmenter(bundle, device="cpu", verify=False)
    (bundle / rel).write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InputError, match="corrupted or unreadable checkpoint"):
        read_checkpoint(bundle / rel)


def test_nnunet_checkpoint_loads_weights_only_and_pickled_objects_need_trust(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(mf.checkpoint({"w": torch.zeros(2)}, {}, {}, "x"), good)  # numpy scalars in the log
    assert read_checkpoint(good)["_best_ema"] == np.float64(0.6)
    evil = tmp_path / "evil.pth"
    torch.save({"network_weights": {"w": torch.zeros(2)}, "extra": argparse.Namespace(a=1)}, evil)
    with pytest.raises(InputError, match=r"argparse\.Namespace.*trust_checkpoint"):
        read_checkpoint(evil)
    assert isinstance(read_checkpoint(evil, trust=True)["extra"], argparse.Namespace)


def test_plans_cannot_import_arbitrary_code():
    plans = mf.plans("coronal", ["a"], 3.0, (64, 64), (4, 8))
    plans["configurations"]["2d"]["architecture"]["network_class_name"] = "os.system"
    with pytest.raises(InputError, match=r"'os\.system' is not allowed"):
        build_network(plans, 2, 1)
    plans = mf.plans("coronal", ["a"], 3.0, (64, 64), (4, 8))
    plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["nonlin"] = "subprocess.Popen"
    with pytest.raises(InputError, match="must be a class under torch.nn"):
        build_network(plans, 2, 1)


def test_fork_zip_is_read_as_it_is(tmp_path):
    """TS2D's published layout: K + 1 outputs (background 0), an unknown trainer, no manifest."""
    _, archive = mf.random_pair(tmp_path)
    with open_model(archive) as b:
        m = b.manifest
        assert m.inferred and m.kind == "coronal" and m.display == "ts2d"  # TS2D's convention by default
        assert m.group_names == ("organs",) and m.structures == ("liver", "spleen", "heart")
        assert mf.FORK_TRAINER in m.groups[0].path
        group = load_group(b.root, m.groups[0], device=torch.device("cpu"))
        assert group.networks[0].decoder.seg_layers[-1].out_channels == 4  # background kept: the fork's rule needs it
        assert group.exact is not None and group.channel_names == ("mean", "max")
    tmp_root = b.root
    assert not tmp_root.exists()  # the unpacked archive is removed on close
    installed = install_model(archive, name="ts2d-organs", display="radiograph")
    assert installed.display == "radiograph" and installed.sha256  # hashes recorded at install


def test_output_count_must_match_structures(tmp_path):
    folder = tmp_path / "m"
    p = mf.plans("coronal", ["a", "b"], 3.0, (64, 64), (4, 8))
    weights = mf.build(p, 4).state_dict()  # 4 outputs for 2 structures
    mf.write_nnunet_folder(folder, p, mf.dataset_json("coronal", ["a", "b"]), weights, mf.OUR_TRAINER)
    with open_model(folder) as b:
        with pytest.raises(InputError, match=r"4 outputs but dataset.json lists 2 structures"):
            load_group(b.root, b.manifest.groups[0], device=torch.device("cpu"))


def test_infer_manifest_needs_nnunet_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no nnU-Net model folder"):
        infer_manifest(tmp_path / "empty", name="x")


def test_cli_models_list_install_info_remove(bundle, capsys):
    assert main(["models", "list"]) == 0
    assert "no model is installed" in capsys.readouterr().out
    assert main(["models", "install", str(bundle), "--name", "demo-model"]) == 0
    assert "installed demo-model: coronal, 2 group(s), 3 structures" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.startswith("demo-model: coronal, 2 group(s) (bones, soft)")
    assert main(["models", "info", "demo-model"]) == 0
    out = capsys.readouterr().out
    assert "group bones (2, folds 0): bone, dense" in out and "(installed)" in out
    assert main(["models", "info", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and "installed models: demo-model" in err and err.count("\n") == 1
    assert main(["models", "remove", "demo-model"]) == 0
    assert list_models() == []


def test_cpu_group_norm_swap_keeps_the_outputs():
    torch.manual_seed(1)
    p = mf.plans("coronal", ["a", "b"], 3.0, (64, 64), (4, 8, 16), norm=True)
    net = mf.build(p, 2)
    for param in net.parameters():
        torch.nn.init.normal_(param, std=0.3)
    x = torch.randn(2, 2, 64, 96)
    with torch.inference_mode():
        before = net(x)
        after = speed_up_for_cpu(net)(x)
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
    assert torch.allclose(before, after, atol=1e-4)


def test_export_bundle_keeps_only_half_precision_weights_and_predicts_the_same(tmp_path):
    from ts2d_xray import Segmenter
    from ts2d_xray.segment.manifest import verify_bundle
    from ts2d_xray.train.export import export_bundle

    source = mf.random_pair(tmp_path, structures=("liver", "spleen", "heart"))[0] / "organs"
    (trainer_dir,) = [p for p in source.iterdir() if p.is_dir()]
    out = export_bundle({"organs": trainer_dir}, tmp_path / "slim", name="slim", fold=0,
                        description="exported", training={"cases": 3})
    manifest = open_model(out).manifest
    assert manifest.name == "slim" and manifest.group_names == ("organs",) and not manifest.inferred
    assert manifest.training == {"cases": 3} and manifest.sha256
    verify_bundle(out, manifest)
    state = read_checkpoint(out / manifest.groups[0].checkpoints()[0])
    assert set(state) == {"network_weights", "trainer_name", "current_epoch", "inference_allowed_mirroring_axes"}
    assert all(v.dtype == torch.float16 for v in state["network_weights"].values() if v.is_floating_point())
    image = np.random.default_rng(0).normal(0, 300, (2, 96, 80)).astype(np.float32)
    with Segmenter(source.parent, device="cpu") as a, Segmenter(out, device="cpu") as b:
        full, slim = a(image).masks.array, b(image).masks.array
    assert (full != slim).mean() < 0.002  # float16 weights move only pixels at the threshold
    with pytest.raises(InputError, match="exists"):
        export_bundle({"organs": trainer_dir}, out, name="slim", fold=0)


def test_export_bundle_keeps_chosen_outputs_so_each_structure_has_one_group(tmp_path):
    """A group keeps only some of its network's heads (here reordered); another group gives the rest."""
    from ts2d_xray import Segmenter
    from ts2d_xray.segment.manifest import verify_bundle
    from ts2d_xray.train.export import export_bundle

    organs = mf.random_pair(tmp_path / "a", structures=("liver", "spleen", "heart"))[0] / "organs"
    spleen = mf.random_pair(tmp_path / "b", structures=("spleen",), seed=1)[0] / "organs"
    (organs_dir,), (spleen_dir,) = ([p for p in d.iterdir() if p.is_dir()] for d in (organs, spleen))
    with pytest.raises(InputError, match="more than one group"):
        export_bundle({"organs": organs_dir, "spleen": spleen_dir}, tmp_path / "twice", name="x", fold=0)
    assert not (tmp_path / "twice").exists()  # no half-written bundle
    with pytest.raises(InputError, match="cannot keep outputs"):
        export_bundle({"organs": organs_dir}, tmp_path / "bad", name="x", fold=0, outputs={"organs": ["lung"]})
    out = export_bundle({"organs": organs_dir, "spleen": spleen_dir}, tmp_path / "mixed", name="mixed", fold=0,
                        outputs={"organs": ["heart", "liver"]})
    manifest = open_model(out).manifest
    assert [g.structures for g in manifest.groups] == [("heart", "liver"), ("spleen",)]
    verify_bundle(out, manifest)
    image = np.random.default_rng(0).normal(0, 300, (2, 96, 80)).astype(np.float32)
    with Segmenter(organs.parent, device="cpu") as a, Segmenter(spleen.parent, device="cpu") as b, \
            Segmenter(out, device="cpu") as mixed:
        full, alone, both = a(image).masks, b(image).masks, mixed(image).masks
    for name, source in (("heart", full), ("liver", full), ("spleen", alone)):
        assert (both.mask(name) != source.mask(name)).mean() < 0.002, name  # float16 weights: threshold pixels only
    assert (full.mask("spleen") != alone.mask("spleen")).mean() > 0.05  # the two networks do differ


def test_export_bundle_joins_networks_of_one_plan_into_an_ensemble(tmp_path):
    """Several trained folders of one group become its folds 0, 1; their logits are averaged."""
    from ts2d_xray import Segmenter
    from ts2d_xray.segment.groups import predict_group
    from ts2d_xray.segment.manifest import verify_bundle
    from ts2d_xray.train.export import export_bundle

    def trained(seed: int, structures=("liver", "spleen")) -> Path:
        source = mf.random_pair(tmp_path / f"s{seed}", structures=structures, seed=seed)[0] / "organs"
        return next(p for p in source.iterdir() if p.is_dir())

    a, b = trained(0), trained(1)
    with pytest.raises(InputError, match="cannot join"):
        export_bundle({"organs": [a, trained(2, ("liver",))]}, tmp_path / "bad", name="x", fold=0)
    assert not (tmp_path / "bad").exists()  # no half-written bundle
    out = export_bundle({"organs": [a, b]}, tmp_path / "ens", name="ens", fold=0, half=False)
    manifest = open_model(out).manifest
    assert manifest.groups[0].folds == ("0", "1")
    verify_bundle(out, manifest)
    for rel, member in zip(manifest.groups[0].checkpoints(), (a, b)):
        exported = read_checkpoint(out / rel)["network_weights"]
        original = read_checkpoint(member / "fold_0" / "checkpoint_final.pth")["network_weights"]
        assert all(torch.equal(exported[k], original[k]) for k in original)
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (2, 96, 80)).astype(np.float32))
    with Segmenter(a.parent.parent, device="cpu") as one, Segmenter(b.parent.parent, device="cpu") as two, \
            Segmenter(out, device="cpu") as both:
        la, lb, le = (predict_group(s.groups[0], x) for s in (one, two, both))
    assert (la - lb).abs().mean() > 0.1  # the members differ
    assert torch.allclose(le, (la + lb) / 2, atol=1e-5)


def test_bundled_models_resolve_by_name_and_installed_ones_win(tmp_path, monkeypatch):
    from ts2d_xray.segment.models import bundled_models
    from ts2d_xray.segment import default_model

    bundled = tmp_path / "bundled"
    mf.deterministic_bundle(bundled / "shipped-coronal", name="shipped-coronal")
    monkeypatch.setattr("ts2d_xray.segment.models.BUNDLED_DIR", bundled)
    assert [m.name for m in bundled_models()] == ["shipped-coronal"] and list_models() == []
    assert default_model("coronal") == "shipped-coronal"
    with open_model("shipped-coronal") as b:
        assert b.root == bundled / "shipped-coronal" and not b.installed
    install_model(mf.deterministic_bundle(tmp_path / "mine"), name="mine")
    assert default_model("coronal") == "mine"  # an installed model of the kind comes first
    with pytest.raises(InputError, match="no xray model to use"):
        default_model("xray")
