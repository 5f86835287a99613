"""Tiny compressed models shared by the .prn tests (compressed once per session)."""

import pytest
import torch

import prunus
from prunus.compress import CompressConfig, compress

# the mlp preset on every model: these tests are about the file, not the settings a conv net starts from
FAST = {
    "preset": "mlp",
    "calib_size": 32,
    "rescore_size": 0,
    "cycles": 1,
    "generations": 1,
    "population": 3,
    "elite": 1,
}


def tiny_compress(name: str, path, **kw):
    """Compress a narrow registry model on random images; returns (report, images)."""
    torch.manual_seed(0)
    model = prunus.create_model(name, in_channels=1, num_classes=10, width_mult=kw.pop("width_mult", 0.25)).eval()
    x = torch.randn(kw.pop("images", 48), 1, 28, 28)
    cfg = CompressConfig(**{**FAST, "sparsity": 0.7, "bits": 4, **kw})
    return compress(model, x, cfg, out=path, baselines=False), x


@pytest.fixture(scope="session")
def lenet_prn(tmp_path_factory):
    """(path, report, images) of a compressed lenet300_100 (width 0.1)."""
    path = tmp_path_factory.mktemp("prn") / "lenet.prn"
    report, x = tiny_compress("lenet300_100", path, width_mult=0.1, bits="auto", max_drop=None, max_kl=0.05)
    return path, report, x
