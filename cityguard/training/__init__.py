"""Turning what operators see into a better model: site datasets, fine-tuning, the promotion gate."""
