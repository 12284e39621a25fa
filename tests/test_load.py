"""A bounded load run against a real `mhc-monitor serve` on loopback.

Concurrent senders post columnar batches to `POST /v1/samples` for
MHC_LOAD_SECONDS (default 5 s; 60 s with MHC_LONG_PROPERTIES=1) while a scraper
reads `/metrics` every second. No request may fail, every reply must count
exactly the samples its batch should keep, and at the end the histograms on
`/metrics` must have counted every accepted sample. Request latencies (p50,
p99) and throughput are printed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port

LONG = os.environ.get("MHC_LONG_PROPERTIES") == "1"
SECONDS = float(os.environ.get("MHC_LOAD_SECONDS") or (60 if LONG else 5))
SENDERS = 8
BATCH = 1000
START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Body:
    """A pre-encoded batch and what the sidecar must answer to it."""

    content: bytes
    accepted: int
    rejected: dict[str, int]


def make_bodies(n: int) -> list[Body]:
    """Columnar batches: latency, acceptance and energy, with a few bad samples each."""
    rng = np.random.default_rng(7)
    bodies = []
    for _ in range(n):
        latency = rng.uniform(0, 600, BATCH).tolist()
        acceptance = rng.uniform(0, 1, BATCH // 10).tolist()
        energy = rng.uniform(0, 2000, BATCH // 10).tolist()
        batch = {
            "latency_ms": [*latency, -1.0],  # one out of range
            "acceptance": [*acceptance, "0.5"],  # one of the wrong type
            "energy": energy,
            "sinkhorn_iters": [3, 4.5],  # one fractional
        }
        accepted = len(latency) + len(acceptance) + len(energy) + 1
        rejected = {"invalid_type": 1, "not_an_integer": 1, "out_of_range": 1}
        bodies.append(Body(orjson.dumps(batch), accepted, rejected))
    return bodies


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[str]:
    """`mhc-monitor serve` in a subprocess on a free loopback port; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHC_")}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mhc_monitor",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--store",
            ":memory:",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mhc-monitor serve did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@dataclass
class Run:
    """What the senders and the scraper saw."""

    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    scrapes: int = 0
    scraped_counts: list[float] = field(default_factory=list)


def histogram_counts(text: str) -> dict[str, float]:
    """`_count` of every histogram and the rejected counters, by series name."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_count") and family.type == "histogram":
                found[s.name] = s.value
            elif s.name == "mhc_samples_rejected_total":
                key = f"rejected:{s.labels['reason']}"
                found[key] = found.get(key, 0.0) + s.value
    return found


async def send(http: httpx.AsyncClient, bodies: list[Body], run: Run, stop: float, n: int) -> None:
    headers = {"content-type": "application/json"}
    i = n
    while time.monotonic() < stop:
        body = bodies[i % len(bodies)]
        i += SENDERS
        started = time.perf_counter()
        try:
            r = await http.post("/v1/samples", content=body.content, headers=headers)
        except httpx.HTTPError as exc:
            run.errors.append(f"sender {n}: {exc!r}")
            continue
        run.latencies.append(time.perf_counter() - started)
        if r.status_code != 200:
            run.errors.append(f"sender {n}: {r.status_code} {r.text[:200]}")
            continue
        reply = r.json()
        run.accepted += reply["accepted"]
        for reason, count in reply["rejected_by_reason"].items():
            run.rejected[reason] = run.rejected.get(reason, 0) + count
        if reply["accepted"] != body.accepted or reply["rejected_by_reason"] != body.rejected:
            run.errors.append(f"sender {n}: reply {reply} for a batch of {body.accepted}")


async def scrape(http: httpx.AsyncClient, run: Run, stop: float) -> None:
    tick = time.monotonic()
    while tick < stop:
        try:
            r = await http.get("/metrics")
        except httpx.HTTPError as exc:
            run.errors.append(f"scraper: {exc!r}")
        else:
            if r.status_code != 200:
                run.errors.append(f"scraper: {r.status_code}")
            else:
                run.scraped_counts.append(histogram_counts(r.text)["mhc_latency_seconds_count"])
                run.scrapes += 1
        # Once a second on the clock, however long a scrape took: a late one catches up.
        tick += 1.0
        await asyncio.sleep(max(0.0, tick - time.monotonic()))


async def load(url: str, seconds: float) -> Run:
    run = Run()
    bodies = make_bodies(16)
    limits = httpx.Limits(max_connections=SENDERS + 1)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        stop = time.monotonic() + seconds
        await asyncio.gather(
            scrape(http, run, stop), *(send(http, bodies, run, stop, n) for n in range(SENDERS))
        )
    return run


def test_sustained_load_loses_nothing(sidecar: str, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    run = asyncio.run(load(sidecar, SECONDS))
    elapsed = time.monotonic() - started

    assert run.errors == []
    assert run.latencies, "no request completed"
    assert run.scrapes >= max(1, int(SECONDS) - 1)
    assert run.scraped_counts == sorted(run.scraped_counts), "a histogram count went down"

    final = histogram_counts(httpx.get(f"{sidecar}/metrics", timeout=10).text)
    counted = sum(v for k, v in final.items() if not k.startswith("rejected:"))
    assert counted == run.accepted
    for reason, n in run.rejected.items():
        assert final[f"rejected:{reason}"] == n
    summary = httpx.get(f"{sidecar}/v1/summary", timeout=10).json()
    assert summary["samples_accepted_over_http"] == run.accepted

    ms = np.asarray(run.latencies) * 1000
    with capsys.disabled():
        print(
            f"\nload: {SECONDS:.0f} s, {SENDERS} senders, {len(ms)} requests "
            f"({len(ms) / elapsed:.0f}/s), {run.accepted} samples "
            f"({run.accepted / elapsed:.0f}/s); request latency "
            f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
            f"max {ms.max():.1f} ms; {run.scrapes} scrapes"
        )
