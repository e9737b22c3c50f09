"""The package as a user installs it: a wheel built from this tree, installed into a fresh virtual environment
(not the editable checkout), runs `zerosearch demo --quick` from a folder outside the repository, so
everything the demo needs (its presets included) ships inside the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, cwd=None, timeout=600, env=None):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_wheel_installed_in_a_fresh_venv_runs_the_quick_demo_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, REPO])
    wheel, = dist.glob("zerosearch-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    _run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    # The dependencies (torch, transformers, TRL, …) come from this environment's site-packages, added by path:
    # its .pth files are not read, so the editable checkout of zerosearch stays out of sight.
    site = Path(_run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    where = _run([bin_dir / "python", "-c", "import zerosearch; print(zerosearch.__file__)"], cwd=outside, env=env)
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel, not the checkout
    out = _run([bin_dir / "zerosearch", "demo", "--quick", "--out", "run"], cwd=outside, env=env)
    assert "RL, real engine (BM25)" in out and (outside / "run" / "results.md").exists()
