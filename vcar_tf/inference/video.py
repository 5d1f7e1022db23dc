"""A whole video through a model, streamed: decode, enhance and encode run in three threads joined
by short queues, so memory stays flat however long the video is.

Only luma is enhanced (as in the papers); the chroma planes, each frame's time stamp and the
input's audio and subtitle packets pass through unchanged.
"""

import collections
import queue
import sys
import threading

import numpy as np
from tqdm import tqdm

from vcar_tf.inference.streaming import StreamingEnhancer
from vcar_tf.video.stream import Frame

_END = object()
QUEUE = 8  # items (frames or packets) between two stages


class _Stopped(Exception):
    pass


class _Pipeline:
    def __init__(self):
        self.stop = threading.Event()
        self.errors = []

    def put(self, q, item):
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise _Stopped() from None

    def get(self, q):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():  # a failure in any stage, the main thread's included
                    raise _Stopped() from None

    def thread(self, fn):
        def body():
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as e:  # handed to the main thread
                self.errors.append(e)
                self.stop.set()

        t = threading.Thread(target=body, daemon=True)
        t.start()
        return t


def enhance_video(model, radius, src, dst, tile=None, overlap=0, progress=True):
    """Enhance every frame of `src` (vcar_tf.video.stream.VideoInput) into `dst` (an entered
    VideoOutput); returns the number of frames written."""
    scale = float((1 << src.bit_depth) - 1)
    enhancer = StreamingEnhancer(model, radius, tile, overlap)
    pipe = _Pipeline()
    decoded, encoded = queue.Queue(QUEUE), queue.Queue(QUEUE)

    def read():
        for item in src.items():
            pipe.put(decoded, item)
        pipe.put(decoded, _END)

    def write():
        while True:
            item = pipe.get(encoded)
            if item is _END or pipe.stop.is_set():
                return
            if isinstance(item, Frame):
                dst.write(item)
            else:
                dst.copy(item)

    bar = tqdm(total=src.num_frames, desc="enhance", unit="frame", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    pending = collections.deque()  # frames waiting for their enhanced luma: bounded by R + 1

    def emit(ready):
        for _, y in ready:
            frame = pending.popleft()
            out = np.round(y * scale).astype(frame.y.dtype)
            pipe.put(encoded, frame._replace(y=out))
            bar.update(1)

    threads = [pipe.thread(read), pipe.thread(write)]
    try:
        while True:
            item = pipe.get(decoded)
            if item is _END:
                break
            if isinstance(item, Frame):
                pending.append(item)
                emit(enhancer.push(item.y.astype(np.float32) / scale))
            else:
                pipe.put(encoded, item)
        if not pipe.errors:
            emit(enhancer.flush())
        pipe.put(encoded, _END)
    except _Stopped:
        pass
    except BaseException:
        pipe.stop.set()
        raise
    finally:
        if pipe.errors or sys.exc_info()[0] is not None:
            pipe.stop.set()
        for t in threads:
            t.join()
        bar.close()
    if pipe.errors:
        raise pipe.errors[0]
    return dst.count
