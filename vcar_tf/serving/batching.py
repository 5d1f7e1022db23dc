"""Server-side batching: concurrent requests with the same key (version, signature, input shapes)
run as one batch of at most max_batch_size rows (requests x their own batch rows, as TF Serving
counts them), gathered for at most timeout_s after the first, by `threads` batch threads."""

import threading
import time
from concurrent.futures import Future

from vcar_tf.serving.status import ServingError, invalid


class _Job:
    def __init__(self, arrays, run_batch, deadline, rows):
        self.arrays, self.run_batch, self.deadline, self.rows = arrays, run_batch, deadline, rows
        self.future = Future()


class Batcher:
    def __init__(self, max_batch_size, timeout_s, on_batch=None, threads=1):
        self.max_batch_size = max(1, int(max_batch_size))
        self.timeout_s = timeout_s
        self._on_batch = on_batch or (lambda size: None)
        self._queues = {}  # key -> [_Job], oldest first; a key's jobs have the same rows
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"vcar-serve-batcher-{i}", daemon=True)
                         for i in range(max(1, int(threads)))]
        for thread in self._threads:
            thread.start()

    def run(self, key, arrays, run_batch, rows=1):
        """Run `arrays` (`rows` rows of a batch) in a batch with others of `key`;
        run_batch([arrays, ...]) -> [outputs, ...]."""
        if rows > self.max_batch_size:
            raise invalid(f"Task size {rows} is larger than maximum input batch size {self.max_batch_size} "
                          f"(--max_batch_size)")
        job = _Job(arrays, run_batch, time.monotonic() + self.timeout_s, rows)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queues.setdefault(key, []).append(job)
            self._cond.notify()
        return job.future.result()

    def close(self):
        """Stop; jobs still queued fail UNAVAILABLE (their requests would wait for ever: gRPC's and
        AnyIO's worker threads are joined at exit, so the process would not end)."""
        with self._cond:
            self._closed = True
            queued = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._cond.notify_all()
        for job in queued:
            job.future.set_exception(ServingError("UNAVAILABLE", "the server is shutting down"))
        for thread in self._threads:
            thread.join(timeout=10)

    def _jobs_per_batch(self, queue):
        return max(1, self.max_batch_size // queue[0].rows)

    def _take(self):
        """The next batch: a full queue at once, else the queue whose first job waited longest."""
        with self._cond:
            while not self._closed:
                if not self._queues:
                    self._cond.wait()
                    continue
                full = next((k for k, q in self._queues.items() if len(q) >= self._jobs_per_batch(q)), None)
                key = full or min(self._queues, key=lambda k: self._queues[k][0].deadline)
                wait = self._queues[key][0].deadline - time.monotonic()
                if full is None and wait > 0:
                    self._cond.wait(wait)
                    continue
                queue = self._queues[key]
                size = self._jobs_per_batch(queue)
                batch, rest = queue[:size], queue[size:]
                if rest:
                    self._queues[key] = rest
                else:
                    del self._queues[key]
                return batch
            return None

    def _loop(self):
        while True:
            batch = self._take()
            if batch is None:
                return
            self._on_batch(len(batch))
            try:
                outputs = batch[0].run_batch([job.arrays for job in batch])
                for job, out in zip(batch, outputs):
                    job.future.set_result(out)
            except BaseException as e:  # noqa: BLE001  (every waiting request gets the error; the loop goes on)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
