"""Message envelope shared by every topic: msgpack bodies tagged with a schema name and version.

msgpack keeps JPEG bytes as raw binary (no base64 inflation) and is ~2x smaller than JSON for box arrays.
"""
from __future__ import annotations

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


# Frames that come again (one a producer sends twice, those an analyzer re-reads from its checkpoint: at most
# analytics.checkpoint_frames) lie within this many of the newest one seen. A number further back is no repeat: a
# producer started again with its clock set back numbers afresh from there, as it must after a frame stamped far ahead.
REPEAT_WINDOW_FRAMES = 100_000


def seen_before(seq: int, newest_seq: int) -> bool:
    """Whether a camera's frame numbered `seq` is one already seen, the newest seen being `newest_seq`: not newer, and
    not so far back that only a producer numbering afresh explains it (which, taken for a repeat, would silence the
    camera until its numbers caught up: for years, after one frame stamped in the future)."""
    return newest_seq - REPEAT_WINDOW_FRAMES <= seq <= newest_seq


class SchemaError(ValueError):
    """A message that cannot be parsed as the schema the consumer expects; the text is the dead-letter reason."""


class Message(BaseModel):
    """Base of every message on a cityguard topic."""

    # Finite numbers only, in every float field (times included): a NaN compares false with everything, so one
    # would pass every threshold check silently and break every store that orders by it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_name: ClassVar[str]
    schema_version: ClassVar[int] = 1


M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    body = message.model_dump(mode="python")
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
