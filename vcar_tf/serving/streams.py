"""Server-side streams of a recurrent model (RFDA, STDF+RF): the server keeps the hidden state
(64 float32 channels per pixel, about 100 MiB at 832x480) between a client's frames, so that
only frames cross the wire.

A stream is opened on the served version (which stays loaded while the stream is open), takes
one uint8 window [2R+1, H, W] per step (the client clips the window at the video's ends, as for
serving_default) and answers the enhanced uint8 frame [H, W]. Streams are bounded in number,
closed after an idle timeout, and closed explicitly by the client.
"""

import secrets
import threading
import time

import numpy as np

from vcar_tf.export.names import ENHANCED, FRAMES, HIDDEN, INITIAL_STATE, SERVING_DEFAULT
from vcar_tf.serving.status import ServingError, invalid, not_found


class _Stream:
    def __init__(self, stream_id, loaded, now):
        self.id, self.loaded = stream_id, loaded
        self.hidden = None
        self.frame_size = None
        self.steps = 0
        self.last_used = now
        self.lock = threading.Lock()


class StreamStore:
    def __init__(self, store, max_streams, idle_timeout_s, max_frame_pixels, clock=time.monotonic, on_count=None):
        self.store = store
        self.max_streams = max_streams
        self.idle_timeout_s = idle_timeout_s
        self.max_frame_pixels = max_frame_pixels
        self._clock = clock
        self._on_count = on_count or (lambda n: None)
        self._streams = {}
        self._lock = threading.Lock()

    def open(self, name, version=None, label=None):
        """A new stream on the served version of `name`: {"stream_id", "model_spec"}."""
        self.close_idle()
        loaded = self.store.pin(name, version, label)
        try:
            if not loaded.recurrent:
                raise ServingError("FAILED_PRECONDITION", f"model {name} is not recurrent (no {HIDDEN} input): "
                                                          f"use :predict")
            with self._lock:
                if len(self._streams) >= self.max_streams:
                    raise ServingError("UNAVAILABLE", f"{self.max_streams} streams are open (--max_streams); close "
                                                      f"one or wait {self.idle_timeout_s:g} s for an idle one to end")
                stream = _Stream(secrets.token_hex(16), loaded, self._clock())
                self._streams[stream.id] = stream
                self._on_count(len(self._streams))
        except BaseException:
            self.store.unpin(loaded)
            raise
        return {"stream_id": stream.id, "model_spec": {"name": name, "version": str(loaded.version)}}

    def _get(self, name, stream_id):
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is None or stream.loaded.name != name:
            raise not_found(f"no open stream {stream_id} of model {name} (closed, or idle for more than "
                            f"{self.idle_timeout_s:g} s)")
        return stream

    def step(self, name, stream_id, arrays):
        """Enhance one window of the stream: {input: array} with `frames` -> ({"enhanced": frame}, step index)."""
        stream = self._get(name, stream_id)
        with stream.lock:
            if stream.id not in self._streams:  # closed since _get: its version may be unloaded
                raise not_found(f"stream {stream_id} was closed")
            signature = stream.loaded.signature(SERVING_DEFAULT)
            frames = signature.check(arrays, self.max_frame_pixels, names=[FRAMES])[FRAMES]
            size = frames.shape[1:]
            if stream.frame_size is not None and size != stream.frame_size:
                raise invalid(f"{FRAMES}: frame size {size[0]}x{size[1]} differs from the stream's "
                              f"{stream.frame_size[0]}x{stream.frame_size[1]}; open a new stream")
            if stream.hidden is None:
                window = frames[None, ..., None].astype(np.float32) / np.float32(255.0)
                stream.hidden = stream.loaded.signature(INITIAL_STATE).run({FRAMES: window})[HIDDEN]
                stream.frame_size = size
            out = signature.run({FRAMES: frames, HIDDEN: stream.hidden})
            stream.hidden = out[HIDDEN]
            stream.steps += 1
            stream.last_used = self._clock()
            return {ENHANCED: out[ENHANCED]}, stream.steps - 1

    def close(self, name, stream_id):
        stream = self._get(name, stream_id)
        self._drop([stream])
        return {"stream_id": stream_id, "steps": stream.steps}

    def close_idle(self):
        now = self._clock()
        with self._lock:
            idle = [s for s in self._streams.values() if now - s.last_used > self.idle_timeout_s and not s.lock.locked()]
        self._drop(idle)
        return len(idle)

    def close_all(self):
        with self._lock:
            streams = list(self._streams.values())
        self._drop(streams)

    def _drop(self, streams):
        for stream in streams:
            with self._lock:
                if self._streams.pop(stream.id, None) is None:
                    continue
                self._on_count(len(self._streams))
            with stream.lock:  # a step in progress ends first
                stream.hidden = None
            self.store.unpin(stream.loaded)

    def count(self):
        with self._lock:
            return len(self._streams)
