"""A predict as both protocols run it: the version, the signature, the input checks, the limit on
in-flight requests and the batching."""

import threading

import numpy as np

from vcar_tf.export.names import ENHANCED, FRAMES, SERVE_FLOAT, SERVING_DEFAULT
from vcar_tf.serving.status import ServingError


class Predictor:
    def __init__(self, store, max_frame_pixels, max_inflight, batcher=None, in_flight=None):
        self.store = store
        self.in_flight = in_flight  # a Prometheus gauge of the slots held
        self.max_frame_pixels = max_frame_pixels
        self.max_inflight = max_inflight
        self.batcher = batcher
        self._slots = threading.BoundedSemaphore(max_inflight)

    def slot(self):
        """A context holding one of --max_inflight slots; UNAVAILABLE (503) when none is free."""
        predictor = self

        class _Slot:
            def __enter__(self):
                if not predictor._slots.acquire(blocking=False):
                    raise ServingError("UNAVAILABLE", f"server overloaded: {predictor.max_inflight} requests in "
                                                      f"flight (--max_inflight); retry later")
                if predictor.in_flight is not None:
                    predictor.in_flight.inc()

            def __exit__(self, *exc):
                if predictor.in_flight is not None:
                    predictor.in_flight.dec()
                predictor._slots.release()

        return _Slot()

    def predict(self, name, version, label, signature_name, arrays, strict_dtypes=False):
        """(served version, signature name, {output: array}) for a request's {input: array}."""
        with self.slot(), self.store.use(name, version, label) as loaded:
            signature = loaded.signature(signature_name)
            return loaded.version, signature.name, self.run(loaded, signature, arrays, strict_dtypes)

    def run(self, loaded, signature, arrays, strict_dtypes=False):
        """Check a request's arrays against the signature and run it (batched where it can be)."""
        arrays = signature.check(arrays, self.max_frame_pixels, strict_dtypes)
        if self.batcher is None:
            return signature.run(arrays)
        key = (id(loaded), signature.name, tuple((k, v.shape, v.dtype.str) for k, v in sorted(arrays.items())))
        if signature.batchable:
            return self.batcher.run(key, arrays, signature.run_batch, rows=len(next(iter(arrays.values()))))
        if signature.name == SERVING_DEFAULT and not loaded.recurrent and SERVE_FLOAT in loaded.signatures:
            return self.batcher.run(key, arrays, lambda jobs: uint8_windows_through_float(loaded, jobs))
        return signature.run(arrays)


def uint8_windows_through_float(loaded, jobs):
    """A batch of serving_default requests (uint8 windows [2R+1, H, W] of a window model) run as
    one serve_float batch and converted back as serving_default converts (round(clip(y) * 255))."""
    windows = np.stack([job[FRAMES] for job in jobs]).astype(np.float32) / np.float32(255.0)
    enhanced = loaded.signatures[SERVE_FLOAT].run({FRAMES: windows[..., None]})[ENHANCED]
    frames = np.round(np.clip(enhanced[..., 0], 0.0, 1.0) * 255.0).astype(np.uint8)
    return [{ENHANCED: frame} for frame in frames]
