"""Inference: streaming over frames, whole sequences with their metrics, and runners of exports."""
