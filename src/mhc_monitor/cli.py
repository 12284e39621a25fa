"""The `mhc-monitor` command line."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import IO, Any

import click

from .errors import MonitorError
from .monitor import GeometricSpeculationMonitor
from .service import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["main"]

logger = logging.getLogger("mhc_monitor.cli")

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _parse_labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--label")
        labels[name] = value
    return labels


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --host/--port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _graceful_server_class() -> Any:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """Stops on SIGINT/SIGTERM and returns, instead of re-raising the signal afterwards."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    return GracefulServer


def _GracefulServer(config: Any) -> Any:
    return _graceful_server_class()(config)


class _Server:
    """uvicorn on a socket bound beforehand, so a busy port is a clear error."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.socket = _bind(host, port)
        self.host = host
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5
        )
        self.server = _GracefulServer(config)

    def run(self) -> None:
        self.server.run(sockets=[self.socket])

    def stop(self) -> None:
        self.server.should_exit = True


def _warn_if_exposed(host: str, token: str | None) -> None:
    if host not in _LOOPBACK and not token:
        click.echo(
            f"warning: listening on {host} without an ingestion token: anyone who can reach "
            "this address can send samples. Set MHC_INGEST_TOKEN or bind 127.0.0.1.",
            err=True,
        )


def _monitor_options(f: Any) -> Any:
    f = click.option(
        "--label",
        "labels",
        multiple=True,
        metavar="NAME=VALUE",
        help="Constant label on every series and alert (repeatable).",
    )(f)
    f = click.option(
        "--window", default=1000, show_default=True, help="Samples per metric window."
    )(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@click.version_option(package_name="mhc-monitor", message="%(prog)s %(version)s")
def main(verbose: bool) -> None:
    """Monitor speculative decoding and mHC layers: windows, alerts, Prometheus."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token-env", default="MHC_INGEST_TOKEN", show_default=True, hidden=True)
@_monitor_options
def serve(host: str, port: int, token_env: str, labels: tuple[str, ...], window: int) -> None:
    """Run the sidecar: POST /v1/samples in, /metrics and /v1/summary out."""
    import os

    from .service import create_app

    monitor = _make_monitor(labels, window)
    token = os.environ.get(token_env) or None
    _warn_if_exposed(host, token)
    server = _Server(create_app(monitor, token=token), host, port)
    click.echo(f"mhc-monitor sidecar on http://{host}:{server.port}/metrics", err=True)
    server.run()


def _make_monitor(labels: tuple[str, ...], window: int) -> GeometricSpeculationMonitor:
    try:
        return GeometricSpeculationMonitor(window=window, labels=_parse_labels(labels))
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to run; 0 runs until Ctrl-C.",
)
@click.option(
    "--degrade-after",
    type=click.FloatRange(min=0),
    default=None,
    help="Switch to a weak draft model after this many seconds.",
)
@click.option(
    "--degrade-for",
    type=click.FloatRange(min=0),
    default=None,
    help="Recover after degrading this long (default: stay degraded).",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Most engine steps per second; 0 runs as fast as one core allows.",
)
@click.option("--quiet", is_flag=True, help="Do not print the live summary.")
@_monitor_options
def demo(
    host: str,
    port: int,
    duration: float,
    degrade_after: float | None,
    degrade_for: float | None,
    seed: int,
    rate: float,
    quiet: bool,
    labels: tuple[str, ...],
    window: int,
) -> None:
    """Run the embedded speculative-decoding engine, monitored, with the sidecar."""
    from .demo import run_demo

    monitor = _make_monitor(labels or ("model=demo-ngram", "instance=demo"), window)
    run_demo(
        monitor,
        server_factory=lambda app: _Server(app, host, port),
        duration=duration,
        degrade_after=degrade_after,
        degrade_for=degrade_for,
        seed=seed,
        echo=None if quiet else click.echo,
        rate=rate,
    )


@main.command()
@click.argument("source", type=click.File("r", encoding="utf-8"))
@click.option(
    "--url",
    default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    help="The sidecar to send to.",
)
@click.option("--batch-size", default=10000, show_default=True, type=click.IntRange(min=1))
@click.option("--token-env", default="MHC_INGEST_TOKEN", show_default=True, hidden=True)
def ingest(source: IO[str], url: str, batch_size: int, token_env: str) -> None:
    """Send samples from JSON lines (FILE, or - for stdin) to a running sidecar.

    Each line is one sample {"metric": "latency_ms", "value": 12.5}, a columnar
    object {"latency_ms": [12.5, 13.0]} or a {"samples": [...]} batch.
    """
    import os

    from .ingest_client import IngestClient

    token = os.environ.get(token_env) or None
    try:
        client = IngestClient(url, token=token, batch_size=batch_size)
        report = client.send_lines(_numbered(source))
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None
    for problem in report.problems:
        click.echo(problem, err=True)
    click.echo(
        f"sent {report.sent} samples: {report.accepted} accepted, {report.rejected} rejected"
        + (f" ({report.rejected_text()})" if report.rejected else "")
        + (f"; {report.bad_lines} bad lines skipped" if report.bad_lines else "")
    )
    if report.bad_lines or report.failed:
        sys.exit(1)


def _load_settings(path: str | None) -> Any:
    """The settings of a config file (defaults without one); a bad file is a clear error."""
    from .config import Settings, load_config

    if path is None:
        return Settings()
    try:
        return load_config(path)
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None


_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML configuration (thresholds, lifecycle, receivers).",
)


@main.command()
@_config_option
@click.option(
    "--for",
    "for_s",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a rule must hold before firing (default: the config's).",
)
@click.option(
    "--keep-firing-for", "keep_s", type=click.FloatRange(min=0), default=0.0, show_default=True
)
@click.option("--dashboard-url", help="Link put in every alert's annotations.")
def rules(
    config_path: str | None, for_s: float | None, keep_s: float, dashboard_url: str | None
) -> None:
    """Print Prometheus alerting and recording rules for the thresholds."""
    from .rules import generate_rules

    settings = _load_settings(config_path)
    if for_s is None:
        for_s = settings.alerting.lifecycle.for_s
    _echo_generated(
        lambda: generate_rules(
            settings.alert_config,
            for_seconds=for_s,
            keep_firing_for_seconds=keep_s,
            dashboard_url=dashboard_url,
        )
    )


def _echo_generated(generate: Any) -> None:
    try:
        text = generate()
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text, nl=False)


_receiver_options = [
    click.option("--pagerduty-routing-key-file", help="File holding the PagerDuty routing key."),
    click.option("--slack-webhook-url-file", help="File holding the Slack webhook URL."),
    click.option("--webhook-url", help="A generic webhook receiver for info alerts."),
    click.option("--slack-channel", help="Slack channel override."),
]


def _with_receivers(f: Any) -> Any:
    for option in reversed(_receiver_options):
        f = option(f)
    return f


@main.command("alertmanager-config")
@_with_receivers
def alertmanager_config(
    pagerduty_routing_key_file: str | None,
    slack_webhook_url_file: str | None,
    webhook_url: str | None,
    slack_channel: str | None,
) -> None:
    """Print an Alertmanager configuration: receivers by severity, inhibition of lower levels."""
    from .alertmanager_config import generate_alertmanager_config

    _echo_generated(
        lambda: generate_alertmanager_config(
            pagerduty_routing_key_file=pagerduty_routing_key_file,
            slack_webhook_url_file=slack_webhook_url_file,
            webhook_url=webhook_url,
            slack_channel=slack_channel,
        )
    )


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    metavar="HOST:PORT",
    help="A sidecar for Prometheus to scrape (repeatable).",
)
@_config_option
@click.option("--alertmanager", default="127.0.0.1:9093", show_default=True)
@click.option("--prometheus-url", default="http://127.0.0.1:9090", show_default=True)
@click.option("--grafana-url", help="Grafana's address, for dashboard links in alerts.")
@click.option("--scrape-interval", default=15.0, show_default=True, type=click.FloatRange(min=1))
@_with_receivers
def export(
    directory: str,
    targets: tuple[str, ...],
    config_path: str | None,
    alertmanager: str,
    prometheus_url: str,
    grafana_url: str | None,
    scrape_interval: float,
    pagerduty_routing_key_file: str | None,
    slack_webhook_url_file: str | None,
    webhook_url: str | None,
    slack_channel: str | None,
) -> None:
    """Write dashboard, provisioning, rules, Alertmanager and Prometheus configs to DIRECTORY."""
    from .bundle import export_bundle

    settings = _load_settings(config_path)
    try:
        paths = export_bundle(
            directory,
            config=settings.alert_config,
            targets=list(targets),
            alertmanager_address=alertmanager,
            prometheus_url=prometheus_url,
            grafana_url=grafana_url,
            scrape_interval_seconds=scrape_interval,
            for_seconds=settings.alerting.lifecycle.for_s,
            pagerduty_routing_key_file=pagerduty_routing_key_file,
            slack_webhook_url_file=slack_webhook_url_file,
            webhook_url=webhook_url,
            slack_channel=slack_channel,
        )
    except (MonitorError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths:
        click.echo(path)


def _numbered(source: IO[str]) -> Iterator[tuple[int, str]]:
    yield from enumerate(source, start=1)


if __name__ == "__main__":  # pragma: no cover
    main()
