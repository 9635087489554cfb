"""Crowd-crush risk analytics: counting, local density, flow, movement, forecast and risk levels.

Pure modules over numpy arrays and plain data; the density map they read comes in the Detections message.
"""
