"""Routing rules: which configured routes take a notice, by severity, type, camera, zone and time of day."""
from __future__ import annotations

from datetime import time as clock_time

from schemas.settings.alerting import RouteConfig, RouteMatch
from sinks.alerts.notice import Notice


def parse_hours(hours: str) -> tuple[clock_time, clock_time | None]:
    """'22:00-06:00' -> (22:00, 06:00); an end of 24:00 is None, meaning midnight at the end of the day."""
    start, end = hours.split("-")
    end_time = None if end == "24:00" else clock_time.fromisoformat(end)
    return clock_time.fromisoformat(start), end_time


def within_hours(hours: str | None, local: clock_time) -> bool:
    if hours is None:
        return True
    start, end = parse_hours(hours)
    if end is None:
        return local >= start
    if start < end:
        return start <= local < end
    return local >= start or local < end  # the window wraps midnight


def matches(match: RouteMatch, notice: Notice, local: clock_time) -> bool:
    return ((not match.severities or notice.severity in match.severities)
            and (not match.types or notice.type in match.types)
            and (not match.cameras or notice.camera_id in match.cameras)
            and (not match.zones or notice.zone_id in match.zones)
            and within_hours(match.hours, local))


def select_routes(routes: list[RouteConfig], notice: Notice, local: clock_time) -> list[RouteConfig]:
    """Routes in configuration order; the first match stops the search unless it says continue_matching."""
    selected = []
    for route in routes:
        if matches(route.match, notice, local):
            selected.append(route)
            if not route.continue_matching:
                break
    return selected
