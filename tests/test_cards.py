"""Model cards follow one schema (restore/cards.py) and the generated results tables match them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from restore import cards
from restore import weights as W

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "weights").rglob("*.json"))
sys.path.insert(0, str(REPO / "eval"))
import results_table  # noqa: E402


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_card_follows_the_schema(path: Path) -> None:
    assert cards.check(json.loads(path.read_text(encoding="utf-8"))) == []


def test_the_schema_catches_typos_missing_and_mistyped_keys() -> None:
    card = json.loads(SHIPPED[0].read_text(encoding="utf-8"))
    assert cards.check(card) == []
    bad = {**card, "metric": {}, "steps": "many"}
    del bad["sha256"]
    problems = cards.check(bad)
    assert any("unknown key 'metric'" in p for p in problems)
    assert any("'steps' is str" in p for p in problems)
    assert any("missing key 'sha256'" in p for p in problems)
    assert cards.check({**card, "calibration": True}) and cards.check({**card, "latent_dim": True})


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}
        self.w = nn.Parameter(torch.zeros(2))


def test_save_refuses_a_mistyped_card_and_warns_about_an_unknown_key(tmp_path: Path, monkeypatch) -> None:
    from restore import models

    monkeypatch.setitem(models.ARCHITECTURES, "tiny-cards-test", f"{__name__}:_Tiny")
    base = {"task": "denoise", "corruption": "gaussian:sigma=25"}
    with pytest.raises(W.WeightsError, match="'steps' is str"):
        W.save(tmp_path / "a", _Tiny(), {**base, "steps": "many"})
    with pytest.warns(UserWarning, match="not in restore/cards.py"):
        W.save(tmp_path / "b", _Tiny(), {**base, "brand_new_key": 1})
    saved = json.loads((tmp_path / "b.json").read_text())
    assert cards.check(saved, allow_unknown=True) == []


def test_generated_results_tables_are_up_to_date() -> None:
    assert results_table.main(["--check"]) == 0, "run python eval/results_table.py and commit README.md / docs/results.md"
