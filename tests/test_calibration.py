"""Calibration tests (issue 4 item 6): every shipped weight reproduces the figures its card records.

Each card in ``weights/`` must carry a ``calibration`` block written by
``python eval/calibrate.py --update-card NAME``; the sample is restored again
through the user path and PSNR / SSIM must match within 0.05 dB / 0.002. A
deliberately perturbed model must fail the same check, so the test is known
to be able to fail.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eval import calibrate as C  # noqa: E402
from restore import weights as W  # noqa: E402

CARDS = {str(c["name"]): c for c in W.available()}
NAMES = sorted(CARDS)


def _measure(name: str, perturb: float | None = None) -> tuple[dict, dict]:
    """(card, measured block) for a shipped weight; ``perturb`` scales its output-side weight tensor (and shifts
    that layer's bias by 0.05, which also moves a residual head still close to its zero init, like weights/inpaint's)."""
    model, card = C.load_model(name)
    if perturb is not None:
        # the last weight matrix/kernel: the layer closest to the output, so the change cannot be absorbed
        params = dict(model.named_parameters())
        last = [n for n, p in params.items() if p.dim() >= 2][-1]
        params[last].mul_(perturb)
        bias = params.get(last.rsplit(".", 1)[0] + ".bias")
        if bias is not None:
            bias.add_(0.05)
    try:
        return card, C.measure(model, card)
    except C.SampleUnavailable as e:
        pytest.skip(f"{name}: calibration sample not installed here ({e})")


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weight_matches_its_calibration(name: str) -> None:
    card = CARDS[name]
    if not isinstance(card.get(C.CALIBRATION_KEY), dict):
        pytest.fail(
            f"weights/{name}.json has no {C.CALIBRATION_KEY!r} block: shipping a weight without calibration is a "
            f"bug; run `OMP_NUM_THREADS=1 python eval/calibrate.py --update-card {name}` and commit the card"
        )
    card, measured = _measure(name)
    C.check(card, measured)  # raises CalibrationError naming the metric, both values and the tolerance
    assert card[C.CALIBRATION_KEY]["command"] == f"python eval/calibrate.py --update-card {name}"


@pytest.mark.parametrize("name", NAMES)
def test_perturbed_weight_is_caught(name: str) -> None:
    if not isinstance(CARDS[name].get(C.CALIBRATION_KEY), dict):
        pytest.skip(f"{name} is not calibrated (test_shipped_weight_matches_its_calibration fails for it)")
    card, measured = _measure(name, perturb=1.25)
    with pytest.raises(C.CalibrationError, match="disagree with their calibration"):
        C.check(card, measured)


def _block(**over: object) -> dict:
    block = {"sample": "s", "corruption": "gaussian:sigma=25", "seed": 0, "psnr": 25.0, "ssim": 0.7,
             "input_psnr": 20.0, "command": "python eval/calibrate.py --update-card x"}
    block.update(over)
    return block


def test_check_rejects_missing_block_and_out_of_tolerance_values() -> None:
    with pytest.raises(C.CalibrationError, match="no 'calibration' block.*--update-card x"):
        C.check({"name": "x"}, _block())
    card = {"name": "x", "calibration": _block()}
    C.check(card, _block(psnr=25.04, ssim=0.7015))  # inside both tolerances
    with pytest.raises(C.CalibrationError, match="psnr: measured 24.9400, card 25.0000"):
        C.check(card, _block(psnr=24.94))
    with pytest.raises(C.CalibrationError, match="ssim"):
        C.check(card, _block(ssim=0.703))
    with pytest.raises(C.CalibrationError, match="corruption"):
        C.check(card, _block(corruption="gaussian:sigma=50"))
    with pytest.raises(C.CalibrationError, match="not a number"):
        C.check({"name": "x", "calibration": _block(psnr=None)}, _block())


def test_update_card_keeps_layout_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    original = {"name": "m", "notes": "caf\u00e9 \u2014 na\u00efve", "sha256": "ab" * 32, "size_bytes": 3}
    for ensure_ascii in (True, False):
        path.write_text(json.dumps(original, indent=2, ensure_ascii=ensure_ascii) + "\n", encoding="utf-8")
        assert C.update_card(path, _block()) is True
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n") and ("\\u00e9" in text) == ensure_ascii
        card = json.loads(text)
        assert list(card) == [*original, "calibration"]
        assert {k: card[k] for k in original} == original
        assert C.update_card(path, _block()) is False  # same figures: the file is not rewritten
        assert path.read_text(encoding="utf-8") == text
        # a new measurement replaces the block in place (same key position)
        path.write_text(json.dumps({"calibration": _block(), **original}, indent=2) + "\n", encoding="utf-8")
        assert C.update_card(path, _block(psnr=26.0)) is True
        card = json.loads(path.read_text(encoding="utf-8"))
        assert list(card)[0] == "calibration" and card["calibration"]["psnr"] == 26.0


def test_update_card_rejects_unreadable_card(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(C.CalibrationError, match="bad.json: unreadable model card"):
        C.update_card(path, _block())


def test_png_roundtrip_of_a_batch_is_exact_on_8bit_values(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 7, 9), generator=g).float() / 255  # 5 images: a 3x3 grid with gaps
    assert torch.equal(C._png_roundtrip(x, tmp_path / "x.png"), x)
    mask = (torch.rand(5, 1, 7, 9, generator=g) > 0.5).float()
    assert torch.equal(C._png_roundtrip(mask, tmp_path / "m.png", mask=True), mask)


def test_sample_is_seeded_and_matches_the_card_kind() -> None:
    card = {"name": "t", "task": "colorize", "corruption": "gray"}
    try:
        a, b = C.make_sample(card), C.make_sample(card)
    except C.SampleUnavailable as e:
        pytest.skip(str(e))
    assert a.input.shape == (1, 1, C.PHOTO_CROP, C.PHOTO_CROP) and a.clean.shape[1] == 3
    assert torch.equal(a.input, b.input)
    noisy = C.make_sample({"name": "t", "task": "denoise", "corruption": "gaussian:sigma=25"})
    assert torch.equal(noisy.input, C.make_sample({"name": "t", "task": "denoise",
                                                   "corruption": "gaussian:sigma=25"}).input)
    holes = C.make_sample({"name": "t", "task": "inpaint", "corruption": "gaussian:sigma=0"})
    assert holes.corruption == C.DEFAULT_MASK_SPEC and holes.mask is not None and 0 < holes.mask.mean() < 1
    with pytest.raises(C.CalibrationError, match="no 'corruption'"):
        C.make_sample({"name": "t", "task": "denoise"})
