"""The embedded demo engine: speculative decoding plus an mHC block, one step at a time.

The target is an order-7 character model of CPython's pydoc topics and the healthy
draft is its order-6 truncation, both sampled at temperature 0.8. `degrade()`
swaps in the order-2 truncation as the draft, which agrees with the target far less
often, and sharpens the mHC mixing logits (scale 0.3 to 16) so Sinkhorn-Knopp runs
into its iteration cap and leaves the composite mixing further from doubly
stochastic. Every reading is measured on the step it reports:

- acceptance: accepted / drafted tokens of the step's speculative round (see
  `speculative`); drafted is `draft_tokens` (4 by default).
- latency: the wall time of `step()`, the speculative round plus the mHC forward
  pass, measured with `time.perf_counter` in milliseconds.
- sinkhorn_iters, stability, energy, curvature: the mHC block's readings (see `mhc`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .mhc import MhcBlock
from .ngram import CharNgramModel, load_training_text, train_char_model
from .speculative import speculative_step

__all__ = ["Recorder", "StepReport", "Workload", "run_workload"]

logger = logging.getLogger(__name__)

TRAINING_CHARS = 500_000
TARGET_ORDER = 7
DRAFT_ORDER = 6
DEGRADED_DRAFT_ORDER = 2
TEMPERATURE = 0.8
LOGIT_SCALE = 0.3
DEGRADED_LOGIT_SCALE = 16.0
CONTEXT_LIMIT = 1024
SEED_CHARS = 64


class Recorder(Protocol):
    """Anything with the monitor's six record calls, such as GeometricSpeculationMonitor."""

    def record_acceptance(self, rate: float, /) -> None:
        """Record one acceptance rate in [0, 1]."""

    def record_latency(self, ms: float, /) -> None:
        """Record one step latency in milliseconds."""

    def record_sinkhorn_iters(self, n: int, /) -> None:
        """Record one Sinkhorn-Knopp iteration count."""

    def record_stability(self, s: float, /) -> None:
        """Record one stability reading in [0, 1]."""

    def record_energy(self, e: float, /) -> None:
        """Record one energy reading."""

    def record_curvature(self, c: float, /) -> None:
        """Record one curvature reading."""


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one step of the workload measured, and the text it emitted."""

    acceptance: float
    latency_ms: float
    sinkhorn_iters: int
    stability: float
    energy: float
    curvature: float
    accepted: int
    drafted: int
    text: str


@functools.cache
def _target_model() -> CharNgramModel:
    # Trained once per process: the model is immutable and every workload shares it.
    started = time.perf_counter()
    model = train_char_model(load_training_text(TRAINING_CHARS), TARGET_ORDER)
    logger.debug(
        "trained the order-%d target in %.3f s", TARGET_ORDER, time.perf_counter() - started
    )
    return model


class Workload:
    """A speculative decoder with an mHC block; `step()` runs one step and reports it.

    Not thread-safe except for `degrade()` and `recover()`, which only flip which
    draft and mixing sharpness the next step uses.
    """

    def __init__(self, *, seed: int = 0, draft_tokens: int = 4) -> None:
        if draft_tokens < 1:
            raise ValueError(f"draft_tokens must be at least 1, got {draft_tokens}")
        self.draft_tokens = draft_tokens
        self._rng = np.random.default_rng(seed)
        self._target = _target_model()
        self._healthy_draft = self._target.truncated(DRAFT_ORDER)
        self._weak_draft = self._target.truncated(DEGRADED_DRAFT_ORDER)
        self._degraded = False
        self._block = MhcBlock(self._target.vocab, seed=seed, logit_scale=LOGIT_SCALE)

        corpus = load_training_text(TRAINING_CHARS)
        start = int(self._rng.integers(0, len(corpus) - SEED_CHARS))
        self._text = corpus[start : start + SEED_CHARS]
        self._block.start_path(self._text[:-8], self._text[:-4])

    @property
    def degraded(self) -> bool:
        """Whether the weak draft and the sharpened mixing are in use."""
        return self._degraded

    @property
    def context(self) -> str:
        """The rolling context: the latest generated text, at most 1024 characters."""
        return self._text

    def degrade(self) -> None:
        """Switch to the order-2 draft and sharpen the mixing logits from the next step on."""
        self._degraded = True
        self._block.logit_scale = DEGRADED_LOGIT_SCALE

    def recover(self) -> None:
        """Return to the healthy draft and mixing from the next step on."""
        self._degraded = False
        self._block.logit_scale = LOGIT_SCALE

    def step(self) -> StepReport:
        """Run one speculative step and one mHC forward pass, timing both together."""
        started = time.perf_counter()
        draft = self._weak_draft if self._degraded else self._healthy_draft
        result = speculative_step(
            functools.partial(self._target.distribution, temperature=TEMPERATURE),
            functools.partial(draft.distribution, temperature=TEMPERATURE),
            self._text,
            self._target.vocab,
            self.draft_tokens,
            self._rng,
        )
        self._text = (self._text + result.text)[-CONTEXT_LIMIT:]
        reading = self._block.forward(self._text)
        latency_ms = (time.perf_counter() - started) * 1000.0

        return StepReport(
            acceptance=result.acceptance,
            latency_ms=latency_ms,
            sinkhorn_iters=reading.sinkhorn_iters,
            stability=reading.stability,
            energy=reading.energy,
            curvature=reading.curvature,
            accepted=result.accepted,
            drafted=result.drafted,
            text=result.text,
        )


def run_workload(
    monitor: Recorder,
    *,
    stop: threading.Event,
    degrade_after: float | None = None,
    recover_after: float | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    on_step: Callable[[StepReport], None] | None = None,
) -> int:
    """Step a fresh workload into `monitor` until `stop` is set or `max_steps` ran.

    Each step records one value per metric through the monitor's public record
    calls. `degrade_after` seconds after the start the workload degrades once, and
    `recover_after` seconds after the start (if given, and once degraded) it
    recovers. Returns the number of steps run.
    """
    workload = Workload(seed=seed)
    started = time.monotonic()
    steps = 0
    while not stop.is_set() and (max_steps is None or steps < max_steps):
        if degrade_after is not None and time.monotonic() - started >= degrade_after:
            workload.degrade()
            logger.info("workload degraded after %d steps (%.1f s)", steps, degrade_after)
            degrade_after = None
        if (
            recover_after is not None
            and workload.degraded
            and time.monotonic() - started >= recover_after
        ):
            workload.recover()
            logger.info("workload recovered after %d steps (%.1f s)", steps, recover_after)
            recover_after = None

        report = workload.step()
        monitor.record_acceptance(report.acceptance)
        monitor.record_latency(report.latency_ms)
        monitor.record_sinkhorn_iters(report.sinkhorn_iters)
        monitor.record_stability(report.stability)
        monitor.record_energy(report.energy)
        monitor.record_curvature(report.curvature)
        if on_step is not None:
            on_step(report)
        steps += 1
    return steps
