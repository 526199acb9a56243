"""Results tables generated from the model cards, so each figure lives in one place (the card).

The README and docs/results.md hold blocks between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` markers; this script rewrites them from
``weights/*.json``. ``--check`` rewrites nothing and exits 1 when a block is out
of date (a test runs it, so a card and the docs cannot drift apart).

    python eval/results_table.py            # rewrite the blocks
    python eval/results_table.py --check    # verify them
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", REPO / "docs" / "results.md")

#: Baselines shown in the short README tables (others appear in docs/results.md).
README_BASELINES = ("noisy", "cbm3d", "ffdnet", "median3", "switch", "telea", "pushpull")


def load_cards(folder: Path = REPO / "weights") -> dict[str, dict[str, Any]]:
    cards = {}
    for path in sorted(folder.glob("*.json")):
        card = json.loads(path.read_text(encoding="utf-8"))
        cards[str(card.get("name") or path.stem)] = card
    return cards


def _f(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _evaluations(card: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(``set/spec``, entry) of each held-out evaluation recorded by an eval script with ``--update-card``."""
    for key, entry in (card.get("metrics") or {}).items():
        if isinstance(entry, dict) and "/" in key and isinstance(entry.get("psnr"), (int, float)):
            yield key, entry


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(header))) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def photo_table(cards: dict[str, dict[str, Any]], names: Iterable[str], *, hole: bool = False,
                baselines: Iterable[str] | None = None) -> str:
    """PSNR / SSIM of each card's held-out evaluations next to its recorded baselines (PSNR)."""
    entries = [(n, key, e) for n in names if n in cards for key, e in _evaluations(cards[n])]
    if not entries:
        return "_(no evaluation recorded in the cards)_"
    seen: list[str] = []
    for _, _, e in entries:
        seen += [b for b in (e.get("baselines") or {}) if b not in seen and b not in cards]
    shown = [b for b in seen if baselines is None or b in baselines]
    metric, ssim_key = ("psnr_hole", "ssim_hole") if hole else ("psnr", "ssim")
    header = ["weights", "images / corruption", "PSNR" + (" (hole)" if hole else ""), "SSIM" + (" (hole)" if hole else "")] + [f"{b}" for b in shown]
    rows = []
    for name, key, e in entries:
        base = e.get("baselines") or {}
        rows.append([f"`{name}`", f"{key} ({e.get('images', '?')})", f"**{_f(e.get(metric))}**", _f(e.get(ssim_key), 3)]
                    + [_f((base.get(b) or {}).get(metric)) for b in shown])
    return _table(header, rows)


def _fraction(r: dict[str, Any]) -> float | None:
    """Mean colourfulness over the ground truth's (the issue's "colourfulness >= 0.6 x the truth's")."""
    c, gt = r.get("colorfulness"), r.get("colorfulness_gt")
    return c / gt if isinstance(c, (int, float)) and isinstance(gt, (int, float)) and gt else None


def colorize_table(cards: dict[str, dict[str, Any]], names: Iterable[str]) -> str:
    rows, gray = [], None
    for name in names:
        m = ((cards.get(name) or {}).get("metrics") or {}).get("photos-eval")
        if not isinstance(m, dict):
            continue
        gray = gray or m.get("grayscale_baseline")
        r = m.get("model") or {}
        rows.append([f"`{name}`", _f(r.get("psnr")), _f(r.get("ssim"), 3), _f(r.get("ab_mae")),
                     _f(_fraction(r)), _f(r.get("sq_dist"))])
    if not rows:
        return "_(no evaluation recorded in the cards)_"
    if gray:  # the same 19 photos made gray: one baseline row
        rows.append(["gray input", _f(gray.get("psnr")), _f(gray.get("ssim"), 3), _f(gray.get("ab_mae")),
                     _f(_fraction(gray)), _f(gray.get("sq_dist"))])
    return _table(["colorizer (held-out photos)", "PSNR", "SSIM", "a/b MAE", "colourfulness / truth",
                   "SqueezeNet distance"], rows)


def vae_table(cards: dict[str, dict[str, Any]], names: Iterable[str]) -> str:
    rows = []
    for name in names:
        t = ((cards.get(name) or {}).get("metrics") or {}).get("test")
        if not isinstance(t, dict):
            continue
        rows.append([f"`{name}`", str(t.get("corruption", "-")), _f(t.get("noisy_psnr")), f"**{_f(t.get('psnr'))}**",
                     _f(t.get("ssim"), 3), _f(t.get("knn5_accuracy"), 3)])
    if not rows:
        return "_(no evaluation recorded in the cards)_"
    return _table(["weights", "test corruption", "input PSNR", "PSNR", "SSIM", "k-NN(5) of z_mean"], rows)


def mnist_table(cards: dict[str, dict[str, Any]], names: Iterable[str]) -> str:
    """The MNIST experiments' headline figure of each card (eval/mnist.py --update-card)."""
    rows = []
    for name in names:
        m = (cards.get(name) or {}).get("metrics") or {}
        if isinstance(m.get("cvae"), dict):
            c = m["cvae"]
            rows.append([f"`{name}`", "conditional VAE", f"loss per image: train {_f(c.get('train_loss_last_epoch'), 1)}, "
                         f"test {_f(c.get('test_loss'), 1)}; samples recognised {_f(100 * c.get('recognised', float('nan')), 1)}%"])
        elif isinstance(m.get("blur"), dict):
            b = m["blur"]
            rows.append([f"`{name}`", "blur removal", f"PSNR blurred {_f(b.get('blurred_psnr'))} / bicubic "
                         f"{_f(b.get('bicubic_psnr'))} / VAE **{_f(b.get('vae_psnr'))}** dB"])
        elif isinstance(m.get("generate"), dict):
            g = m["generate"]
            rows.append([f"`{name}`", f"plain VAE, latent {g.get('latent_dim', '?')}",
                         f"test loss per image {_f(g.get('test_loss'), 1)}"])
    if not rows:
        return "_(no evaluation recorded in the cards)_"
    return _table(["weights", "experiment", "figures (test digits / garments)"], rows)


def _names(cards: dict[str, dict[str, Any]], test: Callable[[str, dict[str, Any]], bool]) -> list[str]:
    return [n for n, c in cards.items() if test(n, c)]


def blocks(cards: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every generated block by name."""
    photo_denoisers = _names(cards, lambda n, c: c.get("task") == "denoise" and c.get("dataset") != "fashion-mnist")
    gaussian = [n for n in photo_denoisers if "gaussian" in str(cards[n].get("corruption"))]
    colorizers = _names(cards, lambda n, c: c.get("task") == "colorize")
    inpainters = _names(cards, lambda n, c: c.get("task") == "inpaint")
    fashion = _names(cards, lambda n, c: c.get("dataset") in ("fashion-mnist", "mnist") or c.get("task") == "vae")
    return {
        "readme-denoise": photo_table(cards, [n for n in ("denoise-gaussian", "denoise-saltpepper", "denoise-speckle")
                                              if n in cards], baselines=README_BASELINES),
        "readme-colorize": colorize_table(cards, ["colorize-squeezenet", "colorize"]),
        "readme-inpaint": photo_table(cards, ["inpaint"], hole=True, baselines=README_BASELINES),
        "readme-vae": vae_table(cards, [n for n in ("vae-fashion",) if n in cards]),
        "denoise-gaussian": photo_table(cards, gaussian),
        "denoise-other": photo_table(cards, [n for n in photo_denoisers if n not in gaussian]),
        "colorize": colorize_table(cards, colorizers),
        "inpaint": photo_table(cards, inpainters, hole=True),
        "fashion": photo_table(cards, [n for n in fashion if cards[n].get("task") == "denoise"]),
        "vae": vae_table(cards, [n for n in fashion if cards[n].get("task") == "vae"]),
        "mnist": mnist_table(cards, [n for n in fashion if cards[n].get("task") == "vae"]),
    }


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with each ``<!-- results:NAME -->...<!-- /results:NAME -->`` block replaced."""
    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in generated:
            raise KeyError(f"unknown results block {name!r}; known: {', '.join(sorted(generated))}")
        return f"<!-- results:{name} -->\n{generated[name]}\n<!-- /results:{name} -->"

    return re.sub(r"<!-- results:([\w-]+) -->.*?<!-- /results:\1 -->", replace, text, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated block is out of date")
    args = parser.parse_args(argv)
    generated = blocks(load_cards())
    stale = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        new = render(text, generated)
        if new != text:
            stale.append(path.relative_to(REPO).as_posix())
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python eval/results_table.py", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not args.check else "results tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
