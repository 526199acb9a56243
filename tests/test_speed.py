"""eval/speed.py: report files and columns, broken tasks, ratios, memory measurement, workers.

Kept tiny: a 2-level, 4-channel UNet saved as weights, 64x64 images, one
fresh worker process for the end-to-end run (the rest runs in-process).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from eval import speed


@pytest.fixture(scope="module")
def tiny_denoise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny denoise model saved as weights: timing figures without the full-size network's cost."""
    from restore import weights as W
    from restore.models import build

    torch.manual_seed(0)
    model = build("unet", in_channels=3, out_channels=3, base_channels=4, depth=2)
    path = tmp_path_factory.mktemp("w") / "tiny-denoise"
    return W.save(path, model, {"task": "denoise", "corruption": "gaussian:sigma=25"})


def test_quick_run_writes_tables_and_reports_broken_task(tmp_path, tiny_denoise, monkeypatch, capsys):
    from restore import pipeline, tasks

    monkeypatch.setitem(tasks.TASKS, "broken", "restore.tasks._no_such_module_for_speed_test")
    monkeypatch.setitem(pipeline.RESTORERS, "broken", "restore.restorers._no_such_module_for_speed_test:X")
    out = tmp_path / "speed"
    code = speed.main(["--quick", "--device", "cpu", "--out", str(out), "--tasks", "denoise,broken",
                       "--sections", "restore", "--weights", f"denoise={tiny_denoise}"])
    assert code == 0
    with open(out / "speed.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == speed.COLUMNS
        rows = list(reader)
    broken = [r for r in rows if r["task"] == "broken"]
    assert len(broken) == 1 and broken[0]["status"].startswith("skipped: task module does not import")
    (ok,) = [r for r in rows if r["task"] == "denoise"]
    assert ok["status"] == "ok", ok["status"]
    assert ok["model"] == "tiny-denoise" and ok["size"] == "64x64" and ok["batch"] == "1"
    assert float(ok["images_per_s"]) > 0 and int(ok["runs"]) == speed.QUICK["repeats"]
    assert float(ok["images_per_s"]) == pytest.approx(1000.0 / float(ok["ms_per_image"]), rel=1e-6)
    # the worker was a fresh process: its own peak RSS, at least what it held before the timed calls
    assert 50 < float(ok["base_mem_mb"]) <= float(ok["peak_mem_mb"])
    md = (out / "speed.md").read_text()
    assert "| task | model | device | dtype | mode | batch | size |" in md and "tiny-denoise" in md
    assert "Command: `python eval/speed.py --quick" in md
    data = json.loads((out / "speed.json").read_text())
    assert data["columns"] == list(speed.COLUMNS) and len(data["rows"]) == 2
    assert data["meta"]["torch"] == torch.__version__
    assert "[1/1] restore denoise cpu fp32 eager b1 64x64" in capsys.readouterr().err


def test_huge_section_runs_each_photo_task_through_the_cli(tmp_path):
    """``--sections huge``: restore denoise/colorize/inpaint on one generated photo (inpaint with a mask)."""
    out = tmp_path / "speed"
    assert speed.main(["--quick", "--device", "cpu", "--out", str(out), "--tasks", "colorize,inpaint",
                       "--sections", "huge"]) == 0
    with open(out / "speed.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["section"], r["task"]) for r in rows] == [("huge", "colorize"), ("huge", "inpaint")]
    assert all(r["status"].startswith("ok") and float(r["peak_mem_mb"]) > 50 for r in rows), rows
    inpaint = json.loads((out / "speed.json").read_text())["rows"][1]
    assert inpaint["task"] == "inpaint" and "--masks" in inpaint["command"]


def test_usage_errors_exit_2(tmp_path, capsys):
    assert speed.main(["--sizes", "7x512", "--out", str(tmp_path)]) == 2
    assert "size '7x512'" in capsys.readouterr().err
    assert speed.main(["--dtypes", "fp16", "--out", str(tmp_path)]) == 2
    assert "--dtypes: unknown value(s) fp16" in capsys.readouterr().err
    assert speed.main(["--tasks", "nosuch", "--out", str(tmp_path)]) == 2
    assert "unknown task 'nosuch'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert speed.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "speed.csv").exists()


def test_parse_size():
    assert speed.parse_size("512") == (512, 512)
    assert speed.parse_size("768x512") == (768, 512)
    for bad in ("", "x5", "12y4", "4"):
        with pytest.raises(speed.SpeedError):
            speed.parse_size(bad)


def test_ratios_and_issue6_lines():
    rows = [
        speed._row("baselines", "denoise", baseline="cbm3d", size="768x512", images_per_s=0.05),
        speed._row("baselines", "denoise", baseline="nlm", size="768x512", images_per_s=2.0),
        speed._row("baselines", "inpaint", baseline="telea", size="768x512", images_per_s=10.0),
        speed._row("restore", "denoise", model="m", device="cpu", dtype="fp32", mode="eager", batch=1,
                   size="768x512", images_per_s=0.6),
        speed._row("restore", "denoise", device="cpu", dtype="fp32", mode="eager", batch=1, size="256x256",
                   images_per_s=5.0),
        speed._row("restore", "inpaint", device="cpu", dtype="fp32", mode="eager", batch=1, size="768x512",
                   images_per_s=5.0),
        speed._row("huge", "denoise", device="cpu", size="6000x4000", peak_mem_mb=3500.0, ms_per_image=9000.0,
                   status="ok (>= 3 GB)"),
    ]
    speed.add_ratios(rows, "768x512")
    assert rows[3]["x_cbm3d"] == pytest.approx(12.0) and rows[3]["x_nlm"] == pytest.approx(0.3)
    assert rows[3]["x_telea"] is None and rows[4]["x_cbm3d"] is None  # other task / other size: no ratio
    assert rows[5]["x_telea"] == pytest.approx(0.5) and rows[5]["x_cbm3d"] is None
    rows.append(speed._row("restore", "denoise", model="m", device="cpu", dtype="fp32", mode="eager, ensemble x8",
                           batch=1, size="768x512", images_per_s=0.3))
    speed.add_ratios(rows, "768x512")
    lines = speed.issue6_lines(rows, "768x512")
    assert "12.0x CBM3D" in lines[0] and lines[0].endswith("PASS.")
    assert "--ensemble x8" in lines[1] and "6.0x CBM3D" in lines[1] and lines[1].endswith("FAIL.")
    assert "3.42 GB" in lines[2] and lines[2].endswith("FAIL.")


def test_baselines_timed_on_same_photo():
    rows = speed.time_baselines((48, 32), 2, ["nlm", "telea"])
    assert [r["baseline"] for r in rows] == ["nlm", "telea"]
    for r in rows:
        assert r["status"] == "ok" and r["size"] == "48x32" and r["runs"] == 2 and r["images_per_s"] > 0


def test_run_tree_measures_peak_rss_of_a_child():
    """A child holding 300 MB must be reported at >= 300 MB, and its exit status kept."""
    code = "import sys, time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.2); sys.exit(3)"
    status, wall, peak, _ = speed.run_tree([sys.executable, "-c", code], timeout=60)
    assert status == 3 and wall > 0.2
    assert 300 <= peak < 1000


def test_restore_worker_in_process(tiny_denoise):
    """Tiled (16-px tiles on 40x24), batch 2, bf16 autocast: the configuration path without a subprocess."""
    cfg = {"kind": "restore", "task": "denoise", "device": "cpu", "size": [40, 24], "batch": 2, "dtype": "bf16",
           "mode": "eager", "tile": 16, "warmup": 1, "repeats": 2, "weights": str(tiny_denoise)}
    res = speed.restore_worker(cfg)
    assert res["status"] == "ok" and res["runs"] == 2 and res["mem_kind"] == "process peak RSS"
    assert res["model"] == "tiny-denoise"
    assert res["images_per_s"] == pytest.approx(1000.0 / res["ms_per_image"])
    x8 = speed.restore_worker({**cfg, "dtype": "fp32", "ensemble": "x8"})  # restore denoise --ensemble x8
    assert x8["status"] == "ok" and x8["images_per_s"] > 0


def test_train_worker_in_process():
    res = speed.train_worker({"kind": "train", "task": "vae", "device": "cpu", "batch": 2, "dtype": "fp32",
                              "mode": "eager", "channels_last": False, "size": None, "warmup": 1, "repeats": 2})
    assert res["status"].startswith("ok"), res["status"]
    assert res["size"] == [28, 28] and res["runs"] == 2 and res["images_per_s"] > 0


def test_find_recipe_reads_documented_export_commands():
    # colorize's shipped weights are exported by the command documented in colorize-cpu.yaml
    recipe = speed.find_recipe("colorize", "colorize")
    if recipe is None:
        pytest.skip("train/configs/colorize-cpu.yaml not present")
    assert recipe.name == "colorize-cpu.yaml"
    assert speed.find_recipe("colorize", None) is None
    assert speed.find_recipe("colorize", "no-such-weights") is None
