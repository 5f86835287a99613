"""Shared fixtures: tiny data bundles and the real Fashion-MNIST location."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
STAND_INS = Path(__file__).resolve().parent / "_stand_ins"


def _torchvision_or_stand_in() -> None:
    """timm imports torchvision; where no working torchvision can be imported, put the tests' stand-in on the path.

    The registry's torchvision wheels link the CUDA build of torch and fail to load against the CPU
    torch of these machines. The stand-in (tests/_stand_ins/torchvision, tests and benchmarks only,
    never prunus itself) holds the few names timm imports; a real torchvision always wins.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or OSError from a wheel linked against another torch build
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.path.insert(0, str(STAND_INS))


_torchvision_or_stand_in()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Two cores shared by the whole suite: one intra-op thread keeps tests predictable.
    torch.set_num_threads(1)
    return


@pytest.fixture
def fashion_dir() -> Path:
    """The real Fashion-MNIST files; CI installs the Debian package, elsewhere the test skips."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


@pytest.fixture
def no_download(monkeypatch):
    """Make sure nothing reaches for the network during a test."""
    monkeypatch.setenv("PRUNUS_NO_DOWNLOAD", "1")
    return


def pytest_configure(config):
    os.environ.setdefault("PRUNUS_NO_DOWNLOAD", "1")


def _torchrun(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node=2 ARGS`; on timeout kill every worker, not just torchrun."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PRUNUS_NO_DOWNLOAD="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the workers share torchrun's session: no orphans left behind
        out, err = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout}s: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture
def torchrun():
    """Call as torchrun(args, cwd) to run a real 2-process gloo job (see _torchrun)."""
    return _torchrun


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how many docstring examples ran, so a run that silently dropped them is visible."""
    counts = {}
    for outcome in ("passed", "failed", "skipped"):
        reports = terminalreporter.stats.get(outcome, [])
        counts[outcome] = sum(1 for r in reports if getattr(r, "when", "call") in ("call", "setup") and _is_doctest(r))
    if any(counts.values()):
        terminalreporter.write_line(
            f"doctests (prunus/ docstring examples): {counts['passed']} passed, "
            f"{counts['failed']} failed, {counts['skipped']} skipped (docstrings whose examples are all +SKIP)"
        )


def _is_doctest(report) -> bool:
    path = report.nodeid.split("::", 1)[0]
    return path.startswith("prunus/") and path.endswith(".py")
