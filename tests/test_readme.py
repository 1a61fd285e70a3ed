"""Every ```python block of the README runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, monkeypatch):
    from structvae.data import registry as datasets
    from structvae.solvers import base

    # the README registers solvers and datasets by name; keep the process-wide registries clean
    for reg in (base._REGISTRY, datasets._REGISTRY):
        monkeypatch.setattr(reg, "_factories", dict(reg._factories))
        monkeypatch.setattr(reg, "_origins", dict(reg._origins))
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
