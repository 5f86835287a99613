"""Python's cyclic garbage collector paused while the structure engine works.

Tracing a model and cutting it on trial allocate hundreds of thousands of small containers (label
lists, index maps), which trigger the collector's full passes. A full pass scans every object of the
process, and a process that imported timm and torch holds about half a million: on small timm models
one or two full passes were 30-40% of `prunus.prune`'s time (measured with `gc.callbacks`). The
engine creates no reference cycles of its own that hold memory for long (its tensors are freed by
reference counting), so the collector is paused for the call and resumed after; whatever cyclic
garbage exists is collected at the next pass as usual.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused_gc"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic collector inside the block (nesting is fine; the outermost resumes it).

    Example:
        >>> import gc
        >>> with paused_gc():
        ...     gc.isenabled()
        False
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
