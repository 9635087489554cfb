"""Measuring cityguard on labelled footage: detector, counting and event metrics, loaders, reports, benchmarks.

The metric modules (scoring, detection, counting, events) are pure functions over numpy arrays and small
dataclasses; loaders read the field's file formats; runners and the report writer are the only parts doing I/O.
"""
