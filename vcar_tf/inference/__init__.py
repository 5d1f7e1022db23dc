"""Inference: streaming over frames, tiles, the decode-enhance-encode pipeline, whole sequences with
their metrics, and runners of exports."""
