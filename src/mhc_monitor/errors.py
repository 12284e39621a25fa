"""The exception tree of mhc-monitor.

    MonitorError                 base of everything this package raises on purpose
    +-- UsageError               a caller's mistake: bad argument, bad request
    |   +-- ConfigError          a configuration that cannot be used
    +-- DeliveryError            a notification could not be delivered

`UsageError` also derives from `ValueError`, so code that catches the built-in
keeps working.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DeliveryError", "MonitorError", "UsageError"]


class MonitorError(Exception):
    """Base class of every error mhc-monitor raises on purpose."""


class UsageError(MonitorError, ValueError):
    """A caller's mistake: an argument, a request or a file that cannot be used."""


class ConfigError(UsageError):
    """A configuration value that is missing, mistyped, out of range or mis-ordered."""


class DeliveryError(MonitorError):
    """A notification that could not be delivered; `retryable` says whether to try again."""

    def __init__(self, message: str, *, retryable: bool, reason: str) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason
