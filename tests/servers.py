"""Real Prometheus and Alertmanager processes on loopback, for end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from conftest import free_port


def wait_until(check: Any, *, timeout: float, interval: float = 0.25, what: str) -> Any:
    """Call `check` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout} s (last error: {last_error})")


class _Process:
    binary = ""

    def __init__(self, workdir: Path) -> None:
        path = shutil.which(self.binary)
        assert path, f"{self.binary} is required (scripts/test installs it)"
        self.path = path
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{self.binary}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self, args: list[str]) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([self.path, *args], stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=30, what=f"{self.binary} readiness")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.binary} exited: {self.log.read_text()[-2000:]}")
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Prometheus(_Process):
    """Prometheus with a generated configuration, its own data folder and a free port."""

    binary = "prometheus"

    def start(
        self,
        targets: list[str],
        *,
        scrape_interval: str = "1s",
        rule_files: list[str] | None = None,
        alertmanager: str | None = None,
        evaluation_interval: str = "1s",
    ) -> Prometheus:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "mhc",
                    "honor_labels": True,
                    "static_configs": [{"targets": targets}],
                },
            ],
        }
        if rule_files:
            config["rule_files"] = rule_files
        if alertmanager:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self._start(
            [
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ]
        )
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = r.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


class Alertmanager(_Process):
    """Alertmanager with a given configuration file, clustering off."""

    binary = "prometheus-alertmanager"

    def start(self, config_file: Path) -> Alertmanager:
        self._start(
            [
                f"--config.file={config_file}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ]
        )
        return self
