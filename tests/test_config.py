"""Configuration files: values, secrets, and problems reported with their line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mhc_monitor.alerts import AlertConfig
from mhc_monitor.config import (
    DEFAULT_PAGERDUTY_URL,
    Secret,
    check_config,
    load_config,
    send_test_alert,
)
from mhc_monitor.errors import ConfigError, DeliveryError, UsageError
from receivers import PagerDutyReceiver

KEY = "abcdefABCDEF0123456789abcdef0123"

FULL = """\
[labels]
model = "llama-3-8b"
instance = "gpu-0"

[monitor]
window = 500

[thresholds.acceptance]
warning = 0.75
statistic = "p50"
clear_margin = 0.02
for = 30

[thresholds.sinkhorn_iterations]
warning = 20
critical = 50
emergency = "off"

[lifecycle]
repeat_interval = 600
no_data_after = 0
interval = 0.5

[delivery]
timeout = 3

[receivers.oncall]
type = "pagerduty"
url = "http://127.0.0.1:1/v2/enqueue"
routing_key_file = "pd.key"

[receivers.slack]
channel = "#llm"

[service]
port = 9000
store = "/var/lib/mhc/alerts.sqlite3"
"""


def write(tmp_path: Path, text: str, name: str = "mhc.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_full_file_loads(tmp_path: Path) -> None:
    (tmp_path / "pd.key").write_text(KEY + "\n")
    env = {"MHC_SLACK_WEBHOOK_URL": "https://hooks.example/services/T/B/x"}
    settings = load_config(write(tmp_path, FULL), env)
    assert settings.alert_config == AlertConfig(
        acceptance_rate_warning=0.75,
        sinkhorn_iters_warning=20,
        sinkhorn_iters_critical=50,
        sinkhorn_iters_emergency=None,
        statistics={"acceptance": "p50"},
    )
    assert settings.alert_config.statistic("acceptance") == "p50"
    life = settings.alerting.lifecycle
    assert (life.for_of("acceptance"), life.for_of("latency")) == (30.0, 0.0)
    assert (life.margin_of("acceptance"), life.margin_of("latency")) == (0.02, 0.05)
    assert (life.repeat_interval_s, life.no_data_after_s) == (600.0, None)
    assert settings.alerting.interval_s == 0.5
    assert settings.alerting.delivery.timeout_s == 3.0
    oncall, slack = settings.alerting.receivers
    assert (oncall.name, oncall.kind, oncall.url) == (
        "oncall",
        "pagerduty",
        "http://127.0.0.1:1/v2/enqueue",
    )
    assert oncall.secret == Secret(KEY)
    assert (slack.name, slack.kind, slack.channel) == ("slack", "slack", "#llm")
    assert slack.secret == Secret(env["MHC_SLACK_WEBHOOK_URL"])
    assert dict(settings.labels) == {"model": "llama-3-8b", "instance": "gpu-0"}
    assert (settings.window, settings.service.port) == (500, 9000)
    assert settings.service.store_path == "/var/lib/mhc/alerts.sqlite3"


def test_an_empty_file_means_defaults_and_the_log(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, ""), {})
    assert settings.alert_config == AlertConfig()
    assert [r.kind for r in settings.alerting.effective_receivers()] == ["log"]
    assert settings.service.host == "127.0.0.1"


def test_secrets_from_the_environment_switch_receivers_on(tmp_path: Path) -> None:
    env = {"MHC_PAGERDUTY_ROUTING_KEY": KEY, "MHC_INGEST_TOKEN": "tok"}
    settings = load_config(write(tmp_path, ""), env)
    (pd,) = settings.alerting.receivers
    assert (pd.kind, pd.url, pd.secret) == ("pagerduty", DEFAULT_PAGERDUTY_URL, Secret(KEY))
    assert settings.service.token == Secret("tok")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[lifecycle]\nfor = -1\n", ["2: lifecycle.for: Input should be greater than or equal"]),
        ("\n\n[lifecycle]\nrepeat_intervall = 5\n", ["4: lifecycle.repeat_intervall: Extra"]),
        (
            "[thresholds.latency]\nwarning = 200\n",
            ["2: thresholds.latency.warning: latency_warning_ms=200"],
        ),
        ('[thresholds.acceptance]\nstatistic = "p42"\n', ["2: thresholds.acceptance.statistic:"]),
        ("[thresholds.speed]\nwarning = 1\n", ["1: thresholds.speed: Extra inputs"]),
        ('[receivers.pagerduty]\nurl = "http://x/"\n', ["1: receivers.pagerduty: no routing key"]),
        ("[receivers.pd2]\n", ["1: receivers.pd2.type: say which kind"]),
        # A key named like a pydantic union tag ("int...") keeps its place.
        ("[lifecycle]\ninterval = 0\n", ["2: lifecycle.interval: Input should be greater than 0"]),
        (
            '[receivers."Bad Name"]\ntype = "log"\n',
            ["1: receivers.Bad Name: not a valid name: String should match pattern"],
        ),
        ("[[service]]\nport = 1\n", ["1: service: Input should be a valid dictionary"]),
        (
            '[receivers.slack]\nrouting_key_file = "k"\nurl = "https://hooks.example/x"\n',
            ["2: receivers.slack.routing_key_file: not a key of a slack receiver"],
        ),
        ("[lifecycle]\nfor = true\n", ["2: lifecycle.for: Input should be a valid number"]),
        ('[lifecycle]\nfor = "5"\n', ["2: lifecycle.for: Input should be a valid number"]),
        ('[service]\nstore = ""\n', ["2: service.store: String should have at least 1"]),
        (
            "[delivery]\nbackoff_initial = 100\nbackoff_max = 1\n",
            ["2: delivery.backoff_initial: 100 s must not exceed backoff_max (1 s)"],
        ),
        (
            '[labels]\nmodel = "m"\n"bad-name" = "x"\nmetric = "y"\n',
            [
                "3: labels.bad-name: not a valid Prometheus label name",
                "4: labels.metric: reserved by the exposition",
            ],
        ),
        (
            "[labels]\n" + "".join(f'l{i} = "v"\n' for i in range(17)),
            ["1: labels: at most 16 constant labels, got 17"],
        ),
        (
            "[service]\nport = 70000\n[delivery]\ntimeout = 0\n",
            [
                "2: service.port: Input should be less",
                "4: delivery.timeout: Input should be greater",
            ],
        ),
    ],
)
def test_problems_name_their_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == len(expected)
    for line, want in zip(lines, expected, strict=True):
        assert line.startswith(f"{path}:{want}"), line
        assert "_Service" not in line
    ok, printed = check_config(path, {})
    assert not ok and printed == lines


def test_toml_syntax_errors_name_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[lifecycle]\nfor = = 1\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_config(path, {})


def test_a_bad_routing_key_is_described_not_shown(tmp_path: Path) -> None:
    marker = "NOT-A-KEY-marker-9f8e7d"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ""), {"MHC_PAGERDUTY_ROUTING_KEY": marker})
    assert "32 ASCII letters and digits" in str(caught.value)
    assert marker not in str(caught.value) and marker not in repr(caught.value)


def test_secret_repr_and_str_hide_the_value() -> None:
    secret = Secret("hunter2")
    assert (repr(secret), str(secret), f"{secret}") == ("Secret('***')", "***", "***")
    assert secret.reveal() == "hunter2"


def test_check_config_warns_about_readable_secret_files(tmp_path: Path) -> None:
    key = tmp_path / "pd.key"
    key.write_text(KEY)
    os.chmod(key, 0o644)
    path = write(tmp_path, '[receivers.pagerduty]\nrouting_key_file = "pd.key"\n')
    ok, lines = check_config(path, {})
    assert ok
    assert any(line.startswith(f"warning: {key} is readable by group or others") for line in lines)
    os.chmod(key, 0o600)
    ok, lines = check_config(path, {})
    assert ok and not any(line.startswith("warning") for line in lines)
    assert KEY not in "\n".join(lines)


def test_send_test_alert_sends_a_trigger_and_its_resolve(tmp_path: Path) -> None:
    with PagerDutyReceiver() as pagerduty:
        path = write(tmp_path, f'[receivers.pagerduty]\nurl = "{pagerduty.url}"\n')
        settings = load_config(path, {"MHC_PAGERDUTY_ROUTING_KEY": KEY})
        result = send_test_alert(settings, "pagerduty")
        assert result == "pagerduty: trigger delivered (HTTP 202); resolve delivered (HTTP 202)"
        actions = [(e["event_action"], e["dedup_key"]) for e in pagerduty.accepted()]
        assert [a for a, _ in actions] == ["trigger", "resolve"]
        assert actions[0][1] == actions[1][1]
        pagerduty.fail_next(2, status=400)
        with pytest.raises(DeliveryError, match="permanent: client_error"):
            send_test_alert(settings, "pagerduty")
        with pytest.raises(UsageError, match="no receiver named 'slack'"):
            send_test_alert(settings, "slack")
