"""A choice that an export forces on the layers it traces (e.g. stock ops only), held as a stack so
that contexts nest."""

import contextlib


class TraceMode:
    """`with mode.forced(value):` sets `mode.current` for the traces inside; None outside every one."""

    def __init__(self):
        self._stack = []

    @contextlib.contextmanager
    def forced(self, value):
        self._stack.append(value)
        try:
            yield
        finally:
            self._stack.pop()

    @property
    def current(self):
        return self._stack[-1] if self._stack else None
