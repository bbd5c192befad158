"""How ``rbfs`` writes values for people: byte sizes, shapes, one-line messages, URLs without secrets."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["fmt_bytes", "fmt_shape", "one_line", "redact_url"]


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def fmt_shape(values: Sequence[int]) -> str:
    return " x ".join(str(int(v)) for v in values)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def redact_url(url: str) -> str:
    """Hide credentials in a URL (pattern): a userinfo password and secret-looking query values."""
    url = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(
        r"([?&;][^=&;#]*(?:token|key|secret|pass|auth|sig|credential)[^=&;#]*=)[^&;#]*",
        r"\1***",
        url,
        flags=re.IGNORECASE,
    )
