"""scripts/setup.sh: where pip looks for packages."""
from pathlib import Path


def test_setup_script_leaves_the_package_index_to_pip():
    text = (Path(__file__).resolve().parents[1] / "scripts" / "setup.sh").read_text()
    assert "pypi.org" not in text and "--index-url" not in text.replace("--extra-index-url", "")
    assert "TORCH_CPU_INDEX" in text
