"""restore.weights: save/load round trip, hash and size checks, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from restore import models
from restore import weights as W


class TinyNet(nn.Module):
    """A registered stand-in architecture: conv + norm (buffers) + a tied head."""

    def __init__(self, channels: int = 3, width: int = 4) -> None:
        super().__init__()
        self.config = {"channels": channels, "width": width}
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.out = nn.Conv2d(width, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(torch.relu(self.norm(self.conv(x))))


class NoConfig(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)


@pytest.fixture()
def registry(monkeypatch, tmp_path):
    monkeypatch.setitem(models.ARCHITECTURES, "tiny-test", f"{__name__}:TinyNet")
    monkeypatch.setitem(models.ARCHITECTURES, "noconfig-test", f"{__name__}:NoConfig")
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path / "shipped"))
    return tmp_path


CARD = {"task": "denoise", "corruption": "gaussian:sigma=5-50", "metrics": {"psnr_sigma25": 30.5}, "steps": 10}


def _trained(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(channels=3, width=5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
        net.norm.running_mean.normal_()
        net.norm.num_batches_tracked.fill_(7)
    return net


def test_save_load_round_trip(registry):
    net = _trained()
    st = W.save(W.weights_dir() / "tiny", net, CARD)
    assert st == W.weights_dir() / "tiny.safetensors" and st.is_file()
    card = json.loads((W.weights_dir() / "tiny.json").read_text())
    assert card["arch"] == "tiny-test" and card["config"] == {"channels": 3, "width": 5}
    assert card["name"] == "tiny" and card["task"] == "denoise" and card["size_bytes"] == st.stat().st_size
    assert len(card["sha256"]) == 64 and card["created"] and card["data"] is None

    for ref in ("tiny", st, str(W.weights_dir() / "tiny.json"), str(W.weights_dir() / "tiny")):
        model, loaded_card = W.load(ref)
        assert isinstance(model, TinyNet) and loaded_card["sha256"] == card["sha256"]
        for (k, a), (k2, b) in zip(net.state_dict().items(), model.state_dict().items()):
            assert k == k2 and torch.equal(a, b)
    assert model.training  # load() leaves the mode to the caller
    x = torch.rand(1, 3, 8, 8)
    net.eval(), model.eval()
    assert torch.equal(net(x), model(x))
    assert [c["name"] for c in W.available()] == ["tiny"]
    assert W.verify("tiny")["name"] == "tiny"
    assert not list(W.weights_dir().glob(".*"))  # no temporaries left behind


def test_tampered_and_truncated_files_are_refused(registry):
    st = W.save(W.weights_dir() / "tiny", _trained(), CARD)
    good = st.read_bytes()

    tampered = bytearray(good)
    tampered[-3] ^= 0x01  # same size, one bit of one weight flipped
    st.write_bytes(bytes(tampered))
    with pytest.raises(W.WeightsError, match="SHA-256 mismatch"):
        W.load("tiny")
    with pytest.raises(W.WeightsError, match="SHA-256"):
        W.verify("tiny")

    st.write_bytes(good[: len(good) // 2])
    with pytest.raises(W.WeightsError, match="truncated"):
        W.load("tiny")

    st.unlink()
    with pytest.raises(W.WeightsError, match="weights file missing"):
        W.load("tiny")


def test_unknown_name_lists_available(registry):
    W.save(W.weights_dir() / "alpha", _trained(), CARD)
    W.save(W.weights_dir() / "beta", _trained(1), CARD)
    with pytest.raises(W.WeightsError, match=r"unknown weights 'gamma'.*available: alpha, beta"):
        W.load("gamma")
    with pytest.raises(W.WeightsError, match="model card not found"):
        W.load(registry / "nowhere" / "x.safetensors")


def test_mismatched_weights_give_clear_error(registry):
    st = W.save(W.weights_dir() / "tiny", _trained(), CARD)
    card_file = W.weights_dir() / "tiny.json"
    card = json.loads(card_file.read_text())
    card["config"]["width"] = 6  # card no longer matches the tensors
    card_file.write_text(json.dumps(card))
    with pytest.raises(W.WeightsError, match="shape mismatches"):
        W.load(st)
    card["arch"] = "no-such-arch"
    card_file.write_text(json.dumps(card))
    with pytest.raises(W.WeightsError, match="unknown architecture 'no-such-arch'"):
        W.load(st)
    card["arch"], card["config"] = "tiny-test", {"channels": 3, "width": 5, "bogus": 1}
    card_file.write_text(json.dumps(card))
    with pytest.raises(W.WeightsError, match="cannot build arch 'tiny-test'"):
        W.load(st)


def test_save_refuses_bad_cards(registry):
    out = W.weights_dir() / "x"
    with pytest.raises(W.WeightsError, match=r"missing required keys \['corruption'\]"):
        W.save(out, _trained(), {"task": "denoise"})
    with pytest.raises(W.WeightsError, match="not registered"):
        W.save(out, nn.Conv2d(1, 1, 1), CARD)
    with pytest.raises(W.WeightsError, match="no dict `config`"):
        W.save(out, NoConfig(), CARD)
    with pytest.raises(W.WeightsError, match="does not rebuild|weights do not fit"):
        W.save(out, _trained(), dict(CARD, config={"channels": 3, "width": 4}))  # config lies about width
    with pytest.raises(W.WeightsError, match="JSON"):
        W.save(out, _trained(), dict(CARD, metrics={"psnr": float("nan")}))
    assert not W.weights_dir().exists() or not list(W.weights_dir().iterdir())


def test_load_never_unpickles(registry, tmp_path):
    """A pickle renamed to .safetensors with a matching card must fail to parse, not execute."""
    evil = tmp_path / "evil.safetensors"
    torch.save({"conv.weight": torch.zeros(1)}, evil)
    data = evil.read_bytes()
    import hashlib

    card = {"name": "evil", "task": "denoise", "arch": "tiny-test", "config": {}, "corruption": "gray",
            "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    (tmp_path / "evil.json").write_text(json.dumps(card))
    with pytest.raises(W.WeightsError, match="not a valid safetensors file"):
        W.load(evil)


def test_available_skips_non_cards_with_warning(registry):
    W.save(W.weights_dir() / "tiny", _trained(), CARD)
    (W.weights_dir() / "notes.json").write_text("[1, 2]")
    with pytest.warns(UserWarning, match="notes.json"):
        cards = W.available()
    assert [c["name"] for c in cards] == ["tiny"]


def test_weights_dir_follows_env_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path))
    assert W.weights_dir() == tmp_path
    monkeypatch.delenv("RESTORE_WEIGHTS_DIR")
    monkeypatch.setattr(W, "WEIGHTS_DIR", W._REPO_WEIGHTS)
    assert W.weights_dir() == Path(W.__file__).resolve().parent.parent / "weights"


def test_a_card_with_inflated_sizes_fails_before_allocating_the_model(registry, monkeypatch):
    """Issue 19: the loader compared shapes only after building the card's model (3+ GB for a wide card)."""
    torch.manual_seed(0)
    st = W.save(W.weights_dir() / "small-unet", models.build("unet", base_channels=4, depth=2), CARD)
    card_file = W.weights_dir() / "small-unet.json"
    card = json.loads(card_file.read_text())
    card["config"]["base_channels"] = 4096  # real build: over 10 GB of float32 (16384 channels at depth 2)
    card_file.write_text(json.dumps(card))
    real_build = models.build

    def only_on_meta(name: str, **kwargs):
        if kwargs.get("base_channels", 0) > 64 and torch.empty(0).device.type != "meta":
            raise AssertionError("the inflated card's model was allocated")
        return real_build(name, **kwargs)

    monkeypatch.setattr(models, "build", only_on_meta)
    wanted = r"small-unet.json \(arch 'unet'\): shape mismatches .*file \(4,\) vs model \(4096,\)"
    with pytest.raises(W.WeightsError, match=wanted):
        W.load(st)
    card["config"]["base_channels"] = 4
    card_file.write_text(json.dumps(card))
    model, _ = W.load(st)  # the honest card still loads, for real
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_every_architecture_builds_on_the_meta_device(arch):
    """load compares a card with its file on a meta-device build: every architecture must build there."""
    with torch.device("meta"):
        model = models.build(arch)
    assert all(t.device.type == "meta" for t in model.state_dict().values())


def test_a_safetensors_header_that_lies_is_refused(registry):
    import hashlib

    st = W.save(W.weights_dir() / "tiny", _trained(), CARD)
    card_file = W.weights_dir() / "tiny.json"
    lies = ((b"\x00" * 4, "shorter than"), ((10**6).to_bytes(8, "little") + b"{}", "header of 1000000 bytes"),
            ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
            ((5).to_bytes(8, "little") + b'{"a":', "not JSON"))
    for data, why in lies:
        st.write_bytes(data)
        card = json.loads(card_file.read_text())
        card["sha256"], card["size_bytes"] = hashlib.sha256(data).hexdigest(), len(data)
        card_file.write_text(json.dumps(card))
        with pytest.raises(W.WeightsError, match=f"not a valid safetensors file .*{why}"):
            W.load(st)
