"""The Alertmanager configuration: the real Alertmanager 0.25 loads, routes and inhibits."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mhc_monitor.alertmanager_config import (
    NULL_RECEIVER,
    PAGERDUTY_RECEIVER,
    SLACK_RECEIVER,
    WEBHOOK_RECEIVER,
    generate_alertmanager_config,
)
from mhc_monitor.alerts import AlertConfig
from mhc_monitor.errors import ConfigError, UsageError
from mhc_monitor.rules import ALERTS_GROUP, generate_rules

ALERTMANAGER = shutil.which("prometheus-alertmanager")
AMTOOL = shutil.which("amtool")
needs_alertmanager = pytest.mark.skipif(ALERTMANAGER is None, reason="Alertmanager missing")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool missing")

SECRET_KEY = "R0UT1NG-KEY-SECRET-0123456789abcdef"
SECRET_URL = "https://hooks.slack.invalid/services/T000/B000/SECRETSECRET"


@dataclass(frozen=True)
class Secrets:
    """Files holding the secrets, as an operator would provide them."""

    key_file: str
    url_file: str


@pytest.fixture
def secrets(tmp_path: Path) -> Secrets:
    key_file = tmp_path / "pagerduty.key"
    url_file = tmp_path / "slack.url"
    key_file.write_text(SECRET_KEY + "\n")
    url_file.write_text(SECRET_URL + "\n")
    return Secrets(str(key_file), str(url_file))


def _full_config(secrets: Secrets) -> str:
    return generate_alertmanager_config(
        pagerduty_routing_key_file=secrets.key_file,
        slack_webhook_url_file=secrets.url_file,
        webhook_url="http://127.0.0.1:9/mhc",
        slack_channel="#mhc-alerts",
    )


def test_secrets_are_referenced_by_path_only(secrets: Secrets) -> None:
    text = _full_config(secrets)
    assert SECRET_KEY not in text and SECRET_URL not in text
    receivers = {r["name"]: r for r in yaml.safe_load(text)["receivers"]}
    pagerduty = receivers[PAGERDUTY_RECEIVER]["pagerduty_configs"][0]
    slack = receivers[SLACK_RECEIVER]["slack_configs"][0]
    assert pagerduty["routing_key_file"] == secrets.key_file
    assert "routing_key" not in pagerduty and "service_key" not in pagerduty
    assert slack["api_url_file"] == secrets.url_file and "api_url" not in slack
    assert slack["channel"] == "#mhc-alerts"


def test_route_groups_by_alertname_metric_and_instance(secrets: Secrets) -> None:
    route = yaml.safe_load(_full_config(secrets))["route"]
    assert route["group_by"] == ["alertname", "metric", "instance"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "30s",
        "300s",
        "14400s",
    )


def test_group_timings_are_configurable() -> None:
    text = generate_alertmanager_config(
        pagerduty_routing_key_file=None,
        slack_webhook_url_file=None,
        webhook_url="http://127.0.0.1:9/hook",
        group_wait_seconds=0.5,
        group_interval_seconds=1,
        repeat_interval_seconds=600,
    )
    route = yaml.safe_load(text)["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "500ms",
        "1s",
        "600s",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_wait_seconds": -1}, "duration"),
        ({"group_interval_seconds": 0}, "group_interval must be positive"),
        ({"repeat_interval_seconds": 0}, "repeat_interval must be positive"),
        ({"repeat_interval_seconds": math.inf}, "duration"),
    ],
)
def test_bad_group_timings_raise_usage_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        generate_alertmanager_config(
            pagerduty_routing_key_file=None,
            slack_webhook_url_file=None,
            webhook_url=None,
            **kwargs,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"webhook_url": "ftp://x/y"}, "absolute http"),
        ({"webhook_url": "/relative"}, "absolute http"),
        ({"pagerduty_routing_key_file": " "}, "pagerduty_routing_key_file"),
        ({"slack_webhook_url_file": ""}, "slack_webhook_url_file"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "pagerduty_routing_key_file": None,
        "slack_webhook_url_file": None,
        "webhook_url": None,
        **kwargs,
    }
    with pytest.raises(ConfigError, match=message):
        generate_alertmanager_config(**arguments)


@needs_amtool
def test_amtool_check_config(tmp_path: Path, secrets: Secrets) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(_full_config(secrets))
    assert AMTOOL is not None
    result = subprocess.run(
        [AMTOOL, "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "3 inhibit rules" in result.stdout


# Which receiver each severity reaches, for each set of configured receivers.
ROUTING_TABLE = [
    (
        ("pagerduty", "slack", "webhook"),
        {
            "critical": PAGERDUTY_RECEIVER,
            "error": PAGERDUTY_RECEIVER,
            "warning": SLACK_RECEIVER,
            "info": WEBHOOK_RECEIVER,
            "none": WEBHOOK_RECEIVER,
        },
    ),
    (
        ("pagerduty", "slack"),
        {
            "critical": PAGERDUTY_RECEIVER,
            "error": PAGERDUTY_RECEIVER,
            "warning": SLACK_RECEIVER,
            "info": NULL_RECEIVER,
            "none": NULL_RECEIVER,
        },
    ),
    (
        ("slack",),
        {
            "critical": SLACK_RECEIVER,
            "error": SLACK_RECEIVER,
            "warning": SLACK_RECEIVER,
            "info": NULL_RECEIVER,
            "none": NULL_RECEIVER,
        },
    ),
    (
        ("webhook",),
        {
            "critical": WEBHOOK_RECEIVER,
            "error": WEBHOOK_RECEIVER,
            "warning": WEBHOOK_RECEIVER,
            "info": WEBHOOK_RECEIVER,
            "none": WEBHOOK_RECEIVER,
        },
    ),
    (
        (),
        {
            "critical": NULL_RECEIVER,
            "error": NULL_RECEIVER,
            "warning": NULL_RECEIVER,
            "info": NULL_RECEIVER,
            "none": NULL_RECEIVER,
        },
    ),
]


def _config_with(receivers: tuple[str, ...], secrets: Secrets) -> str:
    return generate_alertmanager_config(
        pagerduty_routing_key_file=secrets.key_file if "pagerduty" in receivers else None,
        slack_webhook_url_file=secrets.url_file if "slack" in receivers else None,
        webhook_url="http://127.0.0.1:9/mhc" if "webhook" in receivers else None,
    )


@needs_amtool
@pytest.mark.parametrize(("receivers", "expected"), ROUTING_TABLE)
def test_severities_reach_their_receivers(
    tmp_path: Path, secrets: Secrets, receivers: tuple[str, ...], expected: dict[str, str]
) -> None:
    """Alertmanager's own routing (amtool config routes test) on the generated tree."""
    path = tmp_path / "alertmanager.yml"
    path.write_text(_config_with(receivers, secrets))
    assert AMTOOL is not None
    for severity, receiver in expected.items():
        labels = ["alertname=MhcLatencyWarning", "metric=latency", "instance=a"]
        if severity != "none":
            labels.append(f"severity={severity}")
        result = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={path}", *labels],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == receiver, (severity, result.stdout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def alertmanager(tmp_path: Path, secrets: Secrets) -> Iterator[str]:
    """A real Alertmanager on a loopback port with the generated config; yields its URL."""
    assert ALERTMANAGER is not None
    config = tmp_path / "alertmanager.yml"
    config.write_text(_full_config(secrets))
    port = _free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _rule_labels(name: str) -> dict[str, str]:
    """The labels that the generated rule of that name puts on its alerts."""
    groups = yaml.safe_load(generate_rules(AlertConfig()))["groups"]
    rules = next(group["rules"] for group in groups if group["name"] == ALERTS_GROUP)
    labels: dict[str, str] = next(rule["labels"] for rule in rules if rule["alert"] == name)
    return {"alertname": name, **labels}


@needs_alertmanager
def test_real_alertmanager_loads_the_config_and_inhibits_lower_levels(alertmanager: str) -> None:
    status = httpx.get(f"{alertmanager}/api/v2/status", timeout=5).json()
    assert status["config"]["original"].count("inhibit_rules") == 1
    assert SECRET_KEY not in status["config"]["original"]
    receivers = {
        r["name"] for r in httpx.get(f"{alertmanager}/api/v2/receivers", timeout=5).json()
    }
    assert receivers == {NULL_RECEIVER, PAGERDUTY_RECEIVER, SLACK_RECEIVER, WEBHOOK_RECEIVER}

    # Instance a: warning and critical of latency; instance b: warning of latency only;
    # instance a: warning of acceptance (another metric, so not inhibited).
    warning = _rule_labels("MhcLatencyWarning")
    critical = _rule_labels("MhcLatencyCritical")
    other_metric = _rule_labels("MhcAcceptanceWarning")
    assert warning["severity"] == "warning" and critical["severity"] == "error"
    assert warning["metric"] == critical["metric"]
    posted = [
        {**warning, "instance": "a"},
        {**critical, "instance": "a"},
        {**warning, "instance": "b"},
        {**other_metric, "instance": "a"},
    ]
    response = httpx.post(
        f"{alertmanager}/api/v2/alerts", json=[{"labels": labels} for labels in posted], timeout=5
    )
    assert response.status_code == 200, response.text

    expected = {
        ("MhcLatencyWarning", "a"): "suppressed",
        ("MhcLatencyCritical", "a"): "active",
        ("MhcLatencyWarning", "b"): "active",
        ("MhcAcceptanceWarning", "a"): "active",
    }
    deadline = time.monotonic() + 15
    while True:
        alerts = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        states = {
            (a["labels"]["alertname"], a["labels"]["instance"]): a["status"]["state"]
            for a in alerts
        }
        if states == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert states == expected
    inhibited = next(
        a
        for a in alerts
        if a["labels"]["alertname"] == "MhcLatencyWarning" and a["labels"]["instance"] == "a"
    )
    assert inhibited["status"]["inhibitedBy"] and not inhibited["status"]["silencedBy"]


def test_a_slack_channel_without_a_slack_webhook_is_refused() -> None:
    with pytest.raises(UsageError, match="slack_channel needs slack_webhook_url_file"):
        generate_alertmanager_config(
            pagerduty_routing_key_file=None,
            slack_webhook_url_file=None,
            webhook_url=None,
            slack_channel="#x",
        )


def test_the_cli_writes_secret_paths_absolute(tmp_path: Path) -> None:
    """Alertmanager 0.25 reads a relative path from its working folder, not the file's."""
    (tmp_path / "secrets").mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mhc_monitor",
            "alertmanager-config",
            "--pagerduty-routing-key-file",
            "secrets/pd.key",
            "--slack-webhook-url-file",
            "/run/secrets/slack.url",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    receivers = {r["name"]: r for r in yaml.safe_load(done.stdout)["receivers"]}
    pagerduty = receivers["mhc-pagerduty"]["pagerduty_configs"][0]
    slack = receivers["mhc-slack"]["slack_configs"][0]
    assert pagerduty["routing_key_file"] == str(tmp_path / "secrets" / "pd.key")
    assert slack["api_url_file"] == "/run/secrets/slack.url"
