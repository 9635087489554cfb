"""Crowd-crush risk analytics: calibration, counting, local density, flow, movement, forecast and risk levels.

Pure modules over numpy arrays and plain data; only `density_map` touches a model runtime (torch, OpenVINO).
"""
