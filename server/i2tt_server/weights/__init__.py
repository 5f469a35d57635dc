"""Weights tooling (above the runners, which it uses): fetching public checkpoints, building offline test weights."""
