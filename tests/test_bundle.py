"""The exported bundle: every file in place, consistent with the generators, promtool-clean."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mhc_monitor.alertmanager_config import generate_alertmanager_config
from mhc_monitor.alerts import AlertConfig
from mhc_monitor.bundle import (
    ALERTMANAGER_JOB,
    BUNDLE_FILES,
    DATASOURCE_UID,
    SCRAPE_JOB,
    export_bundle,
)
from mhc_monitor.errors import UsageError
from mhc_monitor.grafana import dashboard_uid, generate_dashboard
from mhc_monitor.rules import generate_rules

PROMTOOL = shutil.which("promtool")
TARGETS = ["127.0.0.1:9401", "127.0.0.1:9402", "localhost:9403"]
CONFIG = AlertConfig(sinkhorn_iters_warning=30.0, statistics={"latency": "p99"})


def _yaml(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _export(directory: Path, **kwargs: Any) -> list[Path]:
    return export_bundle(directory, config=CONFIG, targets=TARGETS, **kwargs)


def test_bundle_writes_every_file(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    written = _export(root)
    assert written == [root / name for name in BUNDLE_FILES]
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert found == sorted(BUNDLE_FILES)


def test_bundle_files_match_the_generators(tmp_path: Path) -> None:
    _export(
        tmp_path,
        title="fleet",
        grafana_url="http://grafana.local:3000/",
        for_seconds=30,
        webhook_url="http://127.0.0.1:9/hook",
        pagerduty_routing_key_file="/run/secrets/pd",
        group_wait_seconds=1,
        group_interval_seconds=2,
        repeat_interval_seconds=600,
    )
    assert json.loads((tmp_path / "dashboard.json").read_text()) == json.loads(
        generate_dashboard("fleet", CONFIG, alertmanager_job=ALERTMANAGER_JOB)
    )
    assert (tmp_path / "rules.yml").read_text() == generate_rules(
        CONFIG,
        for_seconds=30,
        dashboard_url=f"http://grafana.local:3000/d/{dashboard_uid('fleet')}",
        scrape_job=SCRAPE_JOB,
    )
    assert (tmp_path / "alertmanager.yml").read_text() == generate_alertmanager_config(
        pagerduty_routing_key_file="/run/secrets/pd",
        slack_webhook_url_file=None,
        webhook_url="http://127.0.0.1:9/hook",
        group_wait_seconds=1,
        group_interval_seconds=2,
        repeat_interval_seconds=600,
    )


def test_prometheus_config_scrapes_targets_and_alerts(tmp_path: Path) -> None:
    _export(tmp_path, alertmanager_address="127.0.0.1:19093", scrape_interval_seconds=5)
    config = _yaml(tmp_path / "prometheus.yml")
    assert config["rule_files"] == ["rules.yml"]
    assert config["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}
    job, alertmanager = config["scrape_configs"]
    assert job["job_name"] == SCRAPE_JOB
    assert job["honor_labels"] is True
    assert job["static_configs"] == [{"targets": TARGETS}]
    assert alertmanager == {
        "job_name": ALERTMANAGER_JOB,
        "static_configs": [{"targets": ["127.0.0.1:19093"]}],
    }
    alertmanagers = config["alerting"]["alertmanagers"]
    assert alertmanagers == [{"static_configs": [{"targets": ["127.0.0.1:19093"]}]}]


def test_evaluation_interval_can_differ_from_the_scrape_interval(tmp_path: Path) -> None:
    _export(tmp_path, scrape_interval_seconds=1, evaluation_interval_seconds=0.5)
    config = _yaml(tmp_path / "prometheus.yml")
    assert config["global"] == {"scrape_interval": "1s", "evaluation_interval": "500ms"}


def test_grafana_provisioning(tmp_path: Path) -> None:
    _export(tmp_path, prometheus_url="http://prom:9090", dashboards_path="/var/lib/mhc")
    provisioning = tmp_path / "grafana" / "provisioning"
    (datasource,) = _yaml(provisioning / "datasources" / "mhc.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prom:9090"
    assert datasource["uid"] == DATASOURCE_UID
    # Grafana's $__rate_interval spans four scrapes only if it knows the interval.
    assert datasource["jsonData"] == {"timeInterval": "15s"}
    (provider,) = _yaml(provisioning / "dashboards" / "mhc.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/mhc"
    _export(tmp_path / "default")
    (provider,) = _yaml(tmp_path / "default" / "grafana/provisioning/dashboards/mhc.yml")[
        "providers"
    ]
    assert provider["options"]["path"] == str((tmp_path / "default").resolve())


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing")
def test_promtool_check_config_is_clean_in_the_exported_folder(tmp_path: Path) -> None:
    _export(tmp_path, for_seconds=60, keep_firing_for_seconds=120)
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS: prometheus.yml is valid prometheus config file syntax" in output
    rule_count = 17 + 32  # 15 default levels, Sinkhorn warning, sidecar down; 32 recording
    assert f"SUCCESS: {rule_count} rules found" in output
    assert "WARNING" not in output


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": []}, "at least one scrape target"),
        ({"targets": ["http://127.0.0.1:9400"]}, "not a host:port"),
        ({"targets": ["127.0.0.1"]}, "not a host:port"),
        ({"targets": ["127.0.0.1:9400/metrics"]}, "not a host:port"),
        ({"targets": ["127.0.0.1:99999"]}, "not a host:port"),
        ({"alertmanager_address": "alertmanager"}, "not a host:port"),
        ({"prometheus_url": "prom:9090"}, "prometheus_url"),
        ({"grafana_url": "grafana"}, "grafana_url"),
        ({"scrape_interval_seconds": 0}, "scrape_interval_seconds"),
        ({"evaluation_interval_seconds": 0}, "evaluation_interval_seconds"),
        ({"group_interval_seconds": 0}, "group_interval"),
        ({"repeat_interval_seconds": 0}, "repeat_interval"),
        ({"group_wait_seconds": -1}, "duration"),
    ],
)
def test_bad_arguments_raise_usage_error_and_write_nothing(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"config": CONFIG, "targets": TARGETS, **kwargs}
    with pytest.raises(UsageError, match=message):
        export_bundle(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_export_command_passes_intervals_timings_and_the_config_lifecycle(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mhc_monitor.cli import main

    config = tmp_path / "mhc.toml"
    config.write_text("[thresholds.energy]\nfor = 30\n\n[lifecycle]\nkeep_firing_for = 10\n")
    arguments = ["export", str(tmp_path / "out"), "--config", str(config)]
    arguments += ["--target", "127.0.0.1:9401", "--alertmanager", "127.0.0.1:19093"]
    arguments += ["--scrape-interval", "2", "--evaluation-interval", "1"]
    arguments += ["--group-wait", "1", "--group-interval", "2", "--repeat-interval", "60"]
    arguments += ["--webhook-url", "http://127.0.0.1:9/hook"]
    arguments += ["--dashboards-path", "/var/lib/grafana/mhc"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output

    out = tmp_path / "out"
    assert _yaml(out / "prometheus.yml")["global"] == {
        "scrape_interval": "2s",
        "evaluation_interval": "1s",
    }
    route = _yaml(out / "alertmanager.yml")["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "1s",
        "2s",
        "60s",
    )
    rules = {rule["alert"]: rule for rule in _yaml(out / "rules.yml")["groups"][0]["rules"]}
    assert rules["MhcEnergyWarning"]["for"] == "30s"
    assert "for" not in rules["MhcLatencyWarning"]
    down = rules.pop("MhcSidecarDown")
    assert (down["expr"], down["for"]) == ('up{job="mhc-monitor"} == 0', "60s")
    assert {rule["keep_firing_for"] for rule in rules.values()} == {"10s"}
    datasource = _yaml(out / "grafana/provisioning/datasources/mhc.yml")["datasources"][0]
    assert datasource["jsonData"] == {"timeInterval": "2s"}
    provider = _yaml(out / "grafana/provisioning/dashboards/mhc.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/mhc"


@pytest.mark.parametrize(
    ("pd_url", "channel_option", "expected_url", "expected_channel"),
    [
        ("http://127.0.0.1:9/pd/enqueue", [], "http://127.0.0.1:9/pd/enqueue", "#mhc"),
        ("https://events.pagerduty.com/v2/enqueue", ["--slack-channel", "#ops"], None, "#ops"),
    ],
)
def test_export_takes_the_configured_pagerduty_url_and_slack_channel(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pd_url: str,
    channel_option: list[str],
    expected_url: str | None,
    expected_channel: str,
) -> None:
    from click.testing import CliRunner

    from mhc_monitor.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MHC_PAGERDUTY_ROUTING_KEY", "a" * 32)
    monkeypatch.setenv("MHC_SLACK_WEBHOOK_URL", "https://hooks.slack.test/services/T/B/x")
    config = tmp_path / "mhc.toml"
    config.write_text(
        f'[receivers.pagerduty]\nurl = "{pd_url}"\n\n[receivers.slack]\nchannel = "#mhc"\n'
    )
    arguments = ["export", "out", "--config", str(config), "--target", "127.0.0.1:9401"]
    arguments += ["--pagerduty-routing-key-file", "pd.key", "--slack-webhook-url-file", "s.url"]
    result = CliRunner().invoke(main, arguments + channel_option)
    assert result.exit_code == 0, result.output

    receivers = {r["name"]: r for r in _yaml(tmp_path / "out" / "alertmanager.yml")["receivers"]}
    pagerduty = receivers["mhc-pagerduty"]["pagerduty_configs"][0]
    slack = receivers["mhc-slack"]["slack_configs"][0]
    assert pagerduty.get("url") == expected_url
    assert pagerduty["routing_key_file"] == str(tmp_path / "pd.key")
    assert (slack["channel"], slack["api_url_file"]) == (expected_channel, str(tmp_path / "s.url"))
