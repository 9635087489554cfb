"""Everything a camera's traffic analyzer remembers between frames, as plain data for the changelog table.

Every map here is bounded: tracks, their line sides and timers go with the track after `track_ttl_seconds`
unseen (longer only while the background still shows the vehicle where it was lost), and at most `max_tracks` are
kept; static objects go once their evidence has been gone for their grace time; collision candidates expire, and at
most `MAX_COLLISION_CANDIDATES` are kept; congestion keeps one bucket per second of its window.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import UNTRACKED
from schemas.base import runs_up_to
from schemas.settings.traffic import SceneConfig

Box = tuple[float, float, float, float]

# A camera's traffic state is one JSON record on the faust changelog, and faust's producer refuses a record over
# producer_max_request_size (1,000,000 bytes by default). The tracks grow with the traffic in view, so they get a
# share of that; worst-case sizes (every number at its longest), checked in tests/traffic/test_state_size.py:
TRACKS_BUDGET_BYTES = 700_000
TRACK_STATE_BYTES = 3_400  # one track with a full history, without its counting-line sides and pedestrian-area timers
LINE_SIDE_BYTES = 60  # a track's side at one counting line, besides the line's id
AREA_TIMER_BYTES = 60  # a track's timer in one pedestrian area, besides the area's id


# Contacts between moving vehicles are kept a few seconds, each until it becomes a collision or expires; the busiest
# dev-set clip held 57 at once. A flood of fast, overlapping boxes (a detector's ghosts) made thousands in seconds, so
# they get a share of the record too, the oldest not yet seen to be an impact going first.
COLLISIONS_BUDGET_BYTES = 200_000
COLLISION_CANDIDATE_BYTES = 1_600  # one contact at its largest
MAX_COLLISION_CANDIDATES = COLLISIONS_BUDGET_BYTES // COLLISION_CANDIDATE_BYTES


def max_tracks(scene: SceneConfig) -> int:
    """The most tracks whose state fits TRACKS_BUDGET_BYTES in this scene."""
    per_track = (TRACK_STATE_BYTES + sum(LINE_SIDE_BYTES + len(line.id) for line in scene.counting_lines)
                 + sum(AREA_TIMER_BYTES + len(area.id) for area in scene.pedestrian_areas))
    return TRACKS_BUDGET_BYTES // per_track


class State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineSide(State):
    """A track's columns of processors.analytics.lines at one counting line."""

    side: int = Field(default=0, description="+1 on the normal's side of the line, -1 on the other, 0 not yet known")
    pending: int = Field(default=0, description="side of a crossing not yet long enough to count; 0 for none")
    pending_frames: int = Field(default=0, description="frames spent on the pending side so far")


class LaneStretch(State):
    """Where a track's current stretch in one lane, seen without a long gap, began, kept after the history drops it
    (slow wrong-way driving adds up however long it takes), and the most it went back along the lane in one step."""
    since: float
    x: float
    y: float
    followed_at: float = Field(description="last time the stretch was followed")
    largest_step_back: float = Field(description="px against the lane's direction in one history step")


class TrackState(State):
    track_id: int
    class_name: str
    box: Box
    first_seen: float
    last_seen: float
    confidence: float = Field(description="running mean of the detection confidence")
    # (capture time, anchor x, anchor y, box height), bottom-centre anchor, at least SAMPLE_SPACING_S apart.
    history: list[tuple[float, float, float, float]] = Field(default_factory=list)
    rest_point: tuple[float, float]
    rest_since: float = Field(description="since when the box has stayed near rest_box")
    rest_box: Box | None = Field(default=None, description="the box when the track came to rest (all four edges "
                                 "must stay near it: a box clipped by the frame edge can keep its anchor still)")
    held_at: float | None = Field(default=None, description="last time the background model still showed this "
                                  "vehicle where the detector lost it")
    driven_over_at: float | None = Field(default=None, description="last time a moving vehicle's ground point went "
                                         "over its box while the detector did not see it")
    lane_stretch: LaneStretch | None = None
    vehicle_since: float | None = Field(default=None, description="when it was first read as a vehicle")
    first_point: tuple[float, float] | None = Field(default=None, description="the anchor where it was first seen "
                                                    "(since the view last moved)")
    moved_away: bool = Field(default=False, description="has been half a box height or more from first_point (a "
                             "post or sign read as a person never is)")
    reacquired: bool = Field(default=False, description="a new track went on with its motion (the same vehicle "
                             "found again under a new id)")
    doubles: int | None = Field(default=None, description="the vehicle track whose box this one's lay over in the "
                                "frame it first appeared: a second detection of that vehicle, until the two part")
    lines: dict[str, LineSide] = Field(default_factory=dict)
    timers: dict[str, float] = Field(default_factory=dict, description="condition name -> since when it holds")


class FallbackTrack(State):
    track_id: int
    class_name: str
    box: Box
    last_seen: float


class StaticObject(State):
    """One physical object at rest, gathered from every piece of evidence that it is there (see static_objects)."""

    key: str
    box: Box
    since: float = Field(description="at rest since (the earliest evidence)")
    last_evidence: float
    track_ids: list[int] = Field(default_factory=list, description="vehicle tracks that are this object")
    class_name: str | None = Field(default=None, description="the class its vehicle was read as most often at rest; "
                                   "None for an unknown object")
    class_frames: dict[str, int] = Field(default_factory=dict, description="class -> frames its vehicle was read as "
                                         "it since it came to rest")
    arrived: bool = Field(default=False, description="its vehicle was seen coming to where it rests (it had moved "
                          "away from where it was first seen by the time it came to rest)")
    rest_point: tuple[float, float] | None = Field(default=None, description="where its vehicle came to rest "
                                                   "(bottom centre); moving away from it restarts the clock")
    confidence: float
    crash: bool = Field(default=False, description="it came to rest through a collision or an abrupt stop")
    incident_key: str | None = Field(default=None, description="key of the collision seen at contact that this "
                                     "object came to rest through: its standstill continues that incident")
    contact_at: float | None = Field(default=None, description="time of that collision's contact")
    piece_of: str | None = Field(default=None, description="key of the obstacle incident this unknown object was last "
                                 "raised as a piece of, when not its own")
    region: str | None = Field(default=None, description="the lane or zone it stands in")
    region_since: float | None = Field(default=None, description="since when it stands in that region; None: where "
                                       "it stands is to be judged (it has just come to rest)")
    moving_to: str | None = Field(default=None, description="another region its foot point is in (it has moved "
                                  "there once it has stayed there resolve_seconds)")
    moving_to_since: float | None = Field(default=None, description="since when; None: none")
    excused_at: float | None = Field(default=None, description="last time a queue excused it (a vehicle) or a moving "
                                     "vehicle drove over it (an unknown object)")
    covered_at: float | None = Field(default=None, description="last time a road user in view stood over most of it "
                                     "(an unknown object), hiding it from the background model")


class CollisionCandidate(State):
    track_ids: tuple[int, int]
    contact_at: float
    speed_box_per_s: float = Field(description="the faster track's speed before contact")
    # A default, so a state stored before the field existed still restores instead of starting the camera afresh.
    class_names: tuple[str, str] = ("vehicle", "vehicle")
    velocities_before: tuple[tuple[float, float] | None, tuple[float, float] | None] = Field(
        default=(None, None), description="each vehicle's velocity over the second before the contact (box heights "
        "per second), taken at contact: the history sample at contact is overwritten at more than 5 frames per second")
    speeds_at_contact: tuple[float, float] = Field(
        default=(0.0, 0.0), description="each vehicle's speed over about the last half second before the contact (box "
        "heights per second), taken at contact: the speed it hit with (one braking to rest has slowed by then); for "
        "one first seen at the contact, its speed in the frames after, while the two still touch")
    headings_before: tuple[tuple[float, float] | None, tuple[float, float] | None] = Field(
        default=(None, None), description="which way each vehicle went over about the half second before the contact "
        "(Scene.heading), taken at contact")
    turn_rates_before: tuple[float, float] = Field(
        default=(0.0, 0.0), description="how fast each vehicle was turning as it met the other (degrees per second, "
        "from its heading over the half second before that): a turn it goes on with is no swerve")
    still_before: tuple[float, float] = Field(
        default=(0.0, 0.0), description="how long each vehicle had been seen only where it stood at the contact "
        "(seconds; across frames the detector missed it), taken at contact")
    confirmed_at: float | None = Field(default=None, description="when both parties' motion after the contact "
                                       "showed the impact (a collision raised at contact, before any standstill)")
    reason: str = Field(default="", description="what the impact evidence was, once confirmed")
    merged_box: Box | None = Field(default=None, description="the one box the two vehicles converged into, for a "
                                   "collision never seen as two touching boxes (a party may be an unconfirmed "
                                   "detection, whose track id is UNTRACKED)")
    converged_from: tuple[tuple[float, float, float, float, float, float], ...] | None = Field(
        default=None, description="for such a collision, each vehicle's box as it would have been in the merged box's "
        "frame had it driven on, and its velocity (x1, y1, x2, y2, vx, vy; pixels, pixels per second)")

    @property
    def key(self) -> str:
        if self.merged_box is not None:
            # Unconfirmed parties share one id: the contact time tells such collisions apart.
            return f"collision:{self.track_ids[0]}:{self.track_ids[1]}:{self.contact_at:.1f}"
        return f"collision:{self.track_ids[0]}:{self.track_ids[1]}"


class VehicleFrame(State):
    """The vehicle detections of one sampled frame, the tracker's unconfirmed ones included: a vehicle crossing
    fast may collide before its track is confirmed."""

    time: float
    boxes: list[Box] = Field(default_factory=list)
    track_ids: list[int] = Field(default_factory=list, description="UNTRACKED for a detection the tracker has not "
                                 "confirmed")
    class_names: list[str] = Field(default_factory=list)
    confidences: list[float] = Field(default_factory=list)


class OpenIncident(State):
    event_id: str
    key: str
    type: str
    severity: str
    zone_id: str | None
    track_ids: list[int]
    started_at: float
    last_true_at: float
    level: int
    confidence: float
    reason: str
    details: dict[str, float | int | str]
    evidence_seq: int
    track_bound: bool = Field(default=False, description="about its tracks' own behaviour: stays open while one of "
                              "them is followed but unseen")


class TrafficState(State):
    last_seq: int = -1
    seen_runs: list[tuple[int, int]] = Field(default_factory=list, description="frame numbers applied, as runs "
                                             "(schemas.base.with_frame)")
    last_time: float | None = None
    view_moved_at: float | None = Field(default=None, description="last time the camera's view moved")
    tracks: dict[int, TrackState] = Field(default_factory=dict)
    fallback_next_id: int = 1
    next_unconfirmed_id: int = Field(default=UNTRACKED - 1, description="track id for the next vehicle lost before "
                                     "the tracker confirmed it (counting down below UNTRACKED, apart from the "
                                     "tracker's ids)")
    missed_unconfirmed: list[TrackState] = Field(default_factory=list, description="vehicles the tracker had not "
                                                 "confirmed, moving fast in the sampled frame before the last and "
                                                 "missing from the last (unconfirmed.keep_lost; at most one frame's "
                                                 "detections)")
    fallback_tracks: list[FallbackTrack] = Field(default_factory=list)
    static_objects: list[StaticObject] = Field(default_factory=list)
    collisions: list[CollisionCandidate] = Field(default_factory=list)
    recent_vehicles: list[VehicleFrame] = Field(default_factory=list, description="the vehicle detections of the last "
                                                "two sampled frames, oldest first (vehicles converging into one box)")
    incidents: dict[str, OpenIncident] = Field(default_factory=dict)
    zone_timers: dict[str, float] = Field(default_factory=dict, description="per stop line: since when a queue "
                                          "stands; per pedestrian area: when it was last crowded")
    area_scores: dict[str, float] = Field(default_factory=dict, description="pedestrian area id -> its "
                                          "vehicle-in-area score, smoothed over about AREA_SCORE_SECONDS")
    # lane id -> per-second buckets [second, occupancy sum, queued vehicles sum, samples, speed sum, speed samples]
    congestion: dict[str, list[list[float]]] = Field(default_factory=dict)
    count_window_start: float | None = None
    counts: dict[str, dict[str, int]] = Field(default_factory=dict, description="line id -> 'class|direction' -> n")

    @model_validator(mode="after")
    def runs_of_a_state_stored_without_them(self) -> "TrafficState":
        """A state stored before runs were kept has seen the frames up to last_seq (schemas.base.runs_up_to)."""
        if not self.seen_runs:
            self.seen_runs = runs_up_to(self.last_seq)
        return self
