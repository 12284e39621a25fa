"""Configuration: a TOML file plus secrets from the environment or files.

    load_config(path) -> Settings        every problem at once, each with its line
    check_config(path) -> (ok, lines)    what `mhc-monitor check-config` prints
    send_test_alert(settings, name)      one alert and its resolve through a receiver

A file looks like this (every table and key is optional):

    [labels]
    model = "llama-3-8b"

    [thresholds.acceptance]
    warning = 0.7            # "off" switches a level off
    statistic = "p50"
    clear_margin = 0.02      # a firing alert clears only at >= 0.714
    for = 30                 # seconds beyond a threshold before it fires

    [lifecycle]
    for = 0
    keep_firing_for = 0
    clear_margin = 0.05
    repeat_interval = 14400
    no_data_after = 300      # 0 switches the no-data alert off
    interval = 1

    [delivery]
    timeout = 10
    backoff_initial = 1
    backoff_max = 300
    max_age = 86400

    [receivers.pagerduty]    # routing key from MHC_PAGERDUTY_ROUTING_KEY or routing_key_file
    url = "https://events.pagerduty.com/v2/enqueue"

    [receivers.slack]        # webhook URL from MHC_SLACK_WEBHOOK_URL or url_file
    channel = "#llm-alerts"

    [service]
    host = "127.0.0.1"
    port = 9477
    token_file = "/run/secrets/mhc-ingest-token"   # or MHC_INGEST_TOKEN
    store = "./mhc-monitor.sqlite3"

Receivers may take any name when they say their `type`
(`[receivers.oncall] type = "pagerduty"`). With no receiver configured, alerts
go to the log. Secrets are held in `Secret`, whose repr and str are "***".
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .alerts import AlertConfig, AlertLevel, threshold_field
from .errors import ConfigError, DeliveryError, UsageError
from .metrics import METRICS, MetricName
from .monitor import MAX_LABELS, label_problem

__all__ = [
    "DEFAULT_PAGERDUTY_URL",
    "DEFAULT_STORE_PATH",
    "INGEST_TOKEN_ENV",
    "PAGERDUTY_KEY_ENV",
    "SLACK_URL_ENV",
    "AlertingSettings",
    "DeliverySettings",
    "LifecycleSettings",
    "ReceiverSettings",
    "Secret",
    "ServiceSettings",
    "Settings",
    "check_config",
    "is_loopback_host",
    "load_config",
    "send_test_alert",
]

DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_STORE_PATH = "./mhc-monitor.sqlite3"
PAGERDUTY_KEY_ENV = "MHC_PAGERDUTY_ROUTING_KEY"
SLACK_URL_ENV = "MHC_SLACK_WEBHOOK_URL"
INGEST_TOKEN_ENV = "MHC_INGEST_TOKEN"
RECEIVER_KINDS = ("pagerduty", "slack", "log")
_DEFAULT_PORT = 9477


def is_loopback_host(host: str) -> bool:
    """Whether `host` reaches this machine only: "localhost" or a loopback address.

    127.0.0.0/8 and ::1 count; "0.0.0.0", "::" and any other name do not.
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Secret:
    """A secret string: `reveal()` gives it, repr and str give "***".

    Equality compares the values, so settings holding secrets still compare.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: pass it only to the network call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        # Pickling would write the value out; a secret stays in the process.
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class LifecycleSettings:
    """How an evaluation becomes an alert: pending time, hysteresis, repeats, no-data.

    Times are in seconds. `clear_margin` is relative: with 0.02, an acceptance
    alert at the 0.7 warning clears only once the value is >= 0.714, a latency
    alert at 50 ms with 0.1 only at <= 45 ms. `for_s`/`clear_margin` apply to
    every metric not named in `for_by_metric`/`clear_margin_by_metric`.
    `no_data_after_s` of None switches the no-data alert off.
    """

    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    clear_margin: float = 0.05
    repeat_interval_s: float = 4 * 3600.0
    no_data_after_s: float | None = 300.0
    no_data_level: AlertLevel = AlertLevel.CRITICAL
    for_by_metric: Mapping[str, float] = field(default_factory=dict)
    clear_margin_by_metric: Mapping[str, float] = field(default_factory=dict)

    def for_of(self, metric: str) -> float:
        """The pending time of `metric`."""
        return self.for_by_metric.get(str(metric), self.for_s)

    def margin_of(self, metric: str) -> float:
        """The relative clear margin of `metric`."""
        return self.clear_margin_by_metric.get(str(metric), self.clear_margin)


@dataclass(frozen=True)
class DeliverySettings:
    """Retries and timeouts of notification delivery, in seconds.

    A retryable failure waits `backoff_initial_s * 2**(attempt-1)` (at most
    `backoff_max_s`), scaled by a random factor in [1 - jitter, 1], and never
    less than the receiver's Retry-After. A notification still undelivered after
    `max_age_s` is dropped and counted.
    """

    timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    jitter: float = 0.5
    max_age_s: float = 24 * 3600.0
    keep_history_s: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class ReceiverSettings:
    """One receiver: its name, kind ("pagerduty", "slack", "log") and where it is.

    `secret` is the PagerDuty routing key or the Slack webhook URL. `url` is the
    PagerDuty enqueue URL (unused for Slack, whose URL is the secret).
    `rate_per_minute` and `burst` size the receiver's token bucket.
    """

    name: str
    kind: str
    url: str | None = None
    secret: Secret | None = None
    channel: str | None = None
    rate_per_minute: float = 60.0
    burst: int = 1

    @classmethod
    def pagerduty(
        cls,
        routing_key: str | Secret,
        *,
        name: str = "pagerduty",
        url: str = DEFAULT_PAGERDUTY_URL,
        rate_per_minute: float = 120.0,
        burst: int = 10,
    ) -> ReceiverSettings:
        """A PagerDuty Events v2 receiver."""
        key = routing_key if isinstance(routing_key, Secret) else Secret(routing_key)
        return cls(name, "pagerduty", url, key, None, rate_per_minute, burst)

    @classmethod
    def slack(
        cls,
        webhook_url: str | Secret,
        *,
        name: str = "slack",
        channel: str | None = None,
        rate_per_minute: float = 60.0,
        burst: int = 1,
    ) -> ReceiverSettings:
        """A Slack incoming-webhook receiver."""
        url = webhook_url if isinstance(webhook_url, Secret) else Secret(webhook_url)
        return cls(name, "slack", None, url, channel, rate_per_minute, burst)

    @classmethod
    def log(cls, *, name: str = "log") -> ReceiverSettings:
        """A receiver that writes alerts to the log."""
        return cls(name, "log", rate_per_minute=6000.0, burst=100)


@dataclass(frozen=True)
class AlertingSettings:
    """Everything `Alerting` needs: lifecycle, delivery, receivers and the evaluation interval.

    With no receivers, alerts go to a "log" receiver.
    """

    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    receivers: tuple[ReceiverSettings, ...] = ()
    interval_s: float = 1.0

    def effective_receivers(self) -> tuple[ReceiverSettings, ...]:
        """The configured receivers, or the log receiver when there are none."""
        return self.receivers or (ReceiverSettings.log(),)


@dataclass(frozen=True)
class ServiceSettings:
    """The sidecar: where it listens, the ingest token and the alert store path."""

    host: str = "127.0.0.1"
    port: int = _DEFAULT_PORT
    token: Secret | None = None
    store_path: str = DEFAULT_STORE_PATH


@dataclass(frozen=True)
class Settings:
    """A loaded configuration: thresholds, alerting, service, constant labels."""

    alert_config: AlertConfig = field(default_factory=AlertConfig)
    alerting: AlertingSettings = field(default_factory=AlertingSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    labels: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None
    window: int = 1000
    path: Path | None = None
    secret_files: tuple[Path, ...] = ()


# -- the file schema ------------------------------------------------------------------------

_Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Margin = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
_Level = float | Literal["off"]


class _Model(BaseModel):
    # Strict: `for = true` is a mistake, not one second.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class _Thresholds(_Model):
    warning: _Level | None = None
    critical: _Level | None = None
    emergency: _Level | None = None
    statistic: Literal["mean", "p50", "p90", "p95", "p99", "min", "max", "last"] | None = None
    clear_margin: _Margin | None = None
    for_: _Seconds | None = Field(default=None, alias="for")


class _AllThresholds(_Model):
    acceptance: _Thresholds | None = None
    curvature: _Thresholds | None = None
    energy: _Thresholds | None = None
    latency: _Thresholds | None = None
    stability: _Thresholds | None = None
    sinkhorn_iterations: _Thresholds | None = None


class _Lifecycle(_Model):
    for_: _Seconds = Field(default=0.0, alias="for")
    keep_firing_for: _Seconds = 0.0
    clear_margin: _Margin = 0.05
    repeat_interval: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 4 * 3600.0
    no_data_after: _Seconds = 300.0
    no_data_level: Literal["warning", "critical", "emergency"] = "critical"
    interval: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 1.0


class _Delivery(_Model):
    timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10.0
    backoff_initial: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    backoff_max: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 300.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_age: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 24 * 3600.0
    keep_history: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 7 * 24 * 3600.0


class _Receiver(_Model):
    type: Literal["pagerduty", "slack", "log"] | None = None
    url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    routing_key_file: str | None = None
    routing_key_env: str = PAGERDUTY_KEY_ENV
    url_file: str | None = None
    url_env: str = SLACK_URL_ENV
    channel: Annotated[str, Field(min_length=1, max_length=81)] | None = None
    rate_per_minute: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    burst: Annotated[int, Field(ge=1)] | None = None


class _Service(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = _DEFAULT_PORT
    token_file: str | None = None
    token_env: str = INGEST_TOKEN_ENV
    store: Annotated[str, Field(min_length=1)] = DEFAULT_STORE_PATH


class _Monitor(_Model):
    window: Annotated[int, Field(ge=1, le=10_000_000)] = 1000
    source: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class _File(_Model):
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict)
    monitor: _Monitor = Field(default_factory=_Monitor)
    thresholds: _AllThresholds = Field(default_factory=_AllThresholds)
    lifecycle: _Lifecycle = Field(default_factory=_Lifecycle)
    delivery: _Delivery = Field(default_factory=_Delivery)
    receivers: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")], _Receiver] = Field(
        default_factory=dict
    )
    service: _Service = Field(default_factory=_Service)


# -- line numbers ---------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p.strip("\"'") for p in parts)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each table and key path of a TOML text to its 1-based line number.

    Reads headers (`[a.b]`) and `key = value` lines, dotted keys included; a
    value spanning lines is attributed to its first line. Enough to point at a
    problem, not a TOML parser.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            path = table + _split_key(key.group(1))
            lines.setdefault(path, number)
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
    return lines


def _line_of(lines: Mapping[tuple[str, ...], int], loc: tuple[str, ...]) -> int | None:
    # The longest prefix of the key path that the file names: a missing key is
    # reported on its table's line.
    for end in range(len(loc), 0, -1):
        found = lines.get(loc[:end])
        if found is not None:
            return found
    return None


# -- loading --------------------------------------------------------------------------------


@dataclass
class _Problems:
    path: str
    lines: Mapping[tuple[str, ...], int]
    items: list[tuple[int, str]] = field(default_factory=list)

    def add(self, loc: tuple[str, ...], message: str) -> None:
        line = _line_of(self.lines, loc)
        where = ".".join(loc)
        self.items.append((line or 0, f"{where}: {message}" if where else message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        rendered = [
            f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}"
            for line, message in sorted(self.items)
        ]
        error = ConfigError(f"{len(rendered)} problem(s) in {self.path}:\n" + "\n".join(rendered))
        error.problems = rendered  # type: ignore[attr-defined]
        raise error


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and resolve a TOML configuration file.

    Secrets come from the files the configuration names, else from the
    environment (`env`, default `os.environ`). Raises `ConfigError` listing
    every problem as `FILE:LINE: key.path: message`.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, env=os.environ if env is None else env, path=file)


def parse_config(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
    name: str | None = None,
) -> Settings:
    """Like `load_config`, from the text of a file; `name` is what problems are reported on.

    `parse_config("")` gives the defaults plus the receivers and token the
    environment switches on.
    """
    env = os.environ if env is None else env
    if name is None:
        name = str(path) if path is not None else "<config>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # TODO: only the first syntax error is reported (tomllib stops there); a file with
        # several needs as many runs of check-config.
        at = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        where = f"{name}:{at.group(1)}" if at else name
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    problems = _Problems(name, key_lines(text))
    model = _validate(raw, problems)
    if model is None:
        problems.raise_if_any()
        raise AssertionError("unreachable")
    alert_config = _alert_config(model, problems)
    _cross_checks(model, problems)
    receivers, secret_files = _receivers(model, env, problems, path)
    token, token_files = _token(model.service, env, problems, path)
    problems.raise_if_any()
    assert alert_config is not None
    return Settings(
        alert_config=alert_config,
        alerting=AlertingSettings(
            lifecycle=_lifecycle(model),
            delivery=_delivery(model.delivery),
            receivers=receivers,
            interval_s=model.lifecycle.interval,
        ),
        service=ServiceSettings(
            host=model.service.host,
            port=model.service.port,
            token=token,
            store_path=model.service.store,
        ),
        labels=MappingProxyType(dict(model.labels)),
        source=model.monitor.source,
        window=model.monitor.window,
        path=path,
        secret_files=secret_files + token_files,
    )


def _cross_checks(model: _File, problems: _Problems) -> None:
    """Problems no single key shows: the constant labels as the monitor checks them, and
    the backoff range."""
    if len(model.labels) > MAX_LABELS:
        problems.add(("labels",), f"at most {MAX_LABELS} constant labels, got {len(model.labels)}")
    for name, value in model.labels.items():
        problem = label_problem(name, value)
        if problem is not None:
            problems.add(("labels", name), problem)
    delivery = model.delivery
    if delivery.backoff_initial > delivery.backoff_max:
        problems.add(
            ("delivery", "backoff_initial"),
            f"{delivery.backoff_initial:g} s must not exceed backoff_max "
            f"({delivery.backoff_max:g} s)",
        )


def _validate(raw: dict[str, Any], problems: _Problems) -> _File | None:
    """The validated file; schema problems go to `problems`.

    Keys that break the schema are removed and the rest validated again, so
    the checks that need a valid table (threshold order, secrets) still run
    and every problem is reported at once.
    """
    valid: _File | None = None
    for _ in range(3):
        try:
            valid = _File.model_validate(raw)
            break
        except ValidationError as exc:
            messages: dict[tuple[str, ...], list[str]] = {}
            for error in exc.errors(include_url=False, include_input=False):
                loc = _key_path(raw, error["loc"])
                message = _MODEL_NAME.sub("", error["msg"])
                if loc[-1:] == ("[key]",):
                    # A bad table name: drop the whole table, name the problem on it.
                    loc = loc[:-1]
                    message = f"not a valid name: {message}"
                messages.setdefault(loc, []).append(message)
                _remove(raw, loc)
            for loc, texts in messages.items():
                # A union (a number or "off") reports one message per member.
                problems.add(loc, " | ".join(dict.fromkeys(texts)))
    return valid


_MODEL_NAME = re.compile(r" or instance of _\w+")


def _key_path(raw: Any, loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The key path of an error's location, without pydantic's union member tags.

    A part is a key when the file has it there (a key may well be called
    "int"); otherwise a tag such as "float" or "literal['off']" is left out.
    """
    path: list[str] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif _is_union_tag(str(part)):
            continue
        else:
            node = None
        path.append(str(part))
    return tuple(path)


def _is_union_tag(part: str) -> bool:
    return part.startswith(("function-", "literal[", "constrained-")) or part in {
        "float",
        "int",
        "str",
        "bool",
    }


def _remove(raw: dict[str, Any], loc: tuple[str, ...]) -> None:
    node: Any = raw
    for part in loc[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict) and loc:
        node.pop(loc[-1], None)


def _alert_config(model: _File, problems: _Problems) -> AlertConfig | None:
    values: dict[str, Any] = {}
    statistics: dict[str, str] = {}
    for spec in METRICS:
        table = getattr(model.thresholds, spec.name.value)
        if table is None:
            continue
        mine: dict[str, Any] = {}
        for level in (AlertLevel.WARNING, AlertLevel.CRITICAL, AlertLevel.EMERGENCY):
            value = getattr(table, level.name.lower())
            if value is not None:
                mine[threshold_field(spec, level)] = None if value == "off" else value
        # One metric at a time, so each problem lands on that metric's table.
        try:
            AlertConfig(**mine)
        except ConfigError as exc:
            for message in str(exc).removeprefix("invalid AlertConfig: ").split("; "):
                problems.add(("thresholds", spec.name.value, _level_in(message)), message)
        values.update(mine)
        if table.statistic is not None:
            statistics[spec.name.value] = table.statistic
    try:
        return AlertConfig(**values, statistics=statistics)
    except ConfigError:
        return None


def _level_in(message: str) -> str:
    match = re.search(r"_(warning|critical|emergency)(?:_ms)?\b", message)
    return match.group(1) if match else ""


def _lifecycle(model: _File) -> LifecycleSettings:
    life = model.lifecycle
    for_by: dict[str, float] = {}
    margin_by: dict[str, float] = {}
    for spec in METRICS:
        table = getattr(model.thresholds, spec.name.value)
        if table is None:
            continue
        if table.for_ is not None:
            for_by[spec.name.value] = table.for_
        if table.clear_margin is not None:
            margin_by[spec.name.value] = table.clear_margin
    return LifecycleSettings(
        for_s=life.for_,
        keep_firing_for_s=life.keep_firing_for,
        clear_margin=life.clear_margin,
        repeat_interval_s=life.repeat_interval,
        no_data_after_s=life.no_data_after or None,
        no_data_level=AlertLevel[life.no_data_level.upper()],
        for_by_metric=MappingProxyType(for_by),
        clear_margin_by_metric=MappingProxyType(margin_by),
    )


def _delivery(model: _Delivery) -> DeliverySettings:
    return DeliverySettings(
        timeout_s=model.timeout,
        backoff_initial_s=model.backoff_initial,
        backoff_max_s=model.backoff_max,
        jitter=model.jitter,
        max_age_s=model.max_age,
        keep_history_s=model.keep_history,
    )


def _read_secret(
    file: str | None, env_name: str, env: Mapping[str, str], base: Path | None
) -> tuple[Secret | None, Path | None, str | None]:
    """(secret, the file it came from, problem): a named file wins over the environment."""
    if file is not None:
        secret_path = Path(file)
        if not secret_path.is_absolute() and base is not None:
            secret_path = base.parent / secret_path
        try:
            value = secret_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            return None, secret_path, f"cannot read {secret_path}: {exc.strerror}"
        if not value:
            return None, secret_path, f"{secret_path} is empty"
        return Secret(value), secret_path, None
    value = env.get(env_name, "").strip()
    return (Secret(value) if value else None), None, None


def _receivers(
    model: _File, env: Mapping[str, str], problems: _Problems, path: Path | None
) -> tuple[tuple[ReceiverSettings, ...], tuple[Path, ...]]:
    receivers: list[ReceiverSettings] = []
    files: list[Path] = []
    tables = dict(model.receivers)
    # A secret in the environment is enough to switch its receiver on.
    if PAGERDUTY_KEY_ENV in env and not any(_kind(n, r) == "pagerduty" for n, r in tables.items()):
        tables["pagerduty"] = _Receiver()
    if SLACK_URL_ENV in env and not any(_kind(n, r) == "slack" for n, r in tables.items()):
        tables["slack"] = _Receiver()
    for name, table in tables.items():
        loc = ("receivers", name)
        kind = _kind(name, table)
        if kind is None:
            problems.add((*loc, "type"), f"say which kind it is: type = one of {RECEIVER_KINDS}")
            continue
        for key in sorted(table.model_fields_set - _RECEIVER_KEYS[kind]):
            # A key of another kind is a mistake (a Slack URL in a PagerDuty table).
            problems.add((*loc, key), f"not a key of a {kind} receiver")
        if kind == "pagerduty":
            secret, file, problem = _read_secret(
                table.routing_key_file, table.routing_key_env, env, path
            )
            where = "routing_key_file" if table.routing_key_file else ""
            if problem is None and secret is None:
                problem = f"no routing key: set {table.routing_key_env} or routing_key_file"
            if problem is None and secret is not None:
                problem = _routing_key_problem(secret)
            if problem is not None or secret is None:
                problems.add((*loc, where) if where else loc, problem or "no routing key")
                continue
            receivers.append(
                ReceiverSettings(
                    name,
                    "pagerduty",
                    table.url or DEFAULT_PAGERDUTY_URL,
                    secret,
                    None,
                    table.rate_per_minute or 120.0,
                    table.burst or 10,
                )
            )
        elif kind == "slack":
            secret, file, problem = _read_secret(table.url_file, table.url_env, env, path)
            if secret is None and problem is None and table.url is not None:
                # A URL written in the file is allowed, though the file then holds a secret.
                secret = Secret(table.url)
                file = path
            if problem is None and secret is None:
                problem = f"no webhook URL: set {table.url_env} or url_file"
            if (
                problem is None
                and secret is not None
                and not re.match(r"^https?://\S+$", secret.reveal())
            ):
                problem = "the webhook URL is not an http(s) URL"
            if problem is not None or secret is None:
                where = "url_file" if table.url_file else ""
                problems.add((*loc, where) if where else loc, problem or "no webhook URL")
                continue
            receivers.append(
                ReceiverSettings(
                    name,
                    "slack",
                    None,
                    secret,
                    table.channel,
                    table.rate_per_minute or 60.0,
                    table.burst or 1,
                )
            )
        else:
            receivers.append(ReceiverSettings.log(name=name))
            file = None
        if file is not None:
            files.append(file)
    return tuple(receivers), tuple(files)


_RATE_KEYS = {"rate_per_minute", "burst"}
_RECEIVER_KEYS = {
    "pagerduty": {"type", "url", "routing_key_file", "routing_key_env"} | _RATE_KEYS,
    "slack": {"type", "url", "url_file", "url_env", "channel"} | _RATE_KEYS,
    "log": {"type"},
}


def _kind(name: str, table: _Receiver) -> str | None:
    if table.type is not None:
        return table.type
    return name if name in RECEIVER_KINDS else None


def _routing_key_problem(secret: Secret) -> str | None:
    key = secret.reveal()
    if len(key) != 32 or not (key.isascii() and key.isalnum()):
        # The shape only: the key itself must never reach a message.
        return f"the routing key must be 32 ASCII letters and digits, got {len(key)} characters"
    return None


def _token(
    service: _Service, env: Mapping[str, str], problems: _Problems, path: Path | None
) -> tuple[Secret | None, tuple[Path, ...]]:
    secret, file, problem = _read_secret(service.token_file, service.token_env, env, path)
    if problem is not None:
        problems.add(("service", "token_file"), problem)
    return secret, (file,) if file is not None else ()


# -- CLI helpers ----------------------------------------------------------------------------


def check_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> tuple[bool, list[str]]:
    """Validate a configuration for `mhc-monitor check-config`: (ok, lines to print).

    Lines name every problem with its line, then warnings (a secrets file
    readable by group or others), then what the configuration will do.
    """
    try:
        settings = load_config(path, env)
    except ConfigError as exc:
        return False, list(getattr(exc, "problems", [str(exc)]))
    lines = [f"{path}: ok"]
    for secret_file in settings.secret_files:
        try:
            mode = secret_file.stat().st_mode
        except OSError:
            continue
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            lines.append(
                f"warning: {secret_file} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
            )
    service = settings.service
    if not is_loopback_host(service.host) and service.token is None:
        lines.append(
            f"warning: service.host {service.host} without an ingest token: anyone who can "
            f"reach it can send samples; set {INGEST_TOKEN_ENV} or service.token_file"
        )
    for receiver in settings.alerting.effective_receivers():
        lines.append(f"receiver {receiver.name}: {_describe(receiver)}")
    life = settings.alerting.lifecycle
    lines.append(
        f"lifecycle: for {life.for_s:g} s, clear margin {life.clear_margin:g}, "
        f"repeat every {life.repeat_interval_s:g} s, no data after "
        f"{'never' if life.no_data_after_s is None else f'{life.no_data_after_s:g} s'}"
    )
    lines.append(
        f"service: {service.host}:{service.port}, store {service.store_path}, "
        f"ingest token {'set' if service.token else 'not set'}"
    )
    return True, lines


def _describe(receiver: ReceiverSettings) -> str:
    rate = f"{receiver.rate_per_minute:g}/min"
    if receiver.kind == "pagerduty":
        return f"PagerDuty Events v2 at {receiver.url}, routing key set, {rate}"
    if receiver.kind == "slack":
        channel = receiver.channel or "the webhook's channel"
        return f"Slack webhook (URL set) to {channel}, {rate}"
    return "the log"


def send_test_alert(settings: Settings, receiver_name: str) -> str:
    """Send one test alert and its resolve through a configured receiver, synchronously.

    Returns a line saying what happened; raises `UsageError` for an unknown
    receiver and `DeliveryError` when either event was not accepted.
    """
    from datetime import UTC, datetime

    from .alerts import Alert, make_dedup_key
    from .delivery.notifiers import build_notifier

    receivers = {r.name: r for r in settings.alerting.effective_receivers()}
    receiver = receivers.get(receiver_name)
    if receiver is None:
        known = ", ".join(sorted(receivers)) or "none"
        raise UsageError(f"no receiver named {receiver_name!r} (configured: {known})")
    source = settings.source or settings.labels.get("instance") or "mhc-monitor"
    alert = Alert(
        metric=MetricName.ACCEPTANCE,
        level=AlertLevel.WARNING,
        value=0.5,
        threshold=0.7,
        message="mhc-monitor test alert: delivery works; a resolve follows",
        source=source,
        labels=MappingProxyType(dict(settings.labels)),
        timestamp=datetime.now(UTC),
        dedup_key=make_dedup_key(source, settings.labels, "test"),
    )
    notifier = build_notifier(receiver, settings.alerting.delivery.timeout_s)
    try:
        results = [notifier.send(alert, action) for action in ("trigger", "resolve")]
    finally:
        notifier.close()
    text = f"{receiver.name}: " + "; ".join(
        f"{action} {r.describe()}"
        for action, r in zip(("trigger", "resolve"), results, strict=True)
    )
    if any(r.outcome != "delivered" for r in results):
        failed = next(r for r in results if r.outcome != "delivered")
        raise DeliveryError(text, retryable=failed.outcome == "retryable", reason=failed.reason)
    return text
