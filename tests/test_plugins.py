"""Plugins (structvae.plugins, the CLI's --import): module name, file path, environment variable,
entry point, and a user's solver and dataset trained with from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import structvae.plugins as plugins
from structvae.data import DATASETS, unregister_dataset
from structvae.plugins import PluginError, load_plugins
from structvae.solvers import available_solvers, get_solver
from structvae.solvers import base as solver_base

ROOT = Path(__file__).resolve().parents[1]

SOLVER_PLUGIN = '''
"""A user's solvers file: one exact solver, by brute force."""
import itertools
import os

import numpy as np

from structvae.solvers import register

LOADS = globals().get("LOADS", 0) + 1  # how many times this file was executed


@register("{name}")
def brute_force(unary, edges, pairwise):
    """Exact arg max by enumerating every assignment (small n only)."""
    log = os.environ.get("MY_SOLVER_LOG")
    if log:
        with open(log, "a") as f:
            f.write("call\\n")
    n, K = unary.shape
    best, best_z = -np.inf, None
    for z in itertools.product(range(K), repeat=n):
        z = np.array(z)
        s = unary[np.arange(n), z].sum()
        s += sum(pairwise[e, z[a], z[b]] for e, (a, b) in enumerate(edges))
        if s > best:
            best, best_z = s, z
    return best_z
'''

DATASET_PLUGIN = '''
"""A user's dataset: the first 300 images of the bundled MNIST sample."""
from structvae.data import load_dataset, register_dataset


@register_dataset("{name}", num_classes=10)
def tiny_digits(request):
    """300 digits of the MNIST sample (200 / 50 / 50)."""
    s = load_dataset("mnist-sample", binarize="none")
    x, y = s.train.x[:300], s.train.y[:300]
    return {{"train": (x[:200], y[:200]), "val": (x[200:250], y[200:250]),
             "test": (x[250:], y[250:])}}
'''


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def clean(monkeypatch):
    """Forget the plugins and registrations a test makes."""
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    monkeypatch.setattr(plugins, "_LOADED", {})
    solvers = set(available_solvers())
    datasets = set(DATASETS)
    modules = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(available_solvers()) - solvers:
        solver_base._REGISTRY.remove(name)
    for name in set(DATASETS) - datasets:
        unregister_dataset(name)
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.path[:] = path


def test_module_name(tmp_path, clean, monkeypatch):
    _write(tmp_path, "plug_by_name.py", SOLVER_PLUGIN.format(name="t-by-name"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_plugins(["plug_by_name"], env=False, entry_points=False) == ["plug_by_name"]
    assert "t-by-name" in available_solvers()
    load_plugins(["plug_by_name"], env=False, entry_points=False)  # loaded once per process
    assert sys.modules["plug_by_name"].LOADS == 1


def test_module_name_found_in_the_current_folder(tmp_path, clean, monkeypatch):
    _write(tmp_path, "plug_in_cwd.py", SOLVER_PLUGIN.format(name="t-in-cwd"))
    monkeypatch.chdir(tmp_path)
    for entry in ("", str(tmp_path)):  # as under the console script: cwd not on sys.path
        while entry in sys.path:
            sys.path.remove(entry)
    load_plugins(["plug_in_cwd"], env=False, entry_points=False)
    assert "t-in-cwd" in available_solvers()


def test_file_path(tmp_path, clean):
    path = _write(tmp_path, "my_file_solvers.py", SOLVER_PLUGIN.format(name="t-by-file"))
    assert load_plugins([str(path)], env=False, entry_points=False) == ["my_file_solvers"]
    assert "t-by-file" in available_solvers()
    module = sys.modules["my_file_solvers"]
    assert Path(module.__file__) == path.resolve() and module.LOADS == 1
    load_plugins([str(path)], env=False, entry_points=False)
    assert module.LOADS == 1
    # the registered function really is the user's
    import torch

    import structvae as sv

    pot = sv.Potentials(torch.randn(2, 3, 2), sv.chain_edges(3), torch.randn(2, 2, 2, 2))
    z = get_solver("t-by-file")(pot)
    assert torch.equal(z, get_solver("exact")(pot))


def test_environment_variable(tmp_path, clean, monkeypatch):
    _write(tmp_path, "plug_env_a.py", SOLVER_PLUGIN.format(name="t-env-a"))
    (tmp_path / "sub").mkdir()
    b = _write(tmp_path / "sub", "plug_env_b.py", DATASET_PLUGIN.format(name="t-env-b"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV_VAR, f" plug_env_a , {b},")
    assert load_plugins(entry_points=False) == ["plug_env_a", "plug_env_b"]
    assert "t-env-a" in available_solvers() and "t-env-b" in DATASETS
    assert load_plugins(env=False, entry_points=False) == []


def _fake_distribution(folder: Path, value: str, module: str, text: str) -> None:
    """A distribution 'fake-plugin' installed in ``folder`` with one structvae.plugins entry."""
    dist = folder / "fake_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[structvae.plugins]\nfake = {value}\n")
    _write(folder, f"{module}.py", text)


def test_entry_point(tmp_path, clean, monkeypatch):
    text = SOLVER_PLUGIN.format(name="t-entry") + textwrap.dedent("""
        CALLS = []


        def register_all():
            CALLS.append(1)
    """)
    _fake_distribution(tmp_path, "fake_ep_mod:register_all", "fake_ep_mod", text)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "fake" in load_plugins(env=False)
    assert "t-entry" in available_solvers() and sys.modules["fake_ep_mod"].CALLS == [1]
    load_plugins(env=False)
    assert sys.modules["fake_ep_mod"].CALLS == [1]  # once per process


def test_entry_point_from_pythonpath_in_the_cli(tmp_path):
    _fake_distribution(
        tmp_path, "fake_ep_data", "fake_ep_data", DATASET_PLUGIN.format(name="t-ep-data")
    )
    proc = _cli(["datasets"], tmp_path, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("t-ep-data ") for line in proc.stdout.splitlines())
    assert "300 digits of the MNIST sample" in proc.stdout


def test_failures_are_one_line_errors_naming_the_plugin(tmp_path, clean):
    bad = _write(tmp_path, "bad_plugin.py", "import os\n\nraise RuntimeError('boom')\n")
    with pytest.raises(PluginError) as e:
        load_plugins([str(bad)], env=False, entry_points=False)
    msg = str(e.value)
    assert "\n" not in msg and "bad_plugin.py" in msg and "line 3: RuntimeError: boom" in msg
    assert "bad_plugin" not in sys.modules
    with pytest.raises(PluginError, match="'no_such_plugin_mod'.*no module named"):
        load_plugins(["no_such_plugin_mod"], env=False, entry_points=False)
    with pytest.raises(PluginError, match="no such file"):
        load_plugins([str(tmp_path / "absent.py")], env=False, entry_points=False)
    with pytest.raises(PluginError, match=r"from \$STRUCTVAE_PLUGINS"):
        os.environ[plugins.ENV_VAR] = "no_such_plugin_mod"
        try:
            load_plugins(entry_points=False)
        finally:
            del os.environ[plugins.ENV_VAR]


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    full_env.pop(plugins.ENV_VAR, None)
    return subprocess.run(
        [sys.executable, "-m", "structvae", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
    )


def test_cli_plugin_errors(tmp_path):
    _write(tmp_path, "broken.py", "x = (\n")
    proc = _cli(["solvers", "--import", "broken.py"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "structvae solvers: error: cannot import plugin 'broken.py' (from --import): line 1: "
        "SyntaxError: '(' was never closed (broken.py, line 1)"
    ]
    proc = _cli(["train", "--import", "nope_mod"], tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("structvae train: error: cannot import plugin 'nope_mod'")


def test_cli_lists_and_trains_with_the_users_solver_and_dataset(tmp_path):
    _write(tmp_path, "my_solvers.py", SOLVER_PLUGIN.format(name="my-solver"))
    _write(tmp_path, "my_data.py", DATASET_PLUGIN.format(name="tiny-digits"))
    proc = _cli(["solvers", "--import", "my_solvers.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "my-solver        Exact arg max by enumerating every assignment" in proc.stdout
    log = tmp_path / "calls.log"
    args = ["train", "--import", "my_solvers", "--import=my_data.py", "--solver", "my-solver"]
    args += ["--model", "structured", "--latent", "3", "--dataset", "tiny-digits"]
    args += ["--epochs", "1", "--max-steps", "2", "--batch-size", "20", "--eval-samples", "2"]
    proc = _cli([*args, "--out", "run"], tmp_path, MY_SOLVER_LOG=str(log))
    assert proc.returncode == 0, proc.stderr
    assert "tiny-digits (200 train / 50 val / 50 test)" in proc.stdout + proc.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["solver"] == "my-solver" and config["dataset"] == "tiny-digits"
    assert (tmp_path / "run" / "results.json").is_file()
    calls = log.read_text().count("call")
    assert calls >= 2 * 20  # z* (and z_eps) of every row of the two steps went through it
    imports = ["--import", "my_data.py", "--import", "my_solvers.py"]
    proc = _cli(["evaluate", "run", "--samples", "0", *imports], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["split"] == "test"
