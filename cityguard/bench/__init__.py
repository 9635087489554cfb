"""Benchmarks: commands that print figures (the tests never time anything)."""

# The inference benchmarks measure a queued backlog, sent earlier and faster than a camera would send it: none of it
# may be skipped as stale or as over its camera's rate (processors.inference.shedding).
BACKLOG_MODEL_SETTINGS = {"max_frame_age_s": 3600.0, "camera_rate_factor": 100.0}
