"""experiments/attribute_faces.py: its judge's blur, its switch scoring and one tiny run."""

from __future__ import annotations

import json
import sys

import torch
from conftest import load_experiment


def _faces():
    return load_experiment("attribute_faces")


def test_blur_keeps_constant_images_and_smooths_edges():
    mod = _faces()
    flat = torch.full((2, 3, 64, 64), 0.3)
    assert torch.allclose(mod.blur(flat, torch.tensor([0.0, 1.5])), flat, atol=1e-6)
    edge = torch.zeros(2, 3, 64, 64)
    edge[..., 32:] = 1.0
    out = mod.blur(edge, torch.tensor([0.0, 1.5]))
    assert torch.allclose(out[0], edge[0], atol=1e-6)  # sigma 0: unchanged
    assert 0.05 < float(out[1, 0, 10, 31]) < 0.5 < float(out[1, 0, 10, 32]) < 0.95


class _Model:
    """switch() writes the forced bit of attribute j into pixel (0, 0, j); attribute 2 is
    "leaky": switching it also flips attribute 0's pixel."""

    def switch(self, x, name, on):
        j = _faces().ATTRIBUTES.index(name)
        out = torch.zeros(x.shape[0], 3, 64, 64)
        out[:, 0, 0, j] = float(on)
        if j == 2:
            out[:, 0, 0, 0] = float(on)
        return out


def test_switch_scores_read_the_judge():
    mod = _faces()

    def judge(img):  # logits > 0 where the pixel is set
        return img[:, 0, 0, :3] * 2 - 1

    scores = mod.switch_scores(_Model(), judge, torch.zeros(5, 12288))
    assert scores["Eyeglasses"] == {"switch_success": 1.0, "others_kept": 1.0}
    assert scores["Male"] == {"switch_success": 1.0, "others_kept": 0.0}


def test_tiny_run_writes_results(tmp_path, monkeypatch):
    mod = _faces()
    argv = ["attribute_faces.py", "--images", "40", "--steps", "3", "--classifier-epochs", "1"]
    argv += ["--channels", "4", "--hidden", "16", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    mod.main()
    res = json.loads((tmp_path / "faces.json").read_text())
    assert set(res["switch"]) == set(mod.ATTRIBUTES)
    for v in res["switch"].values():
        assert 0 <= v["switch_success"] <= 1 and 0 <= v["others_kept"] <= 1
    assert res["test_images"] == 4 and (tmp_path / "faces_grid.png").stat().st_size > 0
