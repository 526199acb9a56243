"""Random streams: the one source of randomness of corruptions and masks, owned and saved by their user.

A corruption draws its noise from a generator on the image's device and its
masks from a CPU stream (OpenCV draws them); `RandomStreams` holds both as one
object that the trainer creates, passes to what draws from it and saves in the
checkpoint, so a resumed run sees the same noise and masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["RandomStreams", "cpu_uniform", "make_generator", "resolve_generator", "resolve_streams"]


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: the only source of randomness here."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"make_generator: seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"make_generator: seed must be in [0, 2**64), got {seed}")
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed)
    return gen


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        cur = torch.cuda.current_device()
        return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)
    return a.index == b.index or a.index is None or b.index is None


def resolve_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    if generator is None:
        # Seeded from torch's global RNG so torch.manual_seed() makes unseeded calls reproducible.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        return make_generator(seed, device)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not _same_device(generator.device, device):
        raise ValueError(
            f"generator is on {generator.device} but the image is on {device}; "
            f"create it with make_generator(seed, image.device)"
        )
    return generator


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _is_fresh(generator: torch.Generator) -> bool:
    """True if the generator is exactly as manual_seed(initial_seed) left it (never drawn from)."""
    probe = torch.Generator(device=generator.device)
    probe.manual_seed(generator.initial_seed())
    return torch.equal(generator.get_state(), probe.get_state())


def _seeded_cpu(seed: int) -> torch.Generator:
    stream = torch.Generator()
    stream.manual_seed(seed)
    return stream


class RandomStreams:
    """The random state one consumer draws from, as one object its owner creates, passes and saves.

    ``generator`` (on the device) draws noise and per-image parameters; ``masks``
    (a CPU stream) draws mask strokes. Masks get their own stream because CPU
    (MT19937) and CUDA (Philox) generators give different numbers for one seed:
    seeded from the seed alone, the same seed yields the same masks on CPU and
    GPU. The trainer owns one per rank and checkpoints `state_dict`, so a resumed
    run draws the same noise and strokes; `apply` makes one per call.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.generator = make_generator(seed, device)
        self.masks = _seeded_cpu(_splitmix64(int(seed)))

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def manual_seed(self, seed: int) -> "RandomStreams":
        """Restart both streams from ``seed`` (as a new ``RandomStreams(seed, device)``)."""
        self.generator.manual_seed(int(seed))
        self.masks.manual_seed(_splitmix64(int(seed)))
        return self

    def mask_stream(self) -> torch.Generator:
        """The CPU stream for the next mask draw; the device generator advances by one draw per use
        (as it always has, so a seed's noise after a mask step is unchanged)."""
        torch.empty(1, device=self.generator.device).uniform_(generator=self.generator)
        return self.masks

    def state_dict(self) -> dict[str, Tensor]:
        """Both states as CPU tensors (``task``, ``mask_stream``: the checkpoint's keys since format 1)."""
        return {"task": self.generator.get_state(), "mask_stream": self.masks.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`; a checkpoint written before any mask was drawn has no ``mask_stream``:
        the stream then starts from the generator's seed, as it would have."""
        self.generator.set_state(state["task"].cpu())
        if state.get("mask_stream") is None:
            self.masks.manual_seed(_splitmix64(self.generator.initial_seed()))
        else:
            self.masks.set_state(state["mask_stream"].cpu())

    @classmethod
    def for_generator(cls, generator: torch.Generator) -> "RandomStreams":
        """Streams for one call given a bare generator: noise from ``generator`` itself, masks from a
        stream seeded from its seed when it is fresh (so ``make_generator(s)`` gives ``RandomStreams(s)``'s
        masks), else from a seed drawn from it (a later call gets new masks; reseeding repeats them).
        Pass a `RandomStreams` to continue one mask stream across calls independently of the device."""
        streams = cls.__new__(cls)
        streams.generator = generator
        if _is_fresh(generator):
            seed = _splitmix64(generator.initial_seed())
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        streams.masks = _seeded_cpu(seed)
        return streams


def resolve_streams(random: torch.Generator | RandomStreams | None, device: torch.device) -> RandomStreams:
    if isinstance(random, RandomStreams):
        resolve_generator(random.generator, device)  # the device check
        return random
    return RandomStreams.for_generator(resolve_generator(random, device))


def cpu_uniform(stream: torch.Generator, n: int) -> list[float]:
    return torch.rand(n, generator=stream, dtype=torch.float64).tolist()
