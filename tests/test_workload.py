"""The embedded workload against references: exact sampling, Sinkhorn, smoothing, health."""

from __future__ import annotations

import math
import threading
from collections import Counter

import numpy as np
import numpy.typing as npt
import pytest

from mhc_monitor.alerts import AlertConfig
from mhc_monitor.workload import StepReport, Workload, run_workload
from mhc_monitor.workload.mhc import (
    amax_stability,
    ball_distance,
    doubly_stochastic_error,
    geodesic_curvature,
    sinkhorn_knopp,
)
from mhc_monitor.workload.ngram import CharNgramModel, load_training_text, train_char_model
from mhc_monitor.workload.speculative import speculative_step

FloatArray = npt.NDArray[np.float64]

# A binomial count this many standard deviations from its mean fails (p < 1e-5).
Z_BOUND = 4.5

# ---------------------------------------------------------------------------------------------
# (1) Speculative sampling emits the target law; acceptance is sum(min(p, q)).

SAMPLER_CASES = [
    ("abc", [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]),
    ("abc", [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]),
    ("abcd", [0.25, 0.25, 0.25, 0.25], [0.4, 0.3, 0.2, 0.1]),
    ("abcd", [0.05, 0.05, 0.1, 0.8], [0.6, 0.2, 0.1, 0.1]),
    ("abcde", [0.1, 0.2, 0.3, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]),
    ("abcde", [0.0, 0.5, 0.0, 0.5, 0.0], [0.3, 0.1, 0.3, 0.1, 0.2]),
]


def _run_sampler(
    vocab: str, p: list[float], q: list[float], draft_tokens: int, trials: int
) -> tuple[Counter[str], Counter[int], Counter[str]]:
    target = np.array(p)
    draft = np.array(q)
    rng = np.random.default_rng(20240601)
    first: Counter[str] = Counter()
    accepted: Counter[int] = Counter()
    bonus: Counter[str] = Counter()
    for _ in range(trials):
        result = speculative_step(
            lambda _ctx: target, lambda _ctx: draft, "", vocab, draft_tokens, rng
        )
        first[result.text[0]] += 1
        accepted[result.accepted] += 1
        if result.accepted == draft_tokens:
            bonus[result.text[-1]] += 1
    return first, accepted, bonus


def _within_binomial(count: int, trials: int, prob: float) -> bool:
    spread = Z_BOUND * math.sqrt(trials * prob * (1.0 - prob))
    return abs(count - trials * prob) <= spread


@pytest.mark.parametrize(("vocab", "p", "q"), SAMPLER_CASES)
def test_first_emitted_token_follows_target(vocab: str, p: list[float], q: list[float]) -> None:
    trials = 20_000
    first, accepted, _ = _run_sampler(vocab, p, q, 1, trials)

    for token, prob in zip(vocab, p, strict=True):
        assert _within_binomial(first[token], trials, prob), (token, first[token], prob)
    alpha = float(np.minimum(p, q).sum())
    assert _within_binomial(accepted[1], trials, alpha), (accepted[1], alpha)


@pytest.mark.parametrize(("vocab", "p", "q"), SAMPLER_CASES[:3])
def test_accepted_run_length_is_geometric(vocab: str, p: list[float], q: list[float]) -> None:
    # With context-free laws each drafted token survives independently with prob alpha.
    trials, draft_tokens = 20_000, 4
    first, accepted, bonus = _run_sampler(vocab, p, q, draft_tokens, trials)
    alpha = float(np.minimum(p, q).sum())

    for run in range(draft_tokens + 1):
        prob = alpha**run * ((1.0 - alpha) if run < draft_tokens else 1.0)
        assert _within_binomial(accepted[run], trials, prob), (run, accepted[run], prob)
    full = accepted[draft_tokens]
    for token, prob in zip(vocab, p, strict=True):
        assert _within_binomial(first[token], trials, prob), (token, first[token], prob)
        # The bonus token after a fully accepted draft comes from the target alone.
        assert _within_binomial(bonus[token], full, prob), (token, bonus[token], full, prob)


def test_step_emits_accepted_plus_one_tokens() -> None:
    rng = np.random.default_rng(5)
    target = np.array([0.6, 0.4])
    draft = np.array([0.5, 0.5])
    for _ in range(200):
        result = speculative_step(lambda _c: target, lambda _c: draft, "x", "ab", 3, rng)
        assert len(result.text) == result.accepted + 1
        assert result.drafted == 3
        assert result.acceptance == result.accepted / 3


# ---------------------------------------------------------------------------------------------
# (2) Sinkhorn-Knopp and the Amax stability.


def _reference_sinkhorn(matrix: FloatArray) -> FloatArray:
    """Log-domain scaling run far past convergence: the unique doubly stochastic D1 A D2."""
    log_a = np.log(matrix)
    u = np.zeros(matrix.shape[0])
    v = np.zeros(matrix.shape[1])
    for _ in range(5000):
        u = -np.log(np.exp(log_a + v[None, :]).sum(axis=1))
        v = -np.log(np.exp(log_a + u[:, None]).sum(axis=0))
    result: FloatArray = np.exp(log_a + u[:, None] + v[None, :])
    return result


@pytest.mark.parametrize(("seed", "scale"), [(0, 0.1), (1, 0.5), (2, 1.0), (3, 2.0)])
@pytest.mark.parametrize("size", [3, 4, 6])
def test_sinkhorn_matches_reference(seed: int, scale: float, size: int) -> None:
    matrix = np.exp(scale * np.random.default_rng(seed).normal(size=(size, size)))
    result = sinkhorn_knopp(matrix, tol=1e-9, max_iters=500)

    assert result.converged
    assert 1 <= result.iterations <= 500
    np.testing.assert_allclose(result.matrix.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(result.matrix.sum(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose(result.matrix, _reference_sinkhorn(matrix), atol=1e-8)
    assert result.error == doubly_stochastic_error(result.matrix)


def test_sinkhorn_stops_at_the_cap() -> None:
    matrix = np.exp(12.0 * np.random.default_rng(7).normal(size=(4, 4)))
    result = sinkhorn_knopp(matrix, tol=1e-12, max_iters=3)
    assert result.iterations == 3
    assert not result.converged
    assert result.error > 1e-12


def test_sinkhorn_leaves_a_doubly_stochastic_matrix_alone() -> None:
    uniform = np.full((4, 4), 0.25)
    result = sinkhorn_knopp(uniform)
    assert result.iterations == 0
    assert np.array_equal(result.matrix, uniform)


def test_sinkhorn_rejects_non_positive_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        sinkhorn_knopp(np.eye(4))


PERMUTATION = np.eye(4)[[2, 0, 3, 1]]


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (np.eye(4), 1.0),
        (PERMUTATION, 1.0),
        (PERMUTATION @ PERMUTATION @ PERMUTATION, 1.0),
        (np.full((4, 4), 0.25), 1.0),
        (np.full((4, 4), 0.25) @ PERMUTATION, 1.0),
        (np.diag([2.0, 1.0, 1.0, 1.0]), 0.5),
        (np.diag([0.5, 1.0, 1.0, 1.0]), 0.5),
        (np.full((4, 4), 0.25 * 1.25), 0.8),
        (np.full((4, 4), 0.25 * 0.8), 0.8),
        (np.diag([1.0, 1.0, 1.0, 0.0]), 0.0),
        (-PERMUTATION, 1.0),
    ],
)
def test_amax_stability(matrix: FloatArray, expected: float) -> None:
    assert amax_stability(matrix) == pytest.approx(expected, abs=1e-15)


def test_stability_of_a_perturbed_product_is_below_one() -> None:
    rng = np.random.default_rng(11)
    exact = np.eye(4)
    for _ in range(4):
        exact = (
            sinkhorn_knopp(np.exp(rng.normal(size=(4, 4))), tol=1e-14, max_iters=500).matrix
            @ exact
        )
    perturbed = exact.copy()
    perturbed[0, 0] += 0.05
    rows, cols = perturbed.sum(axis=1), perturbed.sum(axis=0)
    reference = 1.0 / max(rows.max(), cols.max(), 1.0 / rows.min(), 1.0 / cols.min())

    assert amax_stability(exact) == pytest.approx(1.0, abs=1e-12)
    assert amax_stability(perturbed) == pytest.approx(reference, abs=1e-15)
    assert amax_stability(perturbed) < 0.96


# ---------------------------------------------------------------------------------------------
# Poincaré ball geometry against closed forms at the origin.


@pytest.mark.parametrize("radius", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_ball_distance_from_origin(radius: float) -> None:
    point = np.array([radius, 0.0, 0.0])
    assert ball_distance(np.zeros(3), point) == pytest.approx(2.0 * math.atanh(radius))


@pytest.mark.parametrize(("a", "b"), [(0.3, 0.3), (0.2, 0.6), (0.5, 0.9)])
def test_geodesic_curvature_closed_forms(a: float, b: float) -> None:
    origin = np.zeros(2)
    length = math.atanh(a) + math.atanh(b)  # mean of 2 artanh(a) and 2 artanh(b)
    straight = geodesic_curvature(np.array([-a, 0.0]), origin, np.array([b, 0.0]))
    right_angle = geodesic_curvature(np.array([-a, 0.0]), origin, np.array([0.0, b]))
    reverse = geodesic_curvature(np.array([a, 0.0]), origin, np.array([b, 0.0]))

    assert straight == pytest.approx(0.0, abs=1e-7)
    assert right_angle == pytest.approx((math.pi / 2) / length)
    assert reverse == pytest.approx(math.pi / length)


# ---------------------------------------------------------------------------------------------
# (3) Interpolated absolute-discounting smoothing.

SMALL_TEXT = "the cat sat on the mat. the hat is flat. a cat ate the rat that sat."


def _reference_distribution(text: str, order: int, discount: float, context: str) -> list[float]:
    """The smoothing formula written out with Counters, one order at a time."""
    vocab = sorted(set(text))
    dist = {ch: 1.0 / len(vocab) for ch in vocab}
    history = context[-(order - 1) :] if order > 1 else ""
    for k in range(len(history) + 1):
        h = history[len(history) - k :]
        followers = Counter(text[i + k] for i in range(len(text) - k) if text[i : i + k] == h)
        total = sum(followers.values())
        if total == 0:
            continue
        backoff = discount * len(followers) / total
        dist = {
            ch: max(followers[ch] - discount, 0.0) / total + backoff * dist[ch] for ch in vocab
        }
    return [dist[ch] for ch in vocab]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "context",
    ["", "t", "th", "the", "cat", "xyz", "zq", "at.", " s", "the cat sat", "qth", "a qt", "tq "],
)
def test_smoothing_matches_reference(order: int, context: str) -> None:
    model = train_char_model(SMALL_TEXT, order, discount=0.6)
    expected = _reference_distribution(SMALL_TEXT, order, 0.6, context)
    np.testing.assert_allclose(model.distribution(context), expected, rtol=1e-12, atol=1e-15)


@pytest.fixture(scope="module")
def corpus_model() -> tuple[str, CharNgramModel]:
    text = load_training_text(500_000)
    return text, train_char_model(text, 7)


@pytest.mark.parametrize(
    "context", ["qqqqqq", "Zyxwvq", "~~~~k~", "@@@@@@", "he!!!X", "th\u00e9 "]
)
def test_unseen_context_backs_off(corpus_model: tuple[str, CharNgramModel], context: str) -> None:
    text, model = corpus_model
    assert context not in text
    assert not model.seen(context)

    dist = model.distribution(context)
    assert dist.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(dist > 0.0)
    assert dist.max() > 5.0 / model.size  # far from uniform
    seen = max(k for k in range(len(context) + 1) if k == 0 or context[-k:] in text)
    np.testing.assert_array_equal(dist, model.truncated(seen + 1).distribution(context))


def test_temperature_sharpens_and_normalises() -> None:
    model = train_char_model(SMALL_TEXT, 3)
    plain = model.distribution("th")
    sharp = model.distribution("th", temperature=0.5)
    expected = plain**2 / (plain**2).sum()
    np.testing.assert_allclose(sharp, expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# (4) Healthy versus degraded engine, judged by the default thresholds.

STEPS = 300


def _means(reports: list[StepReport]) -> dict[str, float]:
    names = ("acceptance", "latency_ms", "sinkhorn_iters", "stability", "energy", "curvature")
    return {name: float(np.mean([getattr(r, name) for r in reports])) for name in names}


@pytest.fixture(scope="module")
def healthy_means() -> dict[str, float]:
    workload = Workload(seed=0)
    return _means([workload.step() for _ in range(STEPS)])


@pytest.fixture(scope="module")
def degraded_means() -> dict[str, float]:
    workload = Workload(seed=0)
    workload.degrade()
    return _means([workload.step() for _ in range(STEPS)])


def test_healthy_engine_reads_info_on_every_metric(healthy_means: dict[str, float]) -> None:
    config = AlertConfig()
    assert config.acceptance_rate_warning is not None
    assert config.latency_warning_ms is not None
    assert config.stability_warning is not None
    assert config.energy_warning is not None
    assert config.curvature_warning is not None

    assert healthy_means["acceptance"] >= 0.75
    assert healthy_means["acceptance"] > config.acceptance_rate_warning
    assert healthy_means["latency_ms"] < config.latency_warning_ms / 2
    assert healthy_means["stability"] > config.stability_warning
    assert healthy_means["energy"] < config.energy_warning / 2
    assert abs(healthy_means["curvature"]) < config.curvature_warning / 2
    assert healthy_means["sinkhorn_iters"] < 20


def test_degraded_engine_is_critical_on_acceptance(
    healthy_means: dict[str, float], degraded_means: dict[str, float]
) -> None:
    config = AlertConfig()
    assert config.acceptance_rate_critical is not None
    assert degraded_means["acceptance"] < config.acceptance_rate_critical
    assert degraded_means["sinkhorn_iters"] > healthy_means["sinkhorn_iters"]
    assert degraded_means["stability"] < healthy_means["stability"]


def test_workload_steps_are_consistent_and_reproducible() -> None:
    first, second = Workload(seed=3, draft_tokens=5), Workload(seed=3, draft_tokens=5)
    for _ in range(30):
        a, b = first.step(), second.step()
        assert (a.text, a.accepted, a.stability, a.energy) == (
            b.text,
            b.accepted,
            b.stability,
            b.energy,
        )
        assert a.drafted == 5
        assert a.acceptance == a.accepted / 5
        assert len(a.text) == a.accepted + 1
        assert a.latency_ms > 0.0
        assert first.context.endswith(a.text)


def test_degrade_and_recover_flip_the_state() -> None:
    workload = Workload(seed=1)
    assert not workload.degraded
    workload.degrade()
    assert workload.degraded
    workload.recover()
    assert not workload.degraded


def test_context_is_capped() -> None:
    workload = Workload(seed=2)
    for _ in range(400):
        workload.step()
    assert len(workload.context) == 1024


@pytest.mark.parametrize("draft_tokens", [0, -1])
def test_draft_tokens_must_be_positive(draft_tokens: int) -> None:
    with pytest.raises(ValueError, match="draft_tokens"):
        Workload(draft_tokens=draft_tokens)


# ---------------------------------------------------------------------------------------------
# (5) run_workload records one value per metric per step.


class RecordingMonitor:
    """The six record calls, collecting what they are given."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {
            name: []
            for name in ("acceptance", "latency", "sinkhorn", "stability", "energy", "curvature")
        }

    def record_acceptance(self, rate: float) -> None:
        self.values["acceptance"].append(rate)

    def record_latency(self, ms: float) -> None:
        self.values["latency"].append(ms)

    def record_sinkhorn_iters(self, n: int) -> None:
        self.values["sinkhorn"].append(n)

    def record_stability(self, s: float) -> None:
        self.values["stability"].append(s)

    def record_energy(self, e: float) -> None:
        self.values["energy"].append(e)

    def record_curvature(self, c: float) -> None:
        self.values["curvature"].append(c)


def test_run_workload_records_one_value_per_metric_per_step() -> None:
    monitor = RecordingMonitor()
    reports: list[StepReport] = []
    steps = run_workload(
        monitor, stop=threading.Event(), seed=4, max_steps=25, on_step=reports.append
    )

    assert steps == 25
    assert monitor.values == {
        "acceptance": [r.acceptance for r in reports],
        "latency": [r.latency_ms for r in reports],
        "sinkhorn": [r.sinkhorn_iters for r in reports],
        "stability": [r.stability for r in reports],
        "energy": [r.energy for r in reports],
        "curvature": [r.curvature for r in reports],
    }


def test_run_workload_stops_when_told() -> None:
    stop = threading.Event()
    monitor = RecordingMonitor()

    def stop_after_five(report: StepReport) -> None:
        if len(monitor.values["acceptance"]) == 5:
            stop.set()

    assert run_workload(monitor, stop=stop, max_steps=1000, on_step=stop_after_five) == 5
    assert all(len(values) == 5 for values in monitor.values.values())


def test_run_workload_degrades_after_the_delay() -> None:
    reports: list[StepReport] = []
    run_workload(
        RecordingMonitor(),
        stop=threading.Event(),
        degrade_after=0.0,
        seed=6,
        max_steps=20,
        on_step=reports.append,
    )
    reference = Workload(seed=6)
    reference.degrade()
    assert [r.text for r in reports] == [reference.step().text for _ in range(20)]


def test_run_workload_recovers_after_the_delay() -> None:
    reports: list[StepReport] = []
    run_workload(
        RecordingMonitor(),
        stop=threading.Event(),
        degrade_after=0.0,
        recover_after=0.0,
        seed=6,
        max_steps=20,
        on_step=reports.append,
    )
    # Both switches fall due before the first step: it degrades, then recovers at once.
    reference = Workload(seed=6)
    assert [r.text for r in reports] == [reference.step().text for _ in range(20)]


def test_run_workload_without_a_delay_never_degrades() -> None:
    reports: list[StepReport] = []
    run_workload(
        RecordingMonitor(), stop=threading.Event(), seed=6, max_steps=20, on_step=reports.append
    )
    reference = Workload(seed=6)
    assert [r.text for r in reports] == [reference.step().text for _ in range(20)]
