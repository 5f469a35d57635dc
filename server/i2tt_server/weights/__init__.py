"""Weights tooling: the on-disk layout, fetching public checkpoints, building offline test weights."""
