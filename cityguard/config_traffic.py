"""Traffic scene configuration of one camera: lanes, intersection box, crosswalks, lines, no-stopping zones."""
from __future__ import annotations

from cityguard.config_base import Frozen


class SceneConfig(Frozen):
    """The traffic scene seen by one camera."""
