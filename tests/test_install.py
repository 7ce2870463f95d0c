"""The install is the tested one: every package `launch/setup.sh` installed is at the version `launch/constraints.txt`
pins (a user's clean install today gets the same versions as CI; `bash launch/lock.sh` refreshes them on purpose)."""

from __future__ import annotations

import re
import sysconfig
from importlib import metadata

from builders import ROOT


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "launch" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"launch/constraints.txt: {line!r} is not name==version"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_installed_versions_are_the_pinned_ones():
    pins = _pins()
    assert {"transformers", "ray", "deepspeed", "tokenizers", "wandb", "math-verify"} <= set(pins)
    # the environment's own packages (not copies that others vendor and put on sys.path, e.g. setuptools/_vendor)
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in metadata.distributions(path=site)}
    wrong = {name: (installed[name], want) for name, want in pins.items() if name in installed and installed[name] != want}
    assert wrong == {}, "installed != pinned (run `bash launch/setup.sh`): " + repr(wrong)
    assert "torch" not in pins  # setup.sh picks the CPU or CUDA build of TORCH_VERSION per machine


def test_the_package_builds_without_deprecation_notices(tmp_path):
    """Installing longshort prints no build-backend deprecation (the licence table did, until 2027-Feb-18)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "deprecat" not in text.lower(), text[-3000:]
    assert list(tmp_path.glob("longshort-*.whl"))
