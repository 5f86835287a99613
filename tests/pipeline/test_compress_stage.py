"""The compress stage: a .prn file in the chain, its size as the chain's bytes, the decoded model passed on."""

from __future__ import annotations

import pytest
import torch

from prunus.formats import load
from prunus.pipeline import parse_recipe, read_record, run_pipeline

COMPRESS = {"sparsity": 0.5, "bits": 4, "population": 2, "elite": 1, "generations": 1, "cycles": 1,
            "calib_size": 32, "rescore_size": 0, "finetune_steps": 0}  # fmt: skip


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    from tests.pipeline.conftest import TINY

    recipe = {**TINY, "seeds": [0, 1]}
    recipe["stages"] = [
        {"stage": "train", "name": "baseline", "train": {"epochs": 1}},
        {"stage": "compress", "compress": COMPRESS},
        {"stage": "export"},
    ]
    out = tmp_path_factory.mktemp("compress") / "run"
    return out, run_pipeline(parse_recipe(recipe), out, progress=False, echo=lambda _: None)


def test_compress_stage_writes_a_prn_and_hands_the_decoded_model_on(compressed):
    from prunus.compress import decompress

    out, summary = compressed
    stage = out / "main" / "seed0" / "02-compress"
    rec, prn = read_record(stage), stage / "model.prn"
    assert rec["metrics"]["bytes"] == prn.stat().st_size == rec["metrics"]["file_bytes"]
    assert rec["metrics"]["bytes"] < read_record(out / "main" / "seed0" / "01-baseline")["metrics"]["bytes"] / 4
    assert summary.records[0]["bytes"] == prn.stat().st_size  # export does not replace the chain's size
    layers = rec["metrics"]["layers"]
    assert layers
    assert all(x["quant_bits"] == 4 and x["bits"] > 0 and x["bound"] > 0 for x in layers)
    assert rec["metrics"]["sparsity"] == pytest.approx(0.5, abs=0.01)  # the recipe's settings reached compress
    decoded, saved = decompress(prn), load(out / rec["model"])
    for (k, a), (_, b) in zip(decoded.state_dict().items(), saved.state_dict().items(), strict=True):
        assert torch.equal(a, b), k  # what the next stage reads is exactly the decoded .prn
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(decoded.eval()(x), saved.eval()(x))


def test_compress_stage_seed_follows_the_chain_seed(compressed):
    from prunus.compress.prn import read_prn

    out, _ = compressed
    for seed in (0, 1):  # the search ran with compress.seed (0) + the chain's seed; the file says which
        header = read_prn(out / "main" / f"seed{seed}" / "02-compress" / "model.prn").header
        assert header.get("config", {}).get("seed", 0) == seed


@pytest.mark.filterwarnings("ignore::prunus.errors.BudgetNotMetWarning")
def test_compress_stage_records_the_budget_escalation(tmp_path):
    from tests.pipeline.conftest import TINY

    # max_kl 0 is never met; finetune_steps is explicit, so the ladder only adds the codebook fine-tune
    budget = {**COMPRESS, "bits": "auto", "max_drop": None, "max_kl": 0.0, "finetune_steps": 2}
    recipe = {**TINY, "stages": [{"stage": "train", "train": {"epochs": 1}},
                                 {"stage": "compress", "compress": budget}]}  # fmt: skip
    run_pipeline(parse_recipe(recipe), tmp_path / "run", progress=False, echo=lambda _: None)
    stage = next((tmp_path / "run" / "main" / "seed0").glob("02-*"))
    metrics = read_record(stage)["metrics"]
    assert metrics["budget_met"] is False
    assert [(a["rung"], a["settings"], a["met"]) for a in metrics["attempts"]] == [
        (0, "as given", False),
        (1, "codebook_steps=500", False),
    ]
    assert metrics["attempts"][-1]["file_bytes"] == metrics["bytes"] == (stage / "model.prn").stat().st_size
    assert metrics["attempts"][-1]["kl"] == pytest.approx(metrics["kl"])
    assert [p.name for p in stage.iterdir() if "checkpoint" in p.name] == []  # done: the rerun reads the record
