"""The alerting commands through the real CLI: serve, demo, check-config, send-test-alert.

Every command runs as a subprocess of `python -m mhc_monitor`; PagerDuty and
Slack are the contract-enforcing loopback receivers of `receivers.py`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port
from mhc_monitor.alerts import make_dedup_key
from receivers import PagerDutyReceiver, SlackReceiver

pytestmark = pytest.mark.e2e

KEY = "abcdefABCDEF0123456789abcdef0123"
SLACK_PATH = "/services/T0001/B0001/s3cr3tW3bh00kT0k3n"
LABELS = {"instance": "cli-e2e", "model": "m"}
ACCEPTANCE_KEY = make_dedup_key("cli-e2e", LABELS, "acceptance")
SECRET_ENV = ("MHC_PAGERDUTY_ROUTING_KEY", "MHC_SLACK_WEBHOOK_URL", "MHC_INGEST_TOKEN")


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment without any mhc-monitor secret, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    return {**env, **extra}


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `mhc-monitor ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "mhc_monitor", *args],
        env=env or cli_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def serve_config(tmp_path: Path, receiver_url: str, port: int) -> Path:
    config = tmp_path / "mhc.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [labels]
            instance = "cli-e2e"
            model = "m"

            [monitor]
            window = 1

            [lifecycle]
            interval = 0.05
            no_data_after = 0

            [delivery]
            timeout = 1
            backoff_initial = 0.05
            backoff_max = 0.2

            [receivers.pagerduty]
            url = "{receiver_url}"
            rate_per_minute = 60000
            burst = 100

            [service]
            port = {port}
            store = "{tmp_path / "alerts.sqlite3"}"
            """
        )
    )
    return config


@contextmanager
def serving(config: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`mhc-monitor serve --config CONFIG` with the PagerDuty key in its environment."""
    log = (tmp_path / f"serve-{time.monotonic_ns()}.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mhc_monitor", "serve", "--config", str(config)],
        env=cli_env(MHC_PAGERDUTY_ROUTING_KEY=KEY),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    port = re.search(r"port = (\d+)", config.read_text())
    assert port is not None
    base = f"http://127.0.0.1:{port.group(1)}"
    try:
        wait_until(lambda: healthy(base, proc), timeout=20, what="the sidecar")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def healthy(base: str, proc: subprocess.Popen[str]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"serve exited early with {proc.returncode}")
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready within {timeout} s")
        time.sleep(0.05)


def post(base: str, body: dict[str, list[float]]) -> None:
    response = httpx.post(
        f"{base}/v1/samples",
        content=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 200, response.text


def stop(proc: subprocess.Popen[str], timeout: float = 8.0) -> tuple[int, float]:
    """SIGTERM `proc`: (exit code, seconds it took)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=timeout)
    return code, time.monotonic() - started


# -- serve ----------------------------------------------------------------------------------


def test_serve_triggers_and_resolves_one_incident_at_pagerduty(tmp_path: Path) -> None:
    with PagerDutyReceiver() as pagerduty:
        config = serve_config(tmp_path, pagerduty.url, free_port())
        with serving(config, tmp_path) as (base, proc):
            post(base, {"acceptance": [0.6]})
            assert pagerduty.wait_for(lambda r: len(r.accepted()) == 1, timeout=10)
            post(base, {"acceptance": [0.95]})
            assert pagerduty.wait_for(lambda r: len(r.accepted()) == 2, timeout=10)

            view = httpx.get(f"{base}/v1/alerts", timeout=5).json()
            metrics = httpx.get(f"{base}/metrics", timeout=5).text
            code, took = stop(proc)

        events = [(e["event_action"], e["dedup_key"]) for e in pagerduty.accepted()]
        assert events == [("trigger", ACCEPTANCE_KEY), ("resolve", ACCEPTANCE_KEY)]
        assert pagerduty.rejected() == []
        assert pagerduty.accepted()[0]["payload"]["severity"] == "warning"

    assert view["active"] == []
    assert [(h["metric"], h["state"], h["event"]) for h in view["history"]] == [
        ("acceptance", "resolved", "resolve"),
        ("acceptance", "firing", "trigger"),
    ]
    for entry in view["history"]:
        assert [(n["receiver"], n["status"]) for n in entry["notifications"]] == [
            ("pagerduty", "delivered")
        ]
    assert 'mhc_notifications_total{instance="cli-e2e",model="m",outcome="sent",' in metrics
    assert 'receiver="pagerduty"} 2.0' in metrics
    assert KEY not in metrics and KEY not in json.dumps(view)
    assert (code, took < 5) == (0, True)
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert "acceptance alert firing at warning" in log
    assert "acceptance alert resolved" in log
    assert KEY not in log and "Traceback" not in log


def test_sigterm_keeps_undelivered_notifications_for_the_next_start(tmp_path: Path) -> None:
    pagerduty = PagerDutyReceiver().start()
    pagerduty.stop()  # the port is known and refuses connections
    config = serve_config(tmp_path, pagerduty.url, free_port())
    with serving(config, tmp_path) as (base, proc):
        post(base, {"acceptance": [0.2]})

        def retried() -> bool:
            receivers = httpx.get(f"{base}/v1/alerts", timeout=5).json()["receivers"]
            return bool(receivers["pagerduty"]["outcomes"].get("retried", 0) >= 1)

        wait_until(retried, timeout=10, what="a retried delivery")
        code, took = stop(proc)
    assert (code, took < 6) == (0, True)
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert re.search(
        rf"1 undelivered notification\(s\) left in {re.escape(str(tmp_path))}/alerts.sqlite3", log
    ), log[-2000:]

    pagerduty.start()
    try:
        with serving(config, tmp_path) as (_, proc):
            assert pagerduty.wait_for(lambda r: len(r.accepted()) == 1, timeout=10)
            code, _ = stop(proc)
        assert code == 0
        (event,) = pagerduty.accepted()
        assert (event["event_action"], event["dedup_key"]) == ("trigger", ACCEPTANCE_KEY)
        assert event["payload"]["severity"] == "critical"
    finally:
        pagerduty.stop()


def test_a_hung_receiver_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    with PagerDutyReceiver() as pagerduty:
        pagerduty.delay(30)  # answers long after the notifier's timeout
        config = serve_config(tmp_path, pagerduty.url, free_port())
        config.write_text(config.read_text().replace("timeout = 1", "timeout = 20"))
        with serving(config, tmp_path) as (base, proc):
            post(base, {"acceptance": [0.2]})
            assert pagerduty.wait_for(lambda r: len(r.exchanges()) == 1, timeout=10)
            code, took = stop(proc)
        pagerduty.delay(0)
    assert (code, took < 6) == (0, True)
    log = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert "1 undelivered notification(s) left in" in log
    assert "Traceback" not in log and "Fatal" not in log


# -- demo -----------------------------------------------------------------------------------

_ACCEPTANCE_EVENT = re.compile(r"mhc_monitor\.delivery: acceptance alert (.+?): ")


def test_demo_logs_the_acceptance_alert_firing_and_resolving(tmp_path: Path) -> None:
    result = run_cli(
        "demo",
        "--port",
        "0",
        "--degrade-after",
        "2",
        "--degrade-for",
        "4",
        "--duration",
        "10",
        "--quiet",
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = _ACCEPTANCE_EVENT.findall(result.stderr)
    assert events, result.stderr[-3000:]
    assert re.fullmatch(r"firing at (warning|critical|emergency)", events[0])
    assert events[-1] == "resolved"
    for middle in events[1:-1]:
        assert re.fullmatch(r"(escalated|de-escalated) to (warning|critical|emergency)", middle)
    # The log receiver delivered the trigger and the resolve.
    assert re.search(r"notifiers\.log: alert trigger acceptance level=", result.stderr)
    assert re.search(r"notifiers\.log: alert resolve acceptance level=", result.stderr)
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # the demo's store is in memory


# -- check-config ---------------------------------------------------------------------------

BROKEN = """\
[labels]
model = "llama"

[lifecycle]
for = -1
repeat_intervall = 600

[thresholds.acceptance]
warning = 0.3
critical = 0.5

[receivers.pagerduty]
channel = "#ops"

[receivers.oncall]
url = "https://events.pagerduty.com/v2/enqueue"

[service]
port = 70000
"""


def test_check_config_names_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:5: lifecycle.for: Input should be greater than or equal to 0",
        f"{path}:6: lifecycle.repeat_intervall: Extra inputs are not permitted",
        f"{path}:9: thresholds.acceptance.warning: acceptance_rate_warning=0.3 must be "
        "strictly above acceptance_rate_critical=0.5 (acceptance is worse when lower)",
        f"{path}:12: receivers.pagerduty: no routing key: set MHC_PAGERDUTY_ROUTING_KEY or "
        "routing_key_file",
        f"{path}:13: receivers.pagerduty.channel: not a key of a pagerduty receiver",
        f"{path}:15: receivers.oncall.type: say which kind it is: type = one of "
        "('pagerduty', 'slack', 'log')",
        f"{path}:19: service.port: Input should be less than or equal to 65535",
        f"Error: {path}: 7 problem(s)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[lifecycle]\nfor = = 1\n",
            "{path}:2: not valid TOML: Invalid value (at line 2, column 7)",
        ),
        (b"\xff\xfe", "{path}: not UTF-8 text (byte 0)"),
    ],
)
def test_check_config_unreadable_files(tmp_path: Path, text: str | bytes, expected: str) -> None:
    path = tmp_path / "bad.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        expected.format(path=path),
        f"Error: {path}: 1 problem(s)",
    ]


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"cannot read configuration {path}: No such file or directory",
        f"Error: {path}: 1 problem(s)",
    ]


def test_check_config_ok_warns_about_readable_secrets_and_never_prints_them(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "pd.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    path = tmp_path / "mhc.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [receivers.oncall]
            type = "pagerduty"
            routing_key_file = "pd.key"

            [receivers.slack]
            channel = "#llm"

            [service]
            host = "0.0.0.0"
            store = "/var/lib/mhc/alerts.sqlite3"
            """
        )
    )
    webhook = "https://hooks.slack.com" + SLACK_PATH
    result = run_cli("check-config", str(path), env=cli_env(MHC_SLACK_WEBHOOK_URL=webhook))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"{path}: ok",
        f"warning: {key_file} is readable by group or others (mode 644); chmod 600 it",
        "warning: service.host 0.0.0.0 without an ingest token: anyone who can reach it can "
        "send samples; set MHC_INGEST_TOKEN or service.token_file",
        "receiver oncall: PagerDuty Events v2 at https://events.pagerduty.com/v2/enqueue, "
        "routing key set, 120/min",
        "receiver slack: Slack webhook (URL set) to #llm, 60/min",
        "lifecycle: for 0 s, clear margin 0.05, repeat every 14400 s, no data after 300 s",
        "service: 0.0.0.0:9477, store /var/lib/mhc/alerts.sqlite3, ingest token not set",
    ]
    assert KEY not in result.stdout and SLACK_PATH not in result.stdout

    key_file.chmod(0o600)
    result = run_cli("check-config", str(path), env=cli_env(MHC_SLACK_WEBHOOK_URL=webhook))
    assert result.returncode == 0
    assert not any(str(key_file) in line for line in result.stdout.splitlines())


def test_a_webhook_url_written_in_the_config_makes_it_a_secrets_file(tmp_path: Path) -> None:
    path = tmp_path / "mhc.toml"
    path.write_text(f'[receivers.slack]\nurl = "https://hooks.slack.com{SLACK_PATH}"\n')
    path.chmod(0o640)
    result = run_cli("check-config", str(path))
    assert result.returncode == 0
    assert f"warning: {path} is readable by group or others (mode 640); chmod 600 it" in (
        result.stdout.splitlines()
    )
    assert SLACK_PATH not in result.stdout


# -- send-test-alert ------------------------------------------------------------------------


def test_send_test_alert_reaches_pagerduty(tmp_path: Path) -> None:
    with PagerDutyReceiver() as pagerduty:
        config = tmp_path / "mhc.toml"
        config.write_text(
            f'[labels]\ninstance = "cli-e2e"\n[receivers.oncall]\ntype = "pagerduty"\n'
            f'url = "{pagerduty.url}"\n'
        )
        result = run_cli(
            "send-test-alert",
            "--receiver",
            "oncall",
            "--config",
            str(config),
            env=cli_env(MHC_PAGERDUTY_ROUTING_KEY=KEY),
        )
        assert (result.returncode, result.stdout) == (
            0,
            "oncall: trigger delivered (HTTP 202); resolve delivered (HTTP 202)\n",
        )
        events = [(e["event_action"], e["dedup_key"]) for e in pagerduty.accepted()]
        test_key = make_dedup_key("cli-e2e", {"instance": "cli-e2e"}, "test")
        assert events == [("trigger", test_key), ("resolve", test_key)]
        assert pagerduty.rejected() == []
    assert KEY not in result.stdout + result.stderr


def test_send_test_alert_reaches_slack_from_the_environment_alone() -> None:
    with SlackReceiver() as slack:
        webhook = slack.base_url + SLACK_PATH
        result = run_cli(
            "send-test-alert",
            "--receiver",
            "slack",
            env=cli_env(MHC_SLACK_WEBHOOK_URL=webhook),
        )
        assert (result.returncode, result.stdout) == (
            0,
            "slack: trigger delivered (HTTP 200); resolve delivered (HTTP 200)\n",
        )
        assert len(slack.accepted()) == 2 and slack.rejected() == []
    assert SLACK_PATH not in result.stdout + result.stderr


def test_send_test_alert_fails_clearly_against_a_refused_port(tmp_path: Path) -> None:
    config = tmp_path / "mhc.toml"
    port = free_port()  # nothing listens there
    config.write_text(f'[receivers.pagerduty]\nurl = "http://127.0.0.1:{port}/v2/enqueue"\n')
    result = run_cli(
        "send-test-alert",
        "--receiver",
        "pagerduty",
        "--config",
        str(config),
        env=cli_env(MHC_PAGERDUTY_ROUTING_KEY=KEY),
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "Error: test alert not delivered: pagerduty: trigger retryable: network "
        "(connection failed: refused, or no route to the receiver); "
        "resolve retryable: network (connection failed: refused, or no route to the receiver)\n"
    )


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["send-test-alert", "--receiver", "pagerduty"],
            "Error: no receiver named 'pagerduty' (configured: log)",
        ),
        (
            ["serve", "--store", "{tmp}/file/alerts.sqlite3", "--port", "0"],
            "Error: cannot open the alert store {tmp}/file/alerts.sqlite3: "
            "{tmp}/file is not a folder",
        ),
        (
            ["serve", "--config", "{tmp}/bad.toml"],
            "Error: 1 problem(s) in {tmp}/bad.toml:",
        ),
        (
            ["demo", "--window", "0"],
            "Error: Invalid value for '--window': 0 is not in the range x>=1.",
        ),
        (
            ["serve", "--label", "nolabel"],
            "Error: Invalid value for --label: 'nolabel' is not NAME=VALUE",
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "bad.toml").write_text("[delivery]\ntimeout = 0\n")
    result = run_cli(*[a.format(tmp=tmp_path) for a in args], cwd=tmp_path)
    assert result.returncode in (1, 2)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert lines == [expected.format(tmp=tmp_path)], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["demo", "--duration", "nan"], "--duration"),
        (["demo", "--rate", "inf"], "--rate"),
        (["demo", "--degrade-after", "NaN"], "--degrade-after"),
        (["rules", "--for", "inf"], "--for"),
        (["alertmanager-config", "--group-wait", "nan"], "--group-wait"),
    ],
)
def test_option_values_that_are_not_finite_numbers_are_refused(
    args: list[str], option: str
) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert f"Invalid value for '{option}'" in done.stderr
    assert "is not a finite number." in done.stderr
    assert "Traceback" not in done.stderr


def test_durations_beyond_what_prometheus_reads_are_refused() -> None:
    done = run_cli("alertmanager-config", "--group-wait", "1e20")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "Error: a duration must be at most 9000000000 s (about 285 years, what Prometheus "
        "and Alertmanager can read), got 1e+20\n"
    )
