"""Secrets and exposure: no secret reaches any output; who may send samples.

The PagerDuty routing key, the Slack webhook URL and the ingest token are each
a unique marker, given through the environment or through files. Every command
that sees them runs for real (serve with a degrading workload and failing
receivers, demo, check-config, send-test-alert, rules, alertmanager-config,
export), and every output is searched: logs at DEBUG, stdout and stderr, every
HTTP answer of the sidecar, every generated file, the SQLite store's files and
its text columns. The routing key and the webhook URL are never stored: the
outbox holds the alert, and the notifier formats the request as it sends it.
"""

from __future__ import annotations

import hmac
import re
import socket
import sqlite3
import textwrap
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port
from mhc_monitor import GeometricSpeculationMonitor
from mhc_monitor.config import is_loopback_host
from mhc_monitor.service import create_app
from receivers import PagerDutyReceiver, SlackReceiver
from sidecar import client, running
from test_cli_alerting import cli_env, run_cli, wait_until
from test_faults import serve


def markers() -> dict[str, str]:
    """A fresh marker per secret; the routing key has PagerDuty's shape (32 letters and digits)."""
    tag = uuid.uuid4().hex
    return {
        "routing_key": f"PDKEYMARK{tag[:23]}",
        "webhook": f"SLACKHOOKMARK{tag[:12]}",
        "token": f"INGESTTOKENMARK{tag[:12]}",
    }


def write_secrets(tmp_path: Path, secrets: dict[str, str], slack_base: str) -> dict[str, Path]:
    files = {
        "routing_key": tmp_path / "pagerduty.key",
        "webhook": tmp_path / "slack.url",
        "token": tmp_path / "ingest.token",
    }
    files["routing_key"].write_text(secrets["routing_key"] + "\n")
    files["webhook"].write_text(f"{slack_base}/services/T0/B0/{secrets['webhook']}\n")
    files["token"].write_text(secrets["token"] + "\n")
    for path in files.values():
        path.chmod(0o600)
    return files


def config_text(
    tmp_path: Path, pagerduty: PagerDutyReceiver, port: int, files: dict[str, Path] | None
) -> str:
    pd_file = f'routing_key_file = "{files["routing_key"]}"\n' if files else ""
    slack_file = f'url_file = "{files["webhook"]}"\n' if files else ""
    token_file = f'token_file = "{files["token"]}"\n' if files else ""
    return textwrap.dedent(
        f"""\
        [labels]
        instance = "secrets"

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
        url = "{pagerduty.url}"
        rate_per_minute = 60000
        burst = 100
        """
    ) + (
        pd_file
        + "\n[receivers.slack]\nrate_per_minute = 60000\nburst = 100\n"
        + slack_file
        + f'\n[service]\nport = {port}\nstore = "{tmp_path / "alerts.sqlite3"}"\n'
        + token_file
    )


def store_texts(path: Path) -> list[str]:
    """The store's files as bytes, and every value of every table as text."""
    texts = [
        p.read_bytes().decode("latin-1") for p in path.parent.glob(path.name + "*") if p.is_file()
    ]
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
        for table in tables:
            if table.startswith("sqlite_") or table.startswith("outbox_"):
                continue
            for row in db.execute(f"SELECT * FROM {table}"):
                texts.append(" ".join(str(v) for v in row))
    return texts


def post_samples(base: str, token: str | None, body: str) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{base}/v1/samples", content=body, headers=headers, timeout=5)


@pytest.mark.e2e
@pytest.mark.parametrize("source", ["environment", "files"])
def test_no_secret_reaches_any_output(tmp_path: Path, source: str) -> None:
    secrets = markers()
    outputs: dict[str, str] = {}
    with (
        PagerDutyReceiver() as pagerduty,
        SlackReceiver(webhook_path=f"/services/T0/B0/{secrets['webhook']}") as slack,
    ):
        files = write_secrets(tmp_path, secrets, slack.base_url)
        env = cli_env()
        if source == "environment":
            env.update(
                MHC_PAGERDUTY_ROUTING_KEY=secrets["routing_key"],
                MHC_SLACK_WEBHOOK_URL=slack.url,
                MHC_INGEST_TOKEN=secrets["token"],
            )
        port = free_port()
        config = tmp_path / "mhc.toml"
        config.write_text(
            config_text(tmp_path, pagerduty, port, files if source == "files" else None)
        )
        config.chmod(0o600)

        # serve, at DEBUG, with a degrading workload and receivers failing in every way.
        pagerduty.fail_next(1, status=400)
        pagerduty.rate_limit_next(1, retry_after=0.1)
        slack.fail_next(2, status=503)
        with serve(config, env, verbose=True) as sidecar:
            base = sidecar.base
            refused = [
                post_samples(base, None, '{"acceptance": [0.1]}'),
                post_samples(base, "wrong", '{"acceptance": [0.1]}'),
            ]
            for body in (
                '{"acceptance": [0.2]}',
                '{"latency_ms": [700]}',
                '{"acceptance": [0.5]}',
            ):
                assert post_samples(base, secrets["token"], body).status_code == 200
                time.sleep(0.15)
            for body in ('{"acceptance": [0.95]}', '{"latency_ms": [5]}'):
                assert post_samples(base, secrets["token"], body).status_code == 200
                time.sleep(0.15)
            wait_until(
                lambda: sidecar.queued() == {"pagerduty": 0, "slack": 0},
                timeout=15,
                what="every notification settled",
            )
            for path in ("/metrics", "/v1/alerts", "/v1/summary", "/", "/openapi.json"):
                outputs[f"GET {path}"] = sidecar.get(path).text
            outputs["GET /v1/series"] = httpx.get(f"{base}/v1/series", timeout=5).text
            outputs["store while serving"] = "\n".join(store_texts(tmp_path / "alerts.sqlite3"))
            code, _, outputs["serve log"] = sidecar.finish()
        assert code == 0
        assert [r.status_code for r in refused] == [401, 401]
        outputs["401 answers"] = "\n".join(r.text for r in refused)
        assert len(pagerduty.accepted()) >= 3 and len(slack.accepted()) >= 4
        assert pagerduty.faults() and slack.faults()

        demo = run_cli(
            "-v", "demo", "--config", str(config), "--port", "0", "--duration", "4",
            "--degrade-after", "1", "--quiet", env=env, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr[-2000:]
        outputs["demo"] = demo.stdout + demo.stderr

        checked = run_cli("check-config", str(config), env=env)
        assert checked.returncode == 0, checked.stderr
        outputs["check-config"] = checked.stdout + checked.stderr

        sent = [run_cli("-v", "send-test-alert", "--receiver", name, "--config", str(config),
                        env=env) for name in ("pagerduty", "slack")]  # fmt: skip
        assert [r.returncode for r in sent] == [0, 0], [r.stderr for r in sent]
        pagerduty.fail_next(2, status=400)
        slack.fail_next(2, status=500)
        failed = [run_cli("-v", "send-test-alert", "--receiver", name, "--config", str(config),
                          env=env) for name in ("pagerduty", "slack")]  # fmt: skip
        assert [r.returncode for r in failed] == [1, 1]
        assert "test alert not delivered" in failed[1].stderr
        for i, result in enumerate(sent + failed):
            outputs[f"send-test-alert {i}"] = result.stdout + result.stderr

    # A receiver that refuses connections: the error path of every notifier.
    down = free_port()
    refused_config = tmp_path / "refused.toml"
    refused_config.write_text(
        config.read_text().replace(pagerduty.url, f"http://127.0.0.1:{down}/v2/enqueue")
    )
    gone = [run_cli("-v", "send-test-alert", "--receiver", name, "--config", str(refused_config),
                    env=env) for name in ("pagerduty", "slack")]  # fmt: skip
    assert [r.returncode for r in gone] == [1, 1]
    outputs["send-test-alert refused"] = "".join(r.stdout + r.stderr for r in gone)

    generated = tmp_path / "bundle"
    file_options = [
        "--pagerduty-routing-key-file", str(files["routing_key"]),
        "--slack-webhook-url-file", str(files["webhook"]),
    ]  # fmt: skip
    for args in (
        ["rules", "--config", str(config)],
        ["alertmanager-config", *file_options],
        ["export", str(generated), "--target", "127.0.0.1:9477", "--config", str(config),
         *file_options],
    ):  # fmt: skip
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        outputs[args[0]] = result.stdout + result.stderr
    written = sorted(p for p in generated.rglob("*") if p.is_file())
    assert len(written) >= 5
    for path in written:
        outputs[str(path)] = path.read_text()
    outputs["store after"] = "\n".join(store_texts(tmp_path / "alerts.sqlite3"))

    # The outputs are real: the sidecar served, delivered and logged its deliveries.
    assert "mhc_notifications_total" in outputs["GET /metrics"]
    assert "delivery to slack failed: retryable: server_error (HTTP 503)" in outputs["serve log"]
    assert (
        "delivery to pagerduty failed: permanent: client_error (HTTP 400)"
        in (outputs["serve log"])
    )
    assert re.search(r'HTTP Request: POST \*\*\* "HTTP/1\.[01] 200', outputs["serve log"])
    assert "acceptance alert firing at" in outputs["demo"]
    assert str(files["routing_key"]) in outputs["alertmanager-config"]
    secret_values = [*secrets.values(), f"{slack.base_url}/services/T0/B0/{secrets['webhook']}"]
    for where, text in outputs.items():
        for value in secret_values:
            assert value not in text, f"a secret in {where}"


@pytest.mark.e2e
def test_check_config_warns_about_every_secrets_file_others_can_read(tmp_path: Path) -> None:
    secrets = markers()
    files = write_secrets(tmp_path, secrets, "https://hooks.slack.com")
    files["token"].chmod(0o644)
    files["webhook"].chmod(0o604)
    with PagerDutyReceiver() as pagerduty:
        config = tmp_path / "mhc.toml"
        config.write_text(config_text(tmp_path, pagerduty, 9477, files))
        result = run_cli("check-config", str(config))
    assert (result.returncode, result.stderr) == (0, "")
    assert [line for line in result.stdout.splitlines() if line.startswith("warning:")] == [
        f"warning: {files['webhook']} is readable by group or others (mode 604); chmod 600 it",
        f"warning: {files['token']} is readable by group or others (mode 644); chmod 600 it",
    ]
    for value in secrets.values():
        assert value not in result.stdout


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"MHC_PAGERDUTY_ROUTING_KEY": "{routing_key}!"},
            "receivers.pagerduty: the routing key must be 32 ASCII letters and digits, "
            "got 33 characters",
        ),
        (
            {"MHC_SLACK_WEBHOOK_URL": "hooks.slack.com/services/T0/B0/{webhook}"},
            "receivers.slack: the webhook URL is not an http(s) URL",
        ),
    ],
)
def test_a_malformed_secret_is_described_never_shown(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    secrets = markers()
    config = tmp_path / "mhc.toml"
    config.write_text("[labels]\ninstance = 'x'\n")
    result = run_cli(
        "check-config",
        str(config),
        env=cli_env(**{k: v.format(**secrets) for k, v in env.items()}),
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: {expected}",
        f"Error: {config}: 1 problem(s)",
    ]
    for value in secrets.values():
        assert value not in result.stdout + result.stderr


# -- who gets in --------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP `port` (IPv4 and IPv6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, _, state = line.split()[1:4]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port and len(address) == width:
                found.add(address)
    return found


@pytest.mark.e2e
def test_serve_listens_on_loopback_only_unless_told_otherwise(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "mhc.toml"
    config.write_text(
        f'[service]\nport = {port}\nstore = "{tmp_path / "a.sqlite3"}"\n'
        "[lifecycle]\nno_data_after = 0\n"
    )
    with serve(config, cli_env()) as sidecar:
        addresses = listening_addresses(port)
        code, _, log = sidecar.finish()
    assert addresses == {"0100007F"}  # 127.0.0.1, and nothing else
    assert code == 0
    assert "warning: listening on" not in log


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("192.0.2.1", None, True),  # TEST-NET-1: never this machine's, so the bind fails too
        ("192.0.2.1", "t0ken", False),
        ("127.0.0.2", None, False),  # loopback, though not 127.0.0.1
    ],
)
def test_serve_warns_when_listening_beyond_loopback_without_a_token(
    tmp_path: Path, host: str, token: str | None, warned: bool
) -> None:
    env = cli_env(**({"MHC_INGEST_TOKEN": token} if token else {}))
    # The port is taken on 127.0.0.2 and 192.0.2.1 is not this machine's: the bind fails
    # after the warning, and no test opens a port beyond loopback.
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--host", host, "--port", str(port), "--store", ":memory:", env=env
        )
    warning = (
        f"warning: listening on {host} without an ingestion token: anyone who can reach this "
        "address can send samples. Set MHC_INGEST_TOKEN or bind 127.0.0.1."
    )
    assert (warning in result.stderr.splitlines()) is warned, result.stderr
    assert result.returncode == 1
    assert re.search(rf"Error: cannot listen on {re.escape(host)}:{port}: ", result.stderr)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("my-host.example", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.e2e
def test_a_token_file_guards_ingestion_and_nothing_is_recorded_without_it(
    tmp_path: Path,
) -> None:
    token = markers()["token"]
    token_file = tmp_path / "ingest.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    config = tmp_path / "mhc.toml"
    config.write_text(
        f'[service]\nport = {port}\ntoken_file = "{token_file}"\n'
        f'store = "{tmp_path / "a.sqlite3"}"\n[lifecycle]\nno_data_after = 0\n'
    )
    body = '{"latency_ms": [12.5, 13.5]}'
    with serve(config, cli_env()) as sidecar:
        answers = [
            post_samples(sidecar.base, None, body),
            httpx.post(
                f"{sidecar.base}/v1/samples",
                content=body,
                headers={"Content-Type": "application/json", "Authorization": "Bearer"},
                timeout=5,
            ),
            post_samples(sidecar.base, token[:-1], body),
            post_samples(sidecar.base, token + "x", body),
            httpx.post(
                f"{sidecar.base}/v1/samples",
                content=body,
                headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
                timeout=5,
            ),
        ]
        before = sidecar.get("/v1/summary").json()["metrics"]["latency"]["total"]
        accepted = post_samples(sidecar.base, token, body)
        after = sidecar.get("/v1/summary").json()["metrics"]["latency"]["total"]
        metrics = sidecar.get("/metrics").text
        code, _, log = sidecar.finish()
    assert [a.status_code for a in answers] == [401] * 5
    assert {a.json()["error"] for a in answers} == {
        "a valid bearer token is required (Authorization: Bearer ...)"
    }
    assert (before, accepted.status_code, accepted.json()["accepted"], after) == (0, 200, 2, 2)
    assert "mhc_latency_seconds_count 2.0" in metrics
    assert code == 0
    assert token not in log + metrics


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monitor = GeometricSpeculationMonitor()
    with running(create_app(monitor, token="s3cret")) as url, client(url) as http:
        headers = {"authorization": "Bearer s3cre7"}
        assert http.post("/v1/samples", json={"energy": [1.0]}, headers=headers).status_code == 401
        headers = {"authorization": "Bearer s3cret"}
        assert http.post("/v1/samples", json={"energy": [1.0]}, headers=headers).status_code == 200
    assert calls == [(b"s3cre7", b"s3cret"), (b"s3cret", b"s3cret")]
    assert monitor.window_values("energy") == [1.0]
