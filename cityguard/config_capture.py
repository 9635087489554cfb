"""Capture configuration: how producers read cameras and report their health."""
from __future__ import annotations

from cityguard.config_base import Frozen


class ProducerConfig(Frozen):
    """Settings of the frame producer processes (shared by all their cameras)."""
