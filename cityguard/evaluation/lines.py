"""Line-count accuracy: per counting line and direction, the crossings counted against a hand count of the same
footage, with absolute and relative errors and their totals."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from schemas import LineCounts

LineKey = tuple[str, str, str]  # camera, line, direction


@dataclass(frozen=True)
class LineScore:
    camera: str
    line: str
    direction: str
    true: int
    counted: int

    @property
    def error(self) -> int:
        """Counted minus true: negative for missed crossings."""
        return self.counted - self.true

    @property
    def relative_error(self) -> float | None:
        """The error as a share of the true count; None where nothing crossed (any count is then all error)."""
        return self.error / self.true if self.true else None


@dataclass(frozen=True)
class LineCountResult:
    scores: list[LineScore]
    unlabelled: list[LineKey]  # counted directions the truth does not list: not scored

    @property
    def true_total(self) -> int:
        return sum(score.true for score in self.scores)

    @property
    def counted_total(self) -> int:
        return sum(score.counted for score in self.scores)

    @property
    def absolute_error_total(self) -> int:
        """Misses and extra counts together: they do not cancel out across lines as the plain totals' do."""
        return sum(abs(score.error) for score in self.scores)

    @property
    def relative_absolute_error(self) -> float | None:
        return self.absolute_error_total / self.true_total if self.true_total else None

    def to_json(self) -> dict:
        return {"lines": [{**asdict(score), "error": score.error, "relative_error": score.relative_error}
                          for score in self.scores],
                "true_total": self.true_total, "counted_total": self.counted_total,
                "absolute_error_total": self.absolute_error_total,
                "relative_absolute_error": self.relative_absolute_error,
                "unlabelled": [list(key) for key in self.unlabelled]}


def evaluate_line_counts(truth: dict[LineKey, int], counted: dict[LineKey, int]) -> LineCountResult:
    """Scores every labelled line and direction; one the product never counted scored as counting none."""
    scores = [LineScore(*key, true=count, counted=counted.get(key, 0)) for key, count in sorted(truth.items())]
    return LineCountResult(scores, sorted(key for key, count in counted.items() if key not in truth and count))


def crossings(windows: Iterable[LineCounts]) -> dict[LineKey, int]:
    """Crossings per camera, line and direction over these windows, every class together."""
    counts: dict[LineKey, int] = {}
    for window in windows:
        for direction, count in zip(window.direction, window.count, strict=True):
            key = (window.camera_id, window.line_id, direction)
            counts[key] = counts.get(key, 0) + count
    return counts
