"""The exceptions lazyflow_rbfs raises on purpose.

Every class here pickles and unpickles with its attributes intact, so errors raised in worker processes
reach the parent unchanged. This module imports nothing else of the package.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RbfsError",
    "SchemaError",
    "DescriptionError",
    "OutOfBoundsError",
    "BlockNotReadyError",
    "DownloadError",
    "RemoteTimeoutError",
    "InvalidResponseError",
    "PrefetchError",
    "LockTimeoutError",
    "ClosedError",
    "ReadOnlyError",
    "CacheWriteError",
    "ArgumentError",
]


class RbfsError(Exception):
    """Base class of every error this package raises on purpose.

    Subclasses keep their keyword attributes through pickling: ``__reduce__`` rebuilds the instance from
    the message and the attributes named in ``_fields``.
    """

    _fields: tuple[str, ...] = ()

    def __init__(self, message: Any = "", **attributes: Any) -> None:
        if isinstance(message, RbfsError):
            # cls(other_error): lazyflow re-raises request errors as type(e)(e). Like lazyflow, keep the
            # original as args[0] (so str() is its message), and copy the attributes it carried.
            for name in self._fields:
                attributes.setdefault(name, getattr(message, name, None))
        super().__init__(message)
        for name in self._fields:
            setattr(self, name, attributes.pop(name, None))
        if attributes:
            raise TypeError(f"{type(self).__name__} got unexpected attributes {sorted(attributes)}")

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        state = {name: getattr(self, name, None) for name in self._fields}
        return (_rebuild, (type(self), self.message, state), {"__cause_text__": _cause_text(self)})

    def __setstate__(self, state: dict) -> None:
        # The cause itself may not pickle; keep its text so a parent process can still show it.
        self.__dict__.update(state)


def _cause_text(exc: BaseException) -> str | None:
    cause = exc.__cause__
    return None if cause is None else f"{type(cause).__name__}: {cause}"


def _rebuild(cls: type, message: str, state: dict) -> RbfsError:
    return cls(message, **state)


class SchemaError(RbfsError, ValueError):
    """The JSON is not of the expected schema (name or version): "not mine" to a probing caller."""


class DescriptionError(RbfsError, ValueError):
    """The description has the right schema but bad content.

    ``field`` names the offending field (dotted for nested descriptions, e.g.
    ``local_description.shape``), or is ``None`` when the whole file is at fault (invalid JSON).
    """

    _fields = ("field",)


class OutOfBoundsError(RbfsError, IndexError):
    """A roi outside the view, negative, reversed, or of zero volume."""


class BlockNotReadyError(RbfsError):
    """``readData`` of a local fileset touched a block that is not available on disk.

    ``block_start`` is the block's start in view coordinates.
    """

    _fields = ("block_start",)

    def __init__(self, message: Any = "", **attributes: Any) -> None:
        # Upstream raised BlockNotReadyError(block_start); accept that form too.
        if not isinstance(message, (str, RbfsError)) and "block_start" not in attributes:
            attributes["block_start"] = message
            message = f"block at {tuple(int(x) for x in message)} is not available locally"
        super().__init__(message, **attributes)


class DownloadError(RbfsError, OSError):
    """A remote request failed after retries, or its response was invalid.

    ``url`` is the request's URL and ``status`` its HTTP status (``None`` when no response arrived).
    The original exception is chained as ``__cause__``.
    """

    _fields = ("url", "status")

    def __init__(self, message: str = "", **attributes: Any) -> None:
        super().__init__(message, **attributes)

    def __str__(self) -> str:
        return self.message


class RemoteTimeoutError(DownloadError, TimeoutError):
    """A connect or read timeout, after retries."""


class InvalidResponseError(DownloadError):
    """The body is not what was asked for: undecodable, wrong dataset name, shape or dtype."""


class PrefetchError(DownloadError):
    """A bulk download finished with failed blocks. ``report`` holds the download report."""

    _fields = ("url", "status", "report")


class LockTimeoutError(RbfsError, TimeoutError):
    """Waited longer than ``lock_timeout`` for a lock held by another process."""

    _fields = ("path",)

    def __str__(self) -> str:
        return self.message


class ClosedError(RbfsError, ValueError):
    """I/O on a closed fileset."""


class ReadOnlyError(RbfsError, PermissionError):
    """A write to a fileset opened read-only."""

    def __str__(self) -> str:
        return self.message


class CacheWriteError(RbfsError, OSError):
    """The cache's file system refused a write: full disk, read-only mount, quota, permissions.

    ``path`` is the file or directory that could not be written and ``errno`` the operating system's error
    number (``None`` if there was none). Nothing is left marked available when this is raised.
    """

    _fields = ("path", "errno")

    def __str__(self) -> str:
        return self.message

    @classmethod
    def from_os_error(cls, exc: OSError, path: Any, action: str = "write") -> CacheWriteError:
        """Build one from the ``OSError`` that ``action`` on ``path`` raised (chain it with ``from exc``)."""
        reason = exc.strerror or str(exc) or type(exc).__name__
        return cls(f"cannot {action} {path}: {reason}", path=str(path), errno=exc.errno)


class ArgumentError(RbfsError, ValueError):
    """An argument of a call is invalid: a mode, an option's value, an ``out_array`` or data of the wrong
    shape or dtype. Not in upstream's table; a ``ValueError`` as before, and an ``RbfsError`` like every
    error this package raises on purpose."""
