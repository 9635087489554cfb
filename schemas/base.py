"""Message envelope shared by every topic: msgpack bodies tagged with a schema name and version.

msgpack keeps JPEG bytes as raw binary (no base64 inflation) and is ~2x smaller than JSON for box arrays.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar, TypeVar

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Ids (of cameras, zones, events) travel as keys, metric labels and store columns, and outputs repeat them: bounded,
# so that no input can make an output too large to send, which would stop its partition behind it.
ID_MAX_CHARS = 64
BoundedId = Annotated[str, Field(min_length=1, max_length=ID_MAX_CHARS)]
# A frame's per-camera sequence number: an int64 everywhere it is stored or compared as an array.
Seq = Annotated[int, Field(ge=0, lt=2**63)]
# Producers count a camera's frames from their start time in microseconds, by the clock that also times the frames,
# so a sequence number stays below its frame's capture time in microseconds; a day's slack covers anything else.
SEQ_SLACK_S = 86_400.0


def verify_seq(seq: int, captured_at: float) -> None:
    """ValueError for a sequence number no producer can have reached by the frame's capture time: it would make
    every later frame of the camera look like one the analyzers have seen."""
    if seq > (captured_at + SEQ_SLACK_S) * 1_000_000:
        raise ValueError(f"seq {seq} is ahead of what any producer reaches by capture time {captured_at:.0f} "
                         "(sequence numbers count microseconds from the producer's start)")


# A producer numbers a camera's frames one apart from its start time in microseconds: started again it numbers far above
# its last run (about a million a second later), started with its clock set back, far below. So the numbers seen
# form a few runs, and a frame is a repeat (sent again, from this run or an earlier one) only inside one of them.
# A frame up to this many past a run continues it (frames skipped or shed between); one further starts a run of its
# own, so that a frame numbered far ahead (forged, or from a wrong clock) is a run of one that the frames after it do
# not continue, instead of making every later frame look like a repeat.
RUN_GAP_FRAMES = 100_000
# A frame sent again from before this many producer restarts is taken for a new one; a producer restarting every
# few frames could otherwise push the runs a rewound batch spans out of the list.
RUNS_KEPT = 32


def run_of(runs: Sequence[Sequence[int]], seq: int) -> tuple[int, int] | None:
    """The run (low, high) that frame number `seq` lies in, the one used last where runs overlap; None outside all."""
    return next(((low, high) for low, high in reversed(runs) if low <= seq <= high), None)


def frame_seen(runs: Sequence[Sequence[int]], seq: int) -> bool:
    """Whether frame number `seq` is a repeat: inside one of the runs (low, high) already seen, runs[-1] the one used
    last. A number that continues that run is new even inside an older run: a producer restarted with its clock set
    back has numbered up into the numbers of its earlier run."""
    if runs and runs[-1][1] < seq <= runs[-1][1] + RUN_GAP_FRAMES:
        return False
    return run_of(runs, seq) is not None


def with_frame(runs: Sequence[Sequence[int]], seq: int) -> list[tuple[int, int]]:
    """The runs once frame number `seq` is seen, the run it lies in or extends last. A new number extends the run it
    follows by at most RUN_GAP_FRAMES (the run used last first), else it starts a run; any older run the new or
    extended one now overlaps (a producer restarted with its clock set back, numbering up into its earlier run) keeps
    only its numbers outside it. Over RUNS_KEPT runs, the lowest go: restarts number upwards, so those are the oldest,
    and a frame of one of them sent again then costs only its own run, not the others in turn."""
    runs = [(low, high) for low, high in runs]
    if frame_seen(runs, seq):
        inside = run_of(runs, seq)
        runs.remove(inside)
        return [*runs, inside]
    following = [run for run in runs if run[1] < seq <= run[1] + RUN_GAP_FRAMES]
    extended = runs[-1] if runs and runs[-1] in following else max(following, key=lambda run: run[1], default=None)
    if extended is not None:
        runs.remove(extended)
    low = extended[0] if extended else seq
    rest = []  # the other runs in their order of use, less what the new run covers
    for other_low, other_high in runs:
        if other_high < low or other_low > seq:
            rest.append((other_low, other_high))
            continue
        if other_low < low:
            rest.append((other_low, low - 1))
        if other_high > seq:
            rest.append((seq + 1, other_high))
    lowest = set(sorted(rest)[:max(0, len(rest) + 1 - RUNS_KEPT)])
    return [run for run in rest if run not in lowest] + [(low, seq)]


def runs_up_to(last_seq: int) -> list[tuple[int, int]]:
    """The runs of an analyzer state stored before runs were kept: the frames up to its last one, as far back as a
    run reaches (none before its first frame)."""
    return [(max(0, last_seq - RUN_GAP_FRAMES), last_seq)] if last_seq >= 0 else []


class SchemaError(ValueError):
    """A message that cannot be parsed as the schema the consumer expects; the text is the dead-letter reason."""


class Message(BaseModel):
    """Base of every message on a cityguard topic."""

    # Finite numbers only, in every float field (times included): a NaN compares false with everything, so one
    # would pass every threshold check silently and break every store that orders by it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_name: ClassVar[str]
    schema_version: ClassVar[int] = 1
    # Fields added to the schema since its version first shipped, left out of a message while None (their default):
    # a stage not yet upgraded, which refuses fields it does not know, still reads every message not using them.
    added_fields: ClassVar[tuple[str, ...]] = ()


M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    body = message.model_dump(mode="python")
    for name in message.added_fields:
        if body[name] is None:
            del body[name]
    body["schema"] = message.schema_name
    body["v"] = message.schema_version
    return msgpack.packb(body, use_bin_type=True)


def decode(raw: bytes | None, message_type: type[M]) -> M:
    """Parse and validate one message; raises SchemaError with a human-readable reason."""
    if raw is None:
        raise SchemaError("empty message value (tombstone)")
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage input
        said = f": {exc}" if str(exc) else " (nested too deep)" if isinstance(exc, msgpack.StackError) else ""
        raise SchemaError(f"not a msgpack message: {type(exc).__name__}{said}") from exc
    if not isinstance(body, dict):
        raise SchemaError(f"message body is a {type(body).__name__}, expected a map")
    schema, version = body.pop("schema", None), body.pop("v", None)
    if schema != message_type.schema_name:
        raise SchemaError(f"schema is {schema!r}, expected {message_type.schema_name!r}")
    if version != message_type.schema_version:
        raise SchemaError(
            f"{schema} schema version {version!r} is not supported (expected {message_type.schema_version})"
        )
    try:
        return message_type.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<message>"
        raise SchemaError(f"{schema} v{version}: field {where}: {first['msg']}") from exc
