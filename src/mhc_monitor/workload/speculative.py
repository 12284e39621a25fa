"""Speculative sampling with the exact acceptance rule (Leviathan et al.; Chen et al., 2023).

The draft model proposes k tokens one after another. Each drafted token x is
verified against the target in order: it is accepted with probability
min(1, p(x) / q(x)); on the first rejection a replacement is drawn from the
normalised residual max(0, p - q) and the rest of the draft is dropped; when all k
are accepted, one bonus token is drawn from the target. Every emitted token is then
distributed exactly as the target would have sampled it. The step's acceptance rate
is accepted / drafted tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Distribution", "SpeculativeResult", "sample", "speculative_step", "verify_token"]

FloatArray = npt.NDArray[np.float64]

#: A model's next-token law over the vocabulary, given the text so far.
Distribution = Callable[[str], FloatArray]


@dataclass(frozen=True, slots=True)
class SpeculativeResult:
    """What one speculative step emitted and how much of the draft survived."""

    text: str
    accepted: int
    drafted: int

    @property
    def acceptance(self) -> float:
        """Accepted / drafted tokens of this step, in [0, 1]."""
        return self.accepted / self.drafted


def sample(dist: FloatArray, rng: np.random.Generator) -> int:
    """One index drawn from the (possibly unnormalised) non-negative weights `dist`."""
    cumulative = np.cumsum(dist)
    # side="right" never lands on a zero-weight entry: it needs c[i-1] <= u < c[i].
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, len(dist) - 1)


def verify_token(
    p: FloatArray, q: FloatArray, token: int, rng: np.random.Generator
) -> tuple[bool, int]:
    """Verify one drafted `token` of law `q` against the target law `p`.

    Returns (True, token) with probability min(1, p[token] / q[token]), else
    (False, replacement) with the replacement drawn from max(0, p - q) normalised.
    """
    if rng.random() * q[token] < p[token]:
        return True, token
    residual = np.maximum(p - q, 0.0)
    if residual.sum() <= 0.0:
        # Only reachable through rounding when p == q; the target law is then exact.
        return False, sample(p, rng)
    return False, sample(residual, rng)


def speculative_step(
    target: Distribution,
    draft: Distribution,
    context: str,
    vocab: str,
    draft_tokens: int,
    rng: np.random.Generator,
) -> SpeculativeResult:
    """Draft `draft_tokens` tokens after `context`, verify them, and return what was emitted.

    `vocab[i]` is the token of index i in both models' distributions.
    """
    if draft_tokens < 1:
        raise ValueError(f"draft_tokens must be at least 1, got {draft_tokens}")

    drafted: list[tuple[int, FloatArray]] = []
    prefix = context
    for _ in range(draft_tokens):
        q = draft(prefix)
        token = sample(q, rng)
        drafted.append((token, q))
        prefix += vocab[token]

    emitted = context
    for accepted, (token, q) in enumerate(drafted):
        ok, chosen = verify_token(target(emitted), q, token, rng)
        emitted += vocab[chosen]
        if not ok:
            return SpeculativeResult(emitted[len(context) :], accepted, draft_tokens)

    emitted += vocab[sample(target(emitted), rng)]
    return SpeculativeResult(emitted[len(context) :], draft_tokens, draft_tokens)
