"""Number types for command-line options that name the range they take, so that a value outside it is refused in
one line by argparse instead of producing a meaningless figure; path types; and how the commands print a time or a
count and begin the line of a failure."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from schemas.settings.base import verify_listen_host

ERROR_PREFIX = "cityguard: error: "  # the start of the one line a failed command prints


def number_in(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False
              ) -> Callable[[str], float | int]:
    """An argparse type: `kind` (int or float) within [low, high] (`low_open`: above low, not equal)."""
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value != value or (low is not None and (value <= low if low_open else value < low)) or (
                high is not None and value > high):
            bounds = [f"{'above' if low_open else 'at least'} {_bound(low)}" if low is not None else "",
                      f"at most {_bound(high)}" if high is not None else ""]
            raise argparse.ArgumentTypeError(f"expected a value {' and '.join(b for b in bounds if b)}, got {text}")
        return value
    return parse


def _bound(value: float) -> str:
    """A bound as people write it: 4,102,444,800 rather than 4.10244e+09."""
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1e6 else f"{value:g}"


FRACTION = number_in(float, 0.0, 1.0)  # a confidence, an IoU, a share
OPEN_FRACTION = number_in(float, 0.0, 1.0, low_open=True)  # the same, above zero
NON_NEGATIVE = number_in(float, 0.0)  # seconds of tolerance or guard
POSITIVE = number_in(float, 0.0, low_open=True)  # a length of time
COUNT = number_in(int, 1)  # frames, epochs, an export's batch
NON_NEGATIVE_COUNT = number_in(int, 0)
PORT = number_in(int, 0, 65535)  # a TCP port; 0 lets the system pick a free one


def listen_host(text: str) -> str:
    """An argparse type: an address to listen on, as the settings' hosts take it."""
    try:
        return verify_listen_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def numbers_from(low: int) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated whole numbers of `low` or more (counts to try, widths), as a list."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"expected numbers of {low} or more, got {text!r}")
        return values
    return parse


COUNTS = numbers_from(1)


def names_among(text: str, choices: Iterable[str], what: str) -> list[str]:
    """Comma-separated names, each one of `choices`, in the order given without repeats (an argparse type's body;
    `what` names them in the error, e.g. "counters")."""
    known = list(choices)
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or any(name not in known for name in names):
        raise argparse.ArgumentTypeError(f"{what} are {', '.join(known)}; got {text!r}")
    return list(dict.fromkeys(names))


def shown_names(names: list[str], limit: int = 10) -> str:
    """`names` comma-separated for a one-line message, the first `limit` of them and how many more."""
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def existing(kind: str) -> Callable[[str], Path]:
    """An argparse type: a path that exists as a `kind` ("folder", "file", or "model": a weights file or an exported
    model's folder)."""
    def parse(text: str) -> Path:
        path = Path(text)
        if kind == "folder" and not path.is_dir():
            raise argparse.ArgumentTypeError(f"no folder {text}")
        if kind == "file" and not path.is_file():
            raise argparse.ArgumentTypeError(f"no file {text}")
        if kind == "model":
            if not path.exists():
                raise argparse.ArgumentTypeError(f"no model {text}")
            if not (path.is_dir() or path.suffix.lower() in MODEL_SUFFIXES):
                raise argparse.ArgumentTypeError(f"{text} is not a model: give a weights file "
                                                 f"({', '.join(sorted(MODEL_SUFFIXES))}) or an exported model's folder")
        return path
    return parse


# Weights files ultralytics loads; an OpenVINO model is a folder (its .xml needs the .bin and metadata beside it).
MODEL_SUFFIXES = frozenset({".pt", ".onnx", ".engine", ".torchscript", ".tflite"})
FOLDER = existing("folder")
FILE = existing("file")
MODEL = existing("model")


def weights_or_name(text: str) -> str:
    """An argparse type: a bare ultralytics name (yolo11n.pt, yolo11n.yaml; ultralytics downloads or builds it), a
    URL, or a path to weights, which must exist (a mistyped path would otherwise be taken for a name to download)."""
    if "://" not in text and Path(text).name != text and not Path(text).exists():
        raise argparse.ArgumentTypeError(f"no model {text}")
    return text


HELD_OUT_HELP = ("note listing held-out sha256 digests (default: reference/held-out-sources.md in each of "
                 "CITYGUARD_ASSET_MIRROR and CITYGUARD_SHARED_DIR, or the shared folder beside the repository, that "
                 "has one; without one the check is off, with a warning)")


def shown_time(seconds: float | None, missing: str = "-") -> str:
    """A unix time as the commands print it: this machine's local time, with its zone."""
    return missing if seconds is None else datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and the noun in the number it takes: 1 camera, 2 cameras (`plural` where adding an s is wrong)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
