"""The `alerts` section: budget thresholds, hourly spend, and the webhook they go to."""

from __future__ import annotations

import msgspec

from tollway.errors import ConfigError


class AlertsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Fractions of any budget; each fires once per budget window.
    budget_thresholds: list[float] = msgspec.field(default_factory=lambda: [0.8, 1.0])
    hourly_spend_usd: float | None = None  # fires once per UTC hour past this
    webhook_url: str | None = None  # JSON POST, retried, never blocking a request
    webhook_attempts: int = 5


def check_alerts(a: AlertsConfig) -> None:
    for t in a.budget_thresholds:
        if not 0 < t <= 1:
            raise ConfigError("alerts.budget_thresholds: fractions in (0, 1], e.g. [0.8, 1.0]")
    url = a.webhook_url
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"alerts.webhook_url: expected an http(s) URL, got {url!r}")
