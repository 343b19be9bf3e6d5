"""scripts/train_code_model.py: its torch module is the golden model's float path."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the 'train' or 'reference' extra (torch)")

from sparktile.golden_model import load_model  # noqa: E402
from sparktile.golden_model.config import ModelConfig  # noqa: E402
from sparktile.golden_model.model import Model  # noqa: E402
from sparktile.scripts import train_code_model as tcm  # noqa: E402


def test_torch_module_matches_numpy_model():
    torch.manual_seed(0)
    net = tcm.TinyLlama(tcm.CONFIG).eval()
    with torch.no_grad():  # make the norms matter
        for blk in net.layers:
            blk.attn_norm.weight.uniform_(0.5, 1.5)
            blk.mlp_norm.weight.uniform_(0.5, 1.5)
        for p in net.parameters():
            p.mul_(5.0)
    ids = np.random.default_rng(0).integers(0, 256, 200)
    with torch.no_grad():
        ref = net(torch.from_numpy(ids)[None])[0].numpy()
    m = Model(ModelConfig.from_sparktile(tcm.CONFIG), net.state_numpy())
    got = m.logits(ids.tolist())
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_training_smoke(tmp_path):
    tcm.main(["--steps", "2", "--batch", "2", "--seq-len", "32", "--out", str(tmp_path)])
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["training"]["steps"] == 2 and "PSF" in cfg["training"]["corpus"]
    m = load_model(tmp_path)
    assert m.logits([0, 100, 101]).shape == (3, 256)
