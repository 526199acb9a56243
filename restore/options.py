"""Typed restoring options: one dataclass per task, shared by the CLI, the Python API and the app.

Why dataclasses with metadata: each option is declared once (name, type,
default, help, bounds) and from that one declaration come the API keyword
(``model(img, tile=256)``), the CLI flag (``--tile 256``), the validation and
the error message. A bad value raises `OptionError` (a ``ValueError``) whose
text names the option as the user typed it; the CLI turns it into exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from restore.tiling import ENSEMBLES

__all__ = ["OptionError", "Options", "PhotoOptions", "add_arguments", "option"]

O = TypeVar("O", bound="Options")


class OptionError(ValueError):
    """A restoring option has a bad name or value (the CLI exits with status 2)."""


def option(default: Any, help: str, *, kind: type | None = None, choices: tuple[Any, ...] | None = None,
           minimum: float | None = None, optional: bool = False, metavar: str | None = None,
           flag: bool = False) -> Any:
    """Declare one option: its default, help text, type (``kind``; from ``default`` when omitted),
    allowed ``choices``, ``minimum``, whether ``None`` is allowed (``optional``: "use the model
    card's value"), and whether the CLI spells it as a switch (``flag``: ``--uncertainty``)."""
    kind = kind or type(default)
    return field(default=default, metadata={
        "help": help, "kind": kind, "choices": choices, "minimum": minimum, "optional": optional or default is None,
        "metavar": metavar, "flag": flag,
    })


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Options:
    """Options every restoring task takes. Subclasses add their own fields and cross-field checks."""

    #: Name of the task the options belong to (for messages).
    task: ClassVar[str] = "restore"

    tile: int = option(512, "tile side in pixels for large images (0 = whole image at once); "
                            "memory grows with the tile, not the image", minimum=0, metavar="N")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Cross-field checks of a subclass (each field alone is already checked)."""

    @classmethod
    def create(cls: type[O], **values: Any) -> O:
        """The options from keywords; an unknown name is an `OptionError` listing the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(f"{cls.task}: unknown option{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_namespace(cls: type[O], ns: argparse.Namespace) -> O:
        """The options given on a command line (`add_arguments`); flags left out keep their defaults."""
        given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)
                 if getattr(ns, f.name, None) is not None}
        return cls.create(**given)

    def replace(self: O, **values: Any) -> O:
        return self.create(**{**dataclasses.asdict(self), **values})


def _checked(f: dataclasses.Field, value: Any) -> Any:
    meta = f.metadata
    kind, name = meta["kind"], _flag_name(f.name)
    if value is None:
        if meta["optional"]:
            return None
        raise OptionError(f"{name}: a value is required")
    if kind is bool:
        if not isinstance(value, bool):
            raise OptionError(f"{name}: expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise OptionError(f"{name}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise OptionError(f"{name}: expected a finite number, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            value = str(value)
    if meta["choices"] is not None and value not in meta["choices"]:
        raise OptionError(f"{name}: must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise OptionError(f"{name}: must be >= {meta['minimum']}, got {value!r}")
    return value


@dataclass(frozen=True)
class PhotoOptions(Options):
    """Options of the photo tasks, whose networks run on overlap-blended tiles and have no preferred
    orientation (so a self-ensemble helps)."""

    tile_overlap: int = option(32, "pixels shared by neighbouring tiles, blended linearly (at most half a tile)",
                               minimum=0, metavar="PX")
    ensemble: str = option("none", "average the network over mirrored (flip: 2 passes) or mirrored and rotated "
                                   "(x8: 8 passes) copies: more accurate, slower", choices=tuple(ENSEMBLES))


def add_arguments(parser: argparse._ActionsContainer, options_type: type[Options],
                  skip: tuple[str, ...] = ()) -> None:
    """One CLI flag per option field (defaults stay ``None`` so `Options.from_namespace` knows what was given)."""
    for f in dataclasses.fields(options_type):
        if f.name in skip:
            continue
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "the model card's" if default is None else default
        text = f"{meta['help']} (default: {shown})"
        if meta["flag"]:
            parser.add_argument(_flag_name(f.name), action="store_const", const=True, default=None, help=text)
            continue
        parser.add_argument(_flag_name(f.name), type=_parse(meta["kind"]), default=None, help=text,
                            choices=meta["choices"], metavar=meta["metavar"] if meta["choices"] is None else None)


def _parse(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
    return parse if kind in (int, float) else str
