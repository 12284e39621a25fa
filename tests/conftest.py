"""Shared fixtures: the cases file, free loopback ports."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from receivers import PagerDutyReceiver, SlackReceiver

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MHC_SHARED_DIR", ROOT.parent / "shared"))


def load_cases() -> dict[str, dict[str, Any]]:
    """The cases of ../shared/cases/cases.json by kind."""
    data = json.loads((SHARED / "cases" / "cases.json").read_text())
    return {case["kind"]: case for case in data["cases"]}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def cases() -> dict[str, dict[str, Any]]:
    return load_cases()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under `scripts/test`, a skipped test is a failure: CI must run every end-to-end test."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("MHC_REQUIRE_ALL_TESTS") == "1" and report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but every test must run here: {reason}"


# Local receivers enforcing PagerDuty's and Slack's contracts: one server per test module,
# emptied of records and faults before each test.


@pytest.fixture(scope="module")
def pagerduty_server() -> Iterator[PagerDutyReceiver]:
    with PagerDutyReceiver() as receiver:
        yield receiver


@pytest.fixture
def pagerduty(pagerduty_server: PagerDutyReceiver) -> PagerDutyReceiver:
    """The module's PagerDuty receiver, with no records or faults left by an earlier test."""
    pagerduty_server.reset()
    return pagerduty_server


@pytest.fixture(scope="module")
def slack_server() -> Iterator[SlackReceiver]:
    with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
def slack(slack_server: SlackReceiver) -> SlackReceiver:
    """The module's Slack receiver, with no records or faults left by an earlier test."""
    slack_server.reset()
    return slack_server
