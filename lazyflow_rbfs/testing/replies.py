"""What the test server's routes answer: a :class:`Reply`, or an :class:`HttpError` with a status.

The format emulators (:mod:`~lazyflow_rbfs.testing.cutout`, :mod:`~lazyflow_rbfs.testing.boss`,
:mod:`~lazyflow_rbfs.testing.precomputed`) map a request path to one of these; the server
(:mod:`~lazyflow_rbfs.testing.server`) applies faults and sends it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Reply", "json_reply", "HttpError", "BadRequest", "NotFound"]


@dataclass
class Reply:
    """A successful answer: an array to encode (faults may alter it first) or a finished body.

    ``extra`` are response headers; ``X-Gzip: 1`` asks the server to gzip the body for clients that
    accept it (``Content-Encoding: gzip``).
    """

    content_type: str
    data: np.ndarray | None = None
    encode: Callable[[np.ndarray], bytes] | None = None
    body: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)
    #: A file (see :mod:`~lazyflow_rbfs.testing.static`): answers ``Range`` requests with ``206``.
    ranged: bool = False


def json_reply(obj: Any) -> Reply:
    """A JSON document."""
    return Reply("application/json", body=json.dumps(obj).encode("utf-8"))


class HttpError(Exception):
    """An error answer: ``status`` and a plain-text message."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(HttpError):
    status = 400


class NotFound(HttpError):
    status = 404
