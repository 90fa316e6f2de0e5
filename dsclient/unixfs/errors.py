"""Errors out of nurseries as the plain exceptions callers expect.

trio wraps whatever a nursery's tasks raise in an ExceptionGroup. The import
and export nurseries only run our own fetches and puts, so an error there is
one of ours (a missing or corrupt block, an unreachable store): callers should
catch CorruptBlockError or NotFoundError, not dig through a group. Cancellation
and other BaseExceptions keep their group and go on unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextlib.contextmanager
def plain_errors() -> Iterator[None]:
    """Re-raise the first error of a group made only of ordinary exceptions."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if leaves and all(isinstance(exc, Exception) for exc in leaves):
            raise leaves[0] from None
        raise
