"""The command line every ``eval/`` script shares: one parser builder.

Why one place: ``--weights``, ``--device``, ``--out``, ``--seed``,
``--update-card``, ``--data``, ``--limit`` and ``--quiet`` mean the same in
every evaluation script (same spelling, type and default unless a script says
otherwise), and a script's ``--help`` is laid out like the others'.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: The shared flags: name -> (option string, argparse settings). A script may update the settings
#: (its own default or help) but not the meaning.
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "weights": ("--weights", {"metavar": "NAME|FILE", "help": "shipped weights name or .safetensors file"}),
    "data": ("--data", {"help": "folder of the IDX files (default: $RESTORE_FASHION_MNIST or the Debian package)"}),
    "seed": ("--seed", {"type": int, "default": 0, "help": "base seed (default 0)"}),
    "out": ("--out", {"type": Path, "help": "output folder"}),
    "limit": ("--limit", {"type": int, "help": "use only the first N images (quick runs)"}),
    "device": ("--device", {"default": "cpu", "help": "torch device (default cpu)"}),
    "update_card": ("--update-card", {"action": "store_true",
                                      "help": "record the figures and this command in the model card"}),
    "quiet": ("--quiet", {"action": "store_true", "help": "no progress output"}),
}


def eval_parser(doc: str | None, script: str, **flags: bool | dict[str, Any]) -> argparse.ArgumentParser:
    """The parser of ``python eval/<script>.py`` with the shared flags named in ``flags``.

    ``doc`` (the script's docstring): its first paragraph is the description,
    the rest (examples, outputs) the epilog. Each keyword names a flag of
    `FLAGS`, in the order given: ``True`` adds it as defined there, a dict
    adds it with those settings updated (``seed={"help": "..."}``), ``False``
    leaves it out. A script adds its own flags to the returned parser.
    """
    parts = (doc or "").strip().split("\n\n", 1)
    p = argparse.ArgumentParser(prog=f"python eval/{script}.py", description=parts[0] or None,
                                epilog=parts[1] if len(parts) > 1 else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, setting in flags.items():
        if name not in FLAGS:
            raise TypeError(f"eval_parser: unknown shared flag {name!r}; shared flags: {', '.join(FLAGS)}")
        if setting is False:
            continue
        option, kwargs = FLAGS[name]
        p.add_argument(option, **{**kwargs, **(setting if isinstance(setting, dict) else {})})
    return p
