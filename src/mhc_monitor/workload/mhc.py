"""A small mHC block (manifold-constrained hyper-connections) and its geometric readings.

The block carries n = 4 residual streams of width 16 through 4 layers. Each layer
mixes the streams with a matrix H = Sinkhorn-Knopp(exp(logits)), whose logits are a
fixed random projection of the step's context vector, and adds the output of a
small tanh layer fed by the mean of the streams. The readings of one forward pass:

- sinkhorn_iters: the largest number of Sinkhorn-Knopp iterations any layer needed to
  bring every row and column sum within `tol` of 1 (capped at `max_iters`); one
  iteration normalises the rows, then the columns.
- stability: 1 / G for the composite mixing product P = H_4 H_3 H_2 H_1, where the
  Amax gain G = max(max row abs-sum, max column abs-sum, 1 / min row abs-sum,
  1 / min column abs-sum) of P; it lies in [0, 1] and is exactly 1.0 when every row
  and column of P sums to 1 (a doubly stochastic product), lower as P amplifies or
  attenuates a signal.
- energy: the squared Frobenius norm of the 4 output streams, sum over streams of
  their squared Euclidean norms.
- curvature: the discrete geodesic curvature of the path that the context embeddings
  of the last three steps trace in the Poincaré ball of curvature -c (c = 1): the
  turning angle at the middle point (pi minus the angle between the geodesics to
  its neighbours, measured in its tangent space) divided by the mean hyperbolic
  length of the two segments; 0 along a geodesic, larger as the path bends.

The context vector is an exponentially decayed sum of fixed random character
embeddings over the last 32 characters; it is mapped into the ball with the
exponential map at the origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MhcBlock",
    "MhcReading",
    "SinkhornResult",
    "amax_stability",
    "ball_distance",
    "doubly_stochastic_error",
    "expmap0",
    "geodesic_curvature",
    "mobius_add",
    "sinkhorn_knopp",
]

FloatArray = npt.NDArray[np.float64]

STREAMS = 4
WIDTH = 16
LAYERS = 4
CONTEXT_CHARS = 32
DECAY = 0.85


@dataclass(frozen=True, slots=True, eq=False)
class SinkhornResult:
    """A Sinkhorn-Knopp projection: the matrix, the iterations used, and its residual error."""

    matrix: FloatArray
    iterations: int
    error: float
    converged: bool


def doubly_stochastic_error(matrix: FloatArray) -> float:
    """The largest distance of any row or column sum of `matrix` from 1."""
    rows = np.abs(matrix.sum(axis=1) - 1.0).max()
    cols = np.abs(matrix.sum(axis=0) - 1.0).max()
    return float(max(rows, cols))


def sinkhorn_knopp(
    matrix: FloatArray, *, tol: float = 1e-6, max_iters: int = 20
) -> SinkhornResult:
    """Scale a positive square matrix towards doubly stochastic by alternate normalisation.

    Stops as soon as every row and column sum is within `tol` of 1 (0 iterations for
    an input already there) or after `max_iters` iterations, whichever comes first.
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"Sinkhorn-Knopp needs a square matrix, got shape {matrix.shape}")
    if not np.all(matrix > 0.0):
        raise ValueError("Sinkhorn-Knopp needs strictly positive entries")
    scaled = np.array(matrix, dtype=np.float64)
    error = doubly_stochastic_error(scaled)
    iterations = 0
    while error > tol and iterations < max_iters:
        scaled /= scaled.sum(axis=1, keepdims=True)
        scaled /= scaled.sum(axis=0, keepdims=True)
        iterations += 1
        error = doubly_stochastic_error(scaled)
    return SinkhornResult(scaled, iterations, error, error <= tol)


def amax_stability(matrix: FloatArray) -> float:
    """1 / Amax gain of `matrix`: 1.0 exactly when all row and column abs-sums are 1.

    The gain is the largest of the max row and column absolute sums (amplification)
    and the reciprocals of the min ones (attenuation); a zero row or column gives 0.
    """
    magnitude = np.abs(matrix)
    rows = magnitude.sum(axis=1)
    cols = magnitude.sum(axis=0)
    smallest = float(min(rows.min(), cols.min()))
    if smallest <= 0.0:
        return 0.0
    gain = max(float(rows.max()), float(cols.max()), 1.0 / smallest)
    return 1.0 / gain


def mobius_add(x: FloatArray, y: FloatArray, c: float = 1.0) -> FloatArray:
    """Möbius addition x ⊕ y in the Poincaré ball of curvature -c."""
    xy = float(x @ y)
    xx = float(x @ x)
    yy = float(y @ y)
    numerator = (1.0 + 2.0 * c * xy + c * yy) * x + (1.0 - c * xx) * y
    result: FloatArray = numerator / (1.0 + 2.0 * c * xy + c * c * xx * yy)
    return result


def expmap0(v: FloatArray, c: float = 1.0) -> FloatArray:
    """The exponential map at the origin of the Poincaré ball: a tangent vector to a point."""
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        return np.zeros_like(v)
    root = math.sqrt(c)
    result: FloatArray = math.tanh(root * norm) * v / (root * norm)
    return result


def ball_distance(x: FloatArray, y: FloatArray, c: float = 1.0) -> float:
    """The hyperbolic distance 2 / sqrt(c) * artanh(sqrt(c) * |(-x) ⊕ y|)."""
    root = math.sqrt(c)
    gap = float(np.linalg.norm(mobius_add(-x, y, c)))
    return 2.0 / root * math.atanh(min(root * gap, 1.0 - 1e-15))


def geodesic_curvature(
    before: FloatArray, middle: FloatArray, after: FloatArray, c: float = 1.0
) -> float:
    """Turning angle at `middle` over the mean hyperbolic length of the two segments.

    The ball is conformal, so the angle between the geodesics is the Euclidean angle
    between (-middle) ⊕ before and (-middle) ⊕ after, the directions of the
    logarithmic map at `middle`. A repeated point (zero-length path) reads 0.
    """
    back = mobius_add(-middle, before, c)
    ahead = mobius_add(-middle, after, c)
    length = 0.5 * (ball_distance(middle, before, c) + ball_distance(middle, after, c))
    norms = float(np.linalg.norm(back) * np.linalg.norm(ahead))
    if length <= 0.0 or norms <= 0.0:
        return 0.0
    cosine = max(-1.0, min(1.0, float(back @ ahead) / norms))
    turning = math.pi - math.acos(cosine)
    return turning / length


@dataclass(frozen=True, slots=True)
class MhcReading:
    """The readings of one forward pass of the mHC block."""

    sinkhorn_iters: int
    stability: float
    energy: float
    curvature: float


class MhcBlock:
    """A seeded mHC block; `forward(text)` runs it on the context and returns its readings.

    `logit_scale` sets how sharp the mixing logits are: a larger scale makes the
    projections harder for Sinkhorn-Knopp, so it needs more iterations and, past the
    cap, leaves the composite product further from doubly stochastic.
    """

    def __init__(
        self,
        vocab: str,
        *,
        seed: int = 0,
        logit_scale: float = 1.0,
        tol: float = 1e-6,
        max_iters: int = 20,
        c: float = 1.0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.logit_scale = logit_scale
        self.tol = tol
        self.max_iters = max_iters
        self.c = c
        self._index = {ch: i for i, ch in enumerate(vocab)}
        self._embeddings = rng.normal(0.0, 1.0 / math.sqrt(WIDTH), (len(vocab), WIDTH))
        self._decay = DECAY ** np.arange(CONTEXT_CHARS)[::-1]
        self._decay /= self._decay.sum()
        self._mixing = rng.normal(0.0, 1.0, (LAYERS, STREAMS * STREAMS, WIDTH))
        self._layers = rng.normal(0.0, 1.0 / math.sqrt(WIDTH), (LAYERS, WIDTH, WIDTH))
        self._path: list[FloatArray] = []

    def context_vector(self, text: str) -> FloatArray:
        """The Euclidean context vector: a decayed sum of the last characters' embeddings."""
        ids = [self._index[ch] for ch in text[-CONTEXT_CHARS:] if ch in self._index]
        if not ids:
            return np.zeros(WIDTH)
        vectors = self._embeddings[ids]
        weighted: FloatArray = self._decay[-len(ids) :] @ vectors
        return weighted * math.sqrt(WIDTH)

    def start_path(self, *texts: str) -> None:
        """Seed the curvature path with the context embeddings of earlier `texts`."""
        self._path = [expmap0(self.context_vector(text), self.c) for text in texts[-2:]]

    def forward(self, text: str) -> MhcReading:
        """Run the block on the context `text` and read its geometry."""
        vector = self.context_vector(text)
        streams = np.tile(vector, (STREAMS, 1))
        composite = np.eye(STREAMS)
        slowest = 0
        for layer in range(LAYERS):
            logits = (self._mixing[layer] @ vector).reshape(STREAMS, STREAMS)
            mixing = sinkhorn_knopp(
                np.exp(self.logit_scale * logits), tol=self.tol, max_iters=self.max_iters
            )
            slowest = max(slowest, mixing.iterations)
            composite = mixing.matrix @ composite
            update = np.tanh(streams.mean(axis=0) @ self._layers[layer])
            streams = mixing.matrix @ streams + update / STREAMS

        return MhcReading(
            sinkhorn_iters=slowest,
            stability=amax_stability(composite),
            energy=float(np.sum(streams * streams)),
            curvature=self._curvature(expmap0(vector, self.c)),
        )

    def _curvature(self, point: FloatArray) -> float:
        self._path = [*self._path[-2:], point]
        if len(self._path) < 3:
            # Before three points exist the path has no bend to measure.
            return 0.0
        return geodesic_curvature(self._path[0], self._path[1], self._path[2], self.c)
