"""`cityguard bench <name>`: benchmarks are commands that print figures, never tests.

Each entry names a module with `add_arguments(parser)` and `run(args, config) -> int`.
"""
from __future__ import annotations

import importlib

BENCHMARKS: dict[str, tuple[str, str]] = {
    # name: (module, one-line description)
    "pipeline": ("cityguard.evaluation.pipeline_bench", "a clip through the whole pipeline vs the bare model"),
    "inference": ("processors.inference_bench", "inference consumer on the embedded broker vs a bare model loop"),
    "capture": ("producers.benchmark", "cameras per producer process at 5 fps, memory per camera, reconnect time"),
    "density-map": ("processors.crowd.bench_density_map", "CSRNet density-map counter: seconds per frame"),
}


def register(commands, add_command) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print figures")
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    for name, (module_name, description) in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = add_command(kinds, name, description, module.run)
        module.add_arguments(sub)
