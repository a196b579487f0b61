"""Iterating in a background thread: the next items are made while TensorFlow computes.

TensorFlow runs a session step without holding Python's lock, so the batches of a
training run (or of a dump) are packed in this thread while the current one runs.
"""
import queue
import threading


class Prefetch:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead.

    Items come in the same order; an exception raised while producing them is raised by
    ``next`` at the item it replaced. ``close()`` stops the thread (also at the end of a
    ``with`` block).
    """

    def __init__(self, iterable, depth=2):
        self._queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(iterable),), daemon=True)
        self._thread.start()

    def _put(self, message):
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, iterator):
        try:
            for item in iterator:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as err:  # raised again in the consumer
            self._put(("error", err))

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():  # ended (or closed): the producer sends nothing more
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "item":
            return value
        self._stop.set()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self):
        self._stop.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
