from datetime import time

import pytest

from schemas import EventState, Severity
from schemas.settings.alerting import RouteConfig, RouteMatch
from sinks.alerts.notice import Notice
from sinks.alerts.routing import select_routes, within_hours


def notice(severity=Severity.CRITICAL, type_="risk_level_changed", camera="plaza", zone="north") -> Notice:
    return Notice("inc-1", "events", type_, EventState.OPENED, severity, camera, zone, "t", "m", 0.0)


def route(route_id, **match) -> RouteConfig:
    return RouteConfig(id=route_id, match=RouteMatch(**match), broadcast=["alarm"])


@pytest.mark.parametrize("hours, now, inside", [
    ("08:00-18:00", time(8, 0), True),
    ("08:00-18:00", time(17, 59), True),
    ("08:00-18:00", time(18, 0), False),
    ("22:00-06:00", time(23, 30), True),   # wraps midnight
    ("22:00-06:00", time(5, 59), True),
    ("22:00-06:00", time(12, 0), False),
    ("18:00-24:00", time(23, 59), True),
    ("18:00-24:00", time(0, 0), False),
    (None, time(3, 0), True),
])
def test_time_of_day_windows(hours, now, inside):
    assert within_hours(hours, now) is inside


def test_first_matching_route_wins_by_severity_type_camera_and_zone():
    routes = [
        route("traffic", types=["wrong_way"]),
        route("north-crowd", severities=[Severity.CRITICAL], cameras=["plaza"], zones=["north"]),
        route("catch-all"),
    ]
    assert [r.id for r in select_routes(routes, notice(), time(12))] == ["north-crowd"]
    assert [r.id for r in select_routes(routes, notice(zone="south"), time(12))] == ["catch-all"]
    assert [r.id for r in select_routes(routes, notice(severity=Severity.WARNING), time(12))] == ["catch-all"]
    assert [r.id for r in select_routes(routes, notice(type_="wrong_way"), time(12))] == ["traffic"]


def test_continue_matching_collects_later_routes_and_hours_filter():
    routes = [
        RouteConfig(id="night", match=RouteMatch(hours="22:00-06:00"), broadcast=["alarm"], continue_matching=True),
        route("all"),
    ]
    assert [r.id for r in select_routes(routes, notice(), time(23))] == ["night", "all"]
    assert [r.id for r in select_routes(routes, notice(), time(12))] == ["all"]
    assert select_routes([route("only-info", severities=[Severity.INFO])], notice(), time(12)) == []
