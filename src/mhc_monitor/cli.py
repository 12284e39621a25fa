"""The `mhc-monitor` command line."""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import threading
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

import click

from .config import INGEST_TOKEN_ENV, is_loopback_host
from .errors import DeliveryError, MonitorError
from .monitor import GeometricSpeculationMonitor
from .service import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from .config import AlertingSettings, Settings
    from .delivery import Alerting
    from .ingest_client import IngestReport

__all__ = ["main"]

logger = logging.getLogger("mhc_monitor.cli")

#: Seconds a stopping sidecar spends delivering queued notifications.
_STOP_TIMEOUT_S = 3.0


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


class _Finite(click.FloatRange):
    """A float range that also refuses NaN and infinities, which no option here means."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


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
    if not is_loopback_host(host) and not token:
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
        help="Constant label on every series and alert (repeatable; adds to the config's).",
    )(f)
    f = click.option(
        "--window",
        type=click.IntRange(min=1),
        default=None,
        help="Samples per metric window  [default: the config's, else 1000]",
    )(f)
    return f


def _alerting_options(f: Any) -> Any:
    f = click.option(
        "--store",
        "store_path",
        metavar="FILE",
        default=None,
        help="SQLite file of alert history and outbox; ':memory:' keeps nothing on disk.",
    )(f)
    f = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML configuration (thresholds, lifecycle, receivers, service).",
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
    if not verbose:
        # httpx logs every request line at INFO: noise in a service log.
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _runtime_settings(config_path: str | None) -> Settings:
    """The settings of `--config`, or defaults plus what the environment switches on."""
    from .config import load_config, parse_config

    try:
        if config_path is None:
            return parse_config("", name="the environment (no --config)")
        return load_config(config_path)
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None


def _make_monitor(
    labels: tuple[str, ...],
    window: int | None,
    settings: Settings | None = None,
    default_labels: tuple[str, ...] = (),
) -> GeometricSpeculationMonitor:
    from .config import Settings

    settings = settings or Settings()
    merged = {**settings.labels, **_parse_labels(labels)}
    if not merged:
        merged = _parse_labels(default_labels)
    try:
        return GeometricSpeculationMonitor(
            settings.alert_config,
            window=settings.window if window is None else window,
            labels=merged,
            source=settings.source,
        )
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None


def _open_alerting(
    monitor: GeometricSpeculationMonitor, settings: AlertingSettings, store_path: str
) -> Alerting:
    """`Alerting` for `monitor`, not started; an unusable store or receiver is an error."""
    from .delivery import Alerting

    try:
        return Alerting(monitor, settings, store_path)
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None


def _start_alerting(alerting: Alerting) -> None:
    """Start evaluating and delivering: once the port is bound, so a busy port sends nothing."""
    alerting.start()
    receivers = ", ".join(f"{r.name} ({r.kind})" for r in alerting.receivers)
    logger.info("alerting to %s; alert store %s", receivers, alerting.store.path)


def _stop_alerting(alerting: Alerting, timeout: float = _STOP_TIMEOUT_S) -> None:
    """Deliver what can be delivered within `timeout` s; the rest stays in the outbox.

    A repeated SIGTERM (a supervisor asking again) does not cut a request in half:
    the stop is bounded anyway. Ctrl-C still interrupts it.
    """
    previous = _on_sigterm(_already_stopping)
    logger.info("stopping: delivering queued notifications for up to %g s", timeout)
    try:
        stopped = alerting.stop(timeout)
        queued = sum(r["queued"] for r in alerting.receivers_view()["receivers"].values())
    except KeyboardInterrupt:
        logger.warning("interrupted while stopping; undelivered notifications stay queued")
        return
    finally:
        _on_sigterm(previous)
    if queued:
        path = alerting.store.path
        if path == ":memory:":
            logger.warning("%d undelivered notification(s) lost: the store is in memory", queued)
        else:
            logger.warning(
                "%d undelivered notification(s) left in %s; the next start delivers them",
                queued,
                path,
            )
    if stopped:
        alerting.store.close()


def _already_stopping(sig: int, frame: Any) -> None:
    logger.info("already stopping: delivering queued notifications for a few seconds")


def _on_sigterm(handler: Any) -> Any:
    """Install a SIGTERM handler (main thread only); the one it replaced, or None."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _ingest_token(settings: Settings, token_env: str) -> str | None:
    if token_env != INGEST_TOKEN_ENV:
        return os.environ.get(token_env) or None
    return settings.service.token.reveal() if settings.service.token else None


_host_option = click.option(
    "--host",
    default=None,
    help=f"Address to listen on  [default: the config's, else {DEFAULT_HOST}]",
)
_port_option = click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help=f"Port to listen on; 0 picks a free one  [default: the config's, else {DEFAULT_PORT}]",
)


@main.command()
@_host_option
@_port_option
@click.option("--token-env", default=INGEST_TOKEN_ENV, show_default=True, hidden=True)
@_alerting_options
@_monitor_options
def serve(
    host: str | None,
    port: int | None,
    token_env: str,
    config_path: str | None,
    store_path: str | None,
    labels: tuple[str, ...],
    window: int | None,
) -> None:
    """Run the sidecar: POST /v1/samples in; /metrics, /v1/summary and /v1/alerts out.

    Alerts go through their lifecycle to the configured receivers (PagerDuty,
    Slack; the log when none is configured), with history and outbox in the
    SQLite --store (default: the config's service.store, ./mhc-monitor.sqlite3).
    SIGTERM or Ctrl-C delivers what it can within a few seconds and exits.
    """
    from .service import create_app

    settings = _runtime_settings(config_path)
    monitor = _make_monitor(labels, window, settings)
    host = settings.service.host if host is None else host
    port = settings.service.port if port is None else port
    token = _ingest_token(settings, token_env)
    _warn_if_exposed(host, token)
    store = store_path or settings.service.store_path
    alerting = _open_alerting(monitor, settings.alerting, store)
    try:
        server = _Server(create_app(monitor, token=token, alerting=alerting), host, port)
        _start_alerting(alerting)
        click.echo(
            f"mhc-monitor sidecar on http://{host}:{server.port}/ (live page, /metrics)", err=True
        )
        server.run()
    finally:
        _stop_alerting(alerting)


@main.command()
@_host_option
@_port_option
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=_Finite(min=0),
    help="Seconds to run; 0 runs until Ctrl-C.",
)
@click.option(
    "--degrade-after",
    type=_Finite(min=0),
    default=None,
    help="Switch to a weak draft model after this many seconds.",
)
@click.option(
    "--degrade-for",
    type=_Finite(min=0),
    default=None,
    help="Recover after degrading this long (default: stay degraded).",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    type=_Finite(min=0),
    help="Most engine steps per second; 0 runs as fast as one core allows.",
)
@click.option("--quiet", is_flag=True, help="Do not print the live summary.")
@_alerting_options
@_monitor_options
def demo(
    host: str | None,
    port: int | None,
    duration: float,
    degrade_after: float | None,
    degrade_for: float | None,
    seed: int,
    rate: float,
    quiet: bool,
    config_path: str | None,
    store_path: str | None,
    labels: tuple[str, ...],
    window: int | None,
) -> None:
    """Run the embedded speculative-decoding engine, monitored, with the sidecar.

    Alerts go through the lifecycle to the configured receivers, or to the log.
    Without --config the alerts are evaluated every 0.25 s so a short demo shows
    them fire, escalate and resolve. The store is in memory unless --store names
    a file.
    """
    from .demo import DEMO_ALERTING, run_demo

    settings = _runtime_settings(config_path)
    if config_path is None:
        settings = replace(
            settings, alerting=replace(DEMO_ALERTING, receivers=settings.alerting.receivers)
        )
    monitor = _make_monitor(labels, window, settings, ("model=demo-ngram", "instance=demo"))
    host = settings.service.host if host is None else host
    port = settings.service.port if port is None else port
    token = _ingest_token(settings, INGEST_TOKEN_ENV)
    _warn_if_exposed(host, token)
    alerting = _open_alerting(monitor, settings.alerting, store_path or ":memory:")

    def server_factory(app: Any) -> _Server:
        server = _Server(app, host, port)
        _start_alerting(alerting)
        return server

    try:
        run_demo(
            monitor,
            server_factory=server_factory,
            duration=duration,
            degrade_after=degrade_after,
            degrade_for=degrade_for,
            seed=seed,
            echo=None if quiet else click.echo,
            rate=rate,
            alerting=alerting,
            token=token,
        )
    finally:
        _stop_alerting(alerting)


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config_command(file: str) -> None:
    """Validate a configuration FILE: every problem with its line, or what it will do.

    Exits 1 when there is a problem. Secrets are resolved (files, environment)
    but never printed; a secrets file readable by group or others is a warning.
    """
    from .config import check_config

    ok, lines = check_config(file)
    if not ok:
        for line in lines:
            click.echo(line, err=True)
        raise click.ClickException(f"{file}: {len(lines)} problem(s)")
    for line in lines:
        click.echo(line)


@main.command("send-test-alert")
@click.option("--receiver", "receiver_name", required=True, metavar="NAME", help="Receiver name.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML configuration naming the receiver (default: receivers from the environment).",
)
def send_test_alert_command(receiver_name: str, config_path: str | None) -> None:
    """Send one test alert and its resolve to receiver NAME; exits 1 unless both arrive."""
    from .config import send_test_alert

    settings = _runtime_settings(config_path)
    try:
        text = send_test_alert(settings, receiver_name)
    except DeliveryError as exc:
        raise click.ClickException(f"test alert not delivered: {exc}") from None
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text)


@main.command()
@click.argument("source", type=click.File("rb"))
@click.option(
    "--url",
    default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    help="The sidecar to send to.",
)
@click.option(
    "--batch-size",
    default=10000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Samples per request: a batch goes out once it holds this many; a line with "
    "more is cut into requests of this size.",
)
@click.option(
    "--flush-interval",
    default=1.0,
    show_default=True,
    type=_Finite(min=0),
    help="Seconds a sample is held at most before its batch goes out, also while idle.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the sidecar's bearer token  [default: $MHC_INGEST_TOKEN]",
)
@click.option("--token-env", default="MHC_INGEST_TOKEN", show_default=True, hidden=True)
def ingest(
    source: IO[bytes],
    url: str,
    batch_size: int,
    flush_interval: float,
    token_file: str | None,
    token_env: str,
) -> None:
    """Send samples from JSON lines (FILE, or - for stdin) to a running sidecar.

    Each line is one sample {"metric": "latency_ms", "value": 12.5}, a columnar
    object {"latency_ms": [12.5, 13.0]} or a {"samples": [...]} batch. Bad lines
    are reported as they come and skipped; the others still go.

    A sidecar started with a token wants it as a bearer token: it is read from
    $MHC_INGEST_TOKEN, or from --token-file when given.

    On end of input, SIGINT or SIGTERM, held samples are sent, then a summary is
    printed. Exits 1 if any line was bad or any sample was not delivered.
    """
    from .ingest_client import IngestClient

    token = _ingest_client_token(token_file, token_env)
    hint = f"check --token-file {token_file}" if token_file else f"set {token_env} or --token-file"
    try:
        client = IngestClient(
            url,
            token=token,
            batch_size=batch_size,
            flush_interval=flush_interval,
            token_hint=hint,
            on_problem=lambda problem: click.echo(problem, err=True),
        )
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    try:
        report = client.send_stream(source, stop=stop)
        _echo_ingest_report(report)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not report.complete:
        sys.exit(1)


def _echo_ingest_report(report: IngestReport) -> None:
    click.echo(
        f"delivered {_count(report.delivered, 'sample')}: {report.accepted} accepted, "
        f"{report.rejected} rejected"
        + (f" ({report.rejected_text()})" if report.rejected else "")
        + (f"; {_count(report.bad_lines, 'bad line')} skipped" if report.bad_lines else "")
    )
    for reason, n in sorted(report.not_delivered_by_reason.items()):
        click.echo(f"{_count(n, 'sample')} not delivered: {reason}", err=True)
    if report.unread_from is not None:
        click.echo(f"stopped: input from line {report.unread_from} on was not read", err=True)
    if report.stopped_after is not None:
        click.echo(f"stopped after line {report.stopped_after}", err=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ingest_client_token(token_file: str | None, token_env: str) -> str | None:
    if token_file is None:
        return os.environ.get(token_env, "").strip() or None
    from pathlib import Path

    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read --token-file {token_file}: {exc}") from None
    if not token:
        raise click.ClickException(f"--token-file {token_file} is empty")
    return token


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """Set `stop` on SIGINT and SIGTERM rather than raise (main thread only); the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {
        sig: signal.signal(sig, lambda signum, frame: stop.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }


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
    type=_Finite(min=0),
    default=None,
    help="Seconds a rule must hold before firing (default: the config's).",
)
@click.option(
    "--keep-firing-for",
    "keep_s",
    type=_Finite(min=0),
    default=None,
    help="Seconds a rule keeps firing once clear (default: the config's).",
)
@click.option("--dashboard-url", help="Link put in every alert's annotations.")
def rules(
    config_path: str | None, for_s: float | None, keep_s: float | None, dashboard_url: str | None
) -> None:
    """Print Prometheus alerting and recording rules for the thresholds."""
    from .rules import generate_rules

    settings = _load_settings(config_path)
    _echo_generated(
        lambda: generate_rules(
            settings.alert_config,
            **_rule_timing(settings, for_s, keep_s),
            dashboard_url=dashboard_url,
        )
    )


def _rule_timing(settings: Settings, for_s: float | None, keep_s: float | None) -> dict[str, Any]:
    """The rules' pending and keep-firing times: the options', else the config's lifecycle's.

    An explicit `--for` applies to every metric; otherwise the lifecycle's
    per-metric pending times are carried over too. The clear margins are always
    the lifecycle's, so a rule resolves when the in-process alert does.
    """
    lifecycle = settings.alerting.lifecycle
    return {
        "clear_margin": lifecycle.clear_margin,
        "clear_margin_by_metric": dict(lifecycle.clear_margin_by_metric),
        "for_seconds": lifecycle.for_s if for_s is None else for_s,
        "for_by_metric": dict(lifecycle.for_by_metric) if for_s is None else {},
        "keep_firing_for_seconds": lifecycle.keep_firing_for_s if keep_s is None else keep_s,
    }


def _echo_generated(generate: Any) -> None:
    try:
        text = generate()
    except MonitorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text, nl=False)


def _absolute(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Alertmanager 0.25 reads a relative secret path from its own working folder, not the
    # config file's: written absolute, the file is found wherever Alertmanager starts.
    if value is None or not value.strip():
        return value
    return os.path.abspath(value)


_SECRET_PATH_HELP = " (a relative path is written absolute, from the current folder)."
_receiver_options = [
    click.option(
        "--pagerduty-routing-key-file",
        callback=_absolute,
        help="File holding the PagerDuty routing key" + _SECRET_PATH_HELP,
    ),
    click.option(
        "--slack-webhook-url-file",
        callback=_absolute,
        help="File holding the Slack webhook URL" + _SECRET_PATH_HELP,
    ),
    click.option("--webhook-url", help="A generic webhook receiver for info alerts."),
    click.option("--slack-channel", help="Slack channel override."),
]


def _with_receivers(f: Any) -> Any:
    for option in reversed(_receiver_options):
        f = option(f)
    return f


_grouping_options = [
    click.option(
        "--group-wait",
        default=30.0,
        show_default=True,
        type=_Finite(min=0),
        help="Seconds Alertmanager waits before a new group's first notification.",
    ),
    click.option(
        "--group-interval",
        default=300.0,
        show_default=True,
        type=_Finite(min=0, min_open=True),
        help="Seconds between notifications of a changed group.",
    ),
    click.option(
        "--repeat-interval",
        default=4 * 3600.0,
        show_default=True,
        type=_Finite(min=0, min_open=True),
        help="Seconds before an unchanged firing group is notified again.",
    ),
]


def _with_grouping(f: Any) -> Any:
    for option in reversed(_grouping_options):
        f = option(f)
    return f


@main.command("alertmanager-config")
@_with_receivers
@_with_grouping
def alertmanager_config(
    pagerduty_routing_key_file: str | None,
    slack_webhook_url_file: str | None,
    webhook_url: str | None,
    slack_channel: str | None,
    group_wait: float,
    group_interval: float,
    repeat_interval: float,
) -> None:
    """Print an Alertmanager configuration: receivers by severity, inhibition of lower levels."""
    from .alertmanager_config import generate_alertmanager_config

    _echo_generated(
        lambda: generate_alertmanager_config(
            pagerduty_routing_key_file=pagerduty_routing_key_file,
            slack_webhook_url_file=slack_webhook_url_file,
            webhook_url=webhook_url,
            slack_channel=slack_channel,
            group_wait_seconds=group_wait,
            group_interval_seconds=group_interval,
            repeat_interval_seconds=repeat_interval,
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
@click.option(
    "--dashboards-path",
    help="Where Grafana will see dashboard.json (default: DIRECTORY, absolute).",
)
@click.option(
    "--scrape-interval",
    default=15.0,
    show_default=True,
    type=_Finite(min=1),
    help="Seconds between scrapes of the sidecars and Alertmanager.",
)
@click.option(
    "--evaluation-interval",
    type=_Finite(min=0, min_open=True),
    default=None,
    help="Seconds between rule evaluations (default: the scrape interval).",
)
@click.option(
    "--for",
    "for_s",
    type=_Finite(min=0),
    default=None,
    help="Seconds a rule must hold before firing (default: the config's).",
)
@click.option(
    "--down-for",
    default=60.0,
    show_default=True,
    type=_Finite(min=0),
    help="Seconds a sidecar may miss scrapes before MhcSidecarDown fires.",
)
@_with_receivers
@_with_grouping
def export(
    directory: str,
    targets: tuple[str, ...],
    config_path: str | None,
    alertmanager: str,
    prometheus_url: str,
    grafana_url: str | None,
    dashboards_path: str | None,
    scrape_interval: float,
    evaluation_interval: float | None,
    for_s: float | None,
    down_for: float,
    pagerduty_routing_key_file: str | None,
    slack_webhook_url_file: str | None,
    webhook_url: str | None,
    slack_channel: str | None,
    group_wait: float,
    group_interval: float,
    repeat_interval: float,
) -> None:
    """Write dashboard, provisioning, rules, Alertmanager and Prometheus configs to DIRECTORY."""
    from .bundle import export_bundle

    settings = _load_settings(config_path)
    pagerduty_url, slack_channel = _receivers_from_config(
        settings, slack_channel, slack_webhook_url_file
    )
    try:
        paths = export_bundle(
            directory,
            config=settings.alert_config,
            targets=list(targets),
            alertmanager_address=alertmanager,
            prometheus_url=prometheus_url,
            grafana_url=grafana_url,
            dashboards_path=dashboards_path,
            scrape_interval_seconds=scrape_interval,
            evaluation_interval_seconds=evaluation_interval,
            **_rule_timing(settings, for_s, None),
            down_for_seconds=down_for,
            pagerduty_routing_key_file=pagerduty_routing_key_file,
            slack_webhook_url_file=slack_webhook_url_file,
            webhook_url=webhook_url,
            slack_channel=slack_channel,
            pagerduty_url=pagerduty_url,
            group_wait_seconds=group_wait,
            group_interval_seconds=group_interval,
            repeat_interval_seconds=repeat_interval,
        )
    except (MonitorError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths:
        click.echo(path)


def _receivers_from_config(
    settings: Settings, slack_channel: str | None, slack_webhook_url_file: str | None
) -> tuple[str | None, str | None]:
    """What the bundle's Alertmanager takes from the configured receivers: a PagerDuty
    URL other than the default, and the Slack channel unless `--slack-channel` names one."""
    from .config import DEFAULT_PAGERDUTY_URL

    receivers = settings.alerting.receivers
    pagerduty = next((r for r in receivers if r.kind == "pagerduty"), None)
    slack = next((r for r in receivers if r.kind == "slack"), None)
    url = pagerduty.url if pagerduty is not None else None
    if slack_channel is None and slack is not None and slack_webhook_url_file is not None:
        slack_channel = slack.channel
    return (None if url == DEFAULT_PAGERDUTY_URL else url), slack_channel


if __name__ == "__main__":  # pragma: no cover
    main()
