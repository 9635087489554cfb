"""`cityguard bench <name>`: benchmarks are commands that print figures, never tests.

Each entry names a module with `add_arguments(parser)` and `run(args, config) -> int`. A benchmark module is imported
only when its benchmark runs, so the stage processes started through this CLI never load benchmark dependencies.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from schemas.settings.config import load_config

BENCHMARKS: dict[str, tuple[str, str]] = {
    # name: (module, one-line description)
    "pipeline": ("cityguard.bench.pipeline", "a clip through the whole pipeline vs the bare model"),
    "inference": ("cityguard.bench.inference", "inference consumer on the embedded broker vs a bare model loop"),
    "capture": ("cityguard.bench.capture", "cameras per producer process at 5 fps, memory per camera, reconnect time"),
    "analytics": ("cityguard.bench.analytics", "analytics worker on one busy camera vs the pure analyzer loop"),
    "scaleout": ("cityguard.bench.scaleout", "1, 2, 4, 8 ... inference or analytics workers: frames/s per count"),
    "density-map": ("cityguard.bench.density_map", "CSRNet density-map counter: seconds per frame"),
    "console": ("cityguard.bench.console", "the demo with its console in chromium: refresh rate, display delay, CPU"),
    "sink": ("cityguard.bench.sink", "the metrics sink's CPU per frame read, and cameras per core"),
}


def register(commands, add_command) -> None:
    listing = "\n".join(f"  {name:<12} {description}" for name, (_, description) in BENCHMARKS.items())
    bench = add_command(commands, "bench", "benchmarks that print figures", run_benchmark)
    bench.formatter_class = argparse.RawDescriptionHelpFormatter
    bench.description = f"benchmarks that print figures:\n{listing}"
    bench.add_argument("benchmark", choices=sorted(BENCHMARKS))
    bench.add_argument("benchmark_args", nargs=argparse.REMAINDER, help="the benchmark's own options (--help)")
    # The benchmark's options are parsed like the CLI's own (a mistake is one line); cli sits above this module.
    bench.set_defaults(parser_class=type(bench))


def run_benchmark(args, config) -> int:
    module_name, description = BENCHMARKS[args.benchmark]
    module = importlib.import_module(module_name)
    parser = args.parser_class(prog=f"cityguard bench {args.benchmark}", description=description)
    parser.add_argument("--config", type=Path, default=args.config, help="site configuration YAML")
    module.add_arguments(parser)
    options = parser.parse_args(args.benchmark_args, namespace=argparse.Namespace(**vars(args)))
    if options.config != args.config:
        config = load_config(options.config)
    return module.run(options, config)
