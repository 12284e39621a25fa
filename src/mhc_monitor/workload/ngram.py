"""Character n-gram language models with interpolated absolute-discounting smoothing.

A model of order n predicts the next character from the previous n - 1. Its
probability for character w after history h interpolates every order down to a
uniform floor (Ney, Essen and Kneser's interpolated absolute discounting):

    P_k(w | h) = max(c(h, w) - D, 0) / c(h) + D * N1+(h) / c(h) * P_{k-1}(w | h')

where h' drops the oldest character of h, c(h) counts h in training, N1+(h) is
the number of distinct characters seen after h, and P_{-1} is uniform over the
vocabulary. A history never seen in training passes its lower order through
unchanged, so an unseen context backs off to the longest seen suffix instead of
collapsing to uniform.

Counts are kept as sorted numpy arrays of n-gram keys (the history and the next
character as one base-V integer), so one look-up is two binary searches per order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_DISCOUNT",
    "CharNgramModel",
    "load_training_text",
    "train_char_model",
]

#: The absolute discount D subtracted from every seen count.
DEFAULT_DISCOUNT = 0.75

# Keys are history * V + next in int64; the highest order must fit with room to spare.
_KEY_LIMIT = 2**62

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class _OrderCounts:
    """Sorted n-gram keys and their counts for one history length."""

    keys: IntArray
    counts: FloatArray


@dataclass(frozen=True, slots=True, eq=False)
class CharNgramModel:
    """A trained character model; `distribution(context)` is the next-character law.

    Build one with `train_char_model`. The model is immutable and safe to share
    between threads and workloads.
    """

    order: int
    vocab: str
    discount: float
    _index: dict[str, int]
    _levels: tuple[_OrderCounts, ...]

    @property
    def size(self) -> int:
        """The number of characters in the vocabulary."""
        return len(self.vocab)

    def truncated(self, order: int) -> CharNgramModel:
        """The same counts used only up to `order`: a smaller model sharing the arrays."""
        if not 1 <= order <= self.order:
            raise ValueError(f"order must lie in [1, {self.order}], got {order}")
        return CharNgramModel(order, self.vocab, self.discount, self._index, self._levels[:order])

    def encode(self, text: str) -> list[int]:
        """Character indices of `text`; a character outside the vocabulary maps to -1."""
        index = self._index
        return [index.get(ch, -1) for ch in text]

    def seen(self, context: str) -> bool:
        """Whether `context` (as a whole history) occurred in training before a character."""
        ids = self.encode(context)
        if -1 in ids or len(ids) >= self.order:
            return False
        return self._history_total(len(ids), self._history_id(ids)) > 0.0

    def distribution(self, context: str, temperature: float = 1.0) -> FloatArray:
        """The smoothed next-character distribution after `context`, summing to 1.

        Only the last `order - 1` characters count. A `temperature` below 1 sharpens
        the law (p ** (1 / T), renormalised), as a sampler would.
        """
        history = self.order - 1
        ids = self.encode(context[-history:]) if history else []
        dist = self._interpolated(ids)
        if temperature != 1.0:
            dist = dist ** (1.0 / temperature)
            dist /= dist.sum()
        return dist

    def _interpolated(self, ids: list[int]) -> FloatArray:
        size = self.size
        dist = np.full(size, 1.0 / size)
        for k in range(len(ids) + 1):
            if k > 0 and ids[-k] < 0:
                # A character never seen in training: this history and every longer one are
                # unseen, so the lower orders stand.
                break
            history = self._history_id(ids[len(ids) - k :])
            level = self._levels[k]
            lo, hi = np.searchsorted(level.keys, [history * size, (history + 1) * size])
            if hi == lo:
                # An unseen history passes the lower order through unchanged.
                continue
            followers = level.keys[lo:hi] - history * size
            counts = level.counts[lo:hi]
            total = float(counts.sum())
            backoff = self.discount * (hi - lo) / total
            dist = dist * backoff
            dist[followers] += np.maximum(counts - self.discount, 0.0) / total
        return dist

    def _history_id(self, ids: list[int]) -> int:
        history = 0
        for i in ids:
            history = history * self.size + i
        return history

    def _history_total(self, k: int, history: int) -> float:
        level = self._levels[k]
        lo, hi = np.searchsorted(level.keys, [history * self.size, (history + 1) * self.size])
        return float(level.counts[lo:hi].sum())


def train_char_model(
    text: str, order: int, *, discount: float = DEFAULT_DISCOUNT, vocab: str | None = None
) -> CharNgramModel:
    """Count every n-gram of `text` up to `order` and return the smoothed model.

    `vocab` fixes the character set (so two models can share indices); by default it
    is the sorted set of characters in `text`. Characters outside it are dropped.
    """
    if order < 1:
        raise ValueError(f"n-gram order must be at least 1, got {order}")
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must lie strictly between 0 and 1, got {discount}")
    alphabet = vocab if vocab is not None else "".join(sorted(set(text)))
    size = len(alphabet)
    if size == 0 or size**order >= _KEY_LIMIT:
        raise ValueError(f"vocabulary of {size} characters cannot be used at order {order}")

    index = {ch: i for i, ch in enumerate(alphabet)}
    ids = np.fromiter((index[ch] for ch in text if ch in index), dtype=np.int64)
    levels = []
    for k in range(order):
        # Key of the n-gram ending at position t: its k-character history, then the character.
        keys = np.zeros(max(len(ids) - k, 0), dtype=np.int64)
        for j in range(k + 1):
            keys = keys * size + ids[j : len(ids) - k + j]
        unique, counts = np.unique(keys, return_counts=True)
        levels.append(_OrderCounts(unique, counts.astype(np.float64)))
    return CharNgramModel(order, alphabet, discount, index, tuple(levels))


@functools.cache
def load_training_text(max_chars: int) -> str:
    """The first `max_chars` characters of CPython's bundled pydoc topics, normalised.

    The text ships with every CPython, so training needs no download. Topics are
    joined in sorted order so the slice is the same on every run; rule lines (one
    repeated character, such as "=====") are dropped, whitespace runs become one
    space and non-ASCII characters are removed, so the models learn prose and code
    rather than layout.
    """
    from pydoc_data.topics import topics

    joined = "\n".join(topics[name] for name in sorted(topics))
    lines = [line for line in joined.splitlines() if len(set(line.strip())) > 1]
    flat = " ".join(" ".join(lines).split())
    return flat.encode("ascii", errors="ignore").decode("ascii")[:max_chars]
