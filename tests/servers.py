"""Real Prometheus and Alertmanager processes on loopback, for end-to-end tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class Budget:
    """A deadline shared by the steps of a test, so that the whole test is bounded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        """Seconds a step may take: `cap`, or what is left; raises once nothing is left."""
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the test's budget of {self.seconds:g} s is spent")
        return min(cap, remaining)


class _Process:
    binary = ""
    #: Seconds `start` waits for the process to be ready.
    ready_timeout: float = 30

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
        wait_until(self._ready, timeout=self.ready_timeout, what=f"{self.binary} readiness")

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
    _client: httpx.Client | None = None

    def stop(self) -> None:
        super().stop()
        if self._client is not None:
            self._client.close()
            self._client = None

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
        return self.start_with(config_file)

    def start_with(self, config_file: Path) -> Prometheus:
        """Start with a given configuration file; its rule files resolve from its folder."""
        self._start(
            [
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={self.url}",
                "--web.enable-lifecycle",
            ]
        )
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector. Safe to call from several threads."""
        if self._client is None:
            # One client for every query: a client per call builds a TLS context each time.
            self._client = httpx.Client(base_url=self.url, timeout=5)
        r = self._client.get("/api/v1/query", params={"query": expr})
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
                f"--web.external-url={self.url}",
                "--cluster.listen-address=",
            ]
        )
        return self


class WebhookReceiver:
    """An Alertmanager webhook receiver on loopback that keeps every payload it is sent."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver._lock:
                    receiver.payloads.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def received(self) -> list[dict[str, Any]]:
        """A copy of the payloads received so far, oldest first."""
        with self._lock:
            return list(self.payloads)

    def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        """Every alert of every payload, with the payload's receiver, oldest first."""
        return [
            (payload["receiver"], alert)
            for payload in self.received()
            for alert in payload["alerts"]
        ]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Sidecar:
    """`mhc-monitor serve` in a subprocess on a free loopback port."""

    def __init__(self, workdir: Path, labels: dict[str, str], *, window: int) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.labels = labels
        self.window = window
        self.workdir = workdir
        self.log = workdir / f"sidecar-{self.port}.log"
        self.store = workdir / f"sidecar-{self.port}.sqlite3"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sidecar:
        """Launch the process and wait until it answers."""
        return self.launch().wait_ready()

    def launch(self) -> Sidecar:
        """Launch the process without waiting, so that several can start at once."""
        command = [sys.executable, "-m", "mhc_monitor", "serve", "--port", str(self.port)]
        # Each sidecar keeps its own alert store in the test's folder.
        command += ["--window", str(self.window), "--store", str(self.store)]
        for name, value in self.labels.items():
            command += ["--label", f"{name}={value}"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        return self

    def wait_ready(self, timeout: float = 30) -> Sidecar:
        """Wait until `/healthz` answers; raises if the process exits first."""
        wait_until(self._ready, timeout=timeout, what=f"the sidecar on {self.address}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the sidecar exited: {self.log.read_text()[-2000:]}")
        return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
