"""Alerting configuration: channels, routing rules, escalation and the incident store."""
from __future__ import annotations

from cityguard.config_base import Frozen


class AlertingConfig(Frozen):
    """Where alerts go and when."""
