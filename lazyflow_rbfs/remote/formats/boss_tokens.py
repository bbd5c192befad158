"""BossDB tokens: the user's intern configuration, each token for the one origin it is configured for.

Tokens are the user's, never the description's: they come from intern's configuration (the file
``~/.intern/intern.cfg``, or ``INTERN_PROTOCOL``, ``INTERN_HOST`` and ``INTERN_TOKEN`` together;
``INTERN_TOKEN`` alone is for ``https://api.bossdb.io``), and each is sent only to the origin (scheme, host,
port) it is configured for; any other host gets the public token ``"public"``. Part of the ``"boss"``
format (:mod:`.boss`, which re-exports these names).
"""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from lazyflow_rbfs.description import DEFAULT_BOSS_URL
from lazyflow_rbfs.remote.http import origin

__all__ = [
    "PUBLIC_TOKEN",
    "INTERN_CONFIG",
    "configured_credentials",
    "intern_config_path",
    "resolve_token",
    "token_source",
]

logger = logging.getLogger(__name__)

#: intern's configuration file, relative to the home directory.
INTERN_CONFIG = os.path.join(".intern", "intern.cfg")

#: The token of anonymous, read-only access to public BossDB data.
PUBLIC_TOKEN = "public"

_MAX_CONFIG = 64 * 1024
_INTERN_SECTIONS = ("Volume Service", "Project Service", "Metadata Service", "Default")


@dataclass(frozen=True)
class _Credential:
    origin: tuple[str, str, int]  # scheme, host, port
    token: str = field(repr=False)
    source: str  # for messages: where it is configured (never the token)


def intern_config_path(environ: Mapping[str, str] | None = None) -> str:
    """``~/.intern/intern.cfg`` of the user (``$HOME`` of ``environ``, else of this process)."""
    env = os.environ if environ is None else environ
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, INTERN_CONFIG)


def _configured_origin(protocol: str, host: str) -> tuple[str, str, int] | None:
    # intern builds "<protocol>://<host>/v1/...": host is a host name with an optional port, nothing else.
    host = host.strip()
    if not host or any(ch in host for ch in "/?#@\\") or any(ch.isspace() for ch in host):
        return None
    return origin(f"{protocol.strip().lower()}://{host}")


def _usable(token: str) -> bool:
    return bool(token) and not any(ch.isspace() or ord(ch) < 32 for ch in token)


def _from_config_file(path: str) -> list[_Credential]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(_MAX_CONFIG + 1)
        if len(text) > _MAX_CONFIG:
            raise ValueError(f"larger than {_MAX_CONFIG} bytes")
        parser.read_string(text, source=path)
    except (OSError, ValueError, configparser.Error) as exc:
        # The message of a parse error may quote a line of the file: only its type is shown.
        logger.warning("ignoring the intern configuration %s: cannot read it (%s)", path, type(exc).__name__)
        return []
    # intern reads "[Volume Service]" for cutouts and "[Project Service]"/"[Metadata Service]" for
    # metadata, each falling back to "[Default]": every complete section names a token and its host.
    names = [n for n in _INTERN_SECTIONS if parser.has_section(n)]
    names += [n for n in parser.sections() if n not in _INTERN_SECTIONS]
    found: list[_Credential] = []
    for name in names:
        section = parser[name]
        protocol, host = section.get("protocol", ""), section.get("host", "")
        token = section.get("token", "").strip()
        where = _configured_origin(protocol, host)
        if where is None or not _usable(token):
            if token:
                logger.warning(
                    "ignoring section [%s] of %s: expected protocol (http or https), host (a host name with "
                    "an optional port) and a token of one word, found protocol %r and host %r",
                    name,
                    path,
                    protocol,
                    host,
                )
            continue
        found.append(_Credential(where, token, f"{path} [{name}]"))
    return found


def configured_credentials(environ: Mapping[str, str] | None = None) -> list[_Credential]:
    """The Boss tokens of the user's intern configuration, each bound to one origin, in order of priority.

    ``~/.intern/intern.cfg`` first (intern's own choice when the file exists), then the variables
    ``INTERN_PROTOCOL``, ``INTERN_HOST`` and ``INTERN_TOKEN`` together, or ``INTERN_TOKEN`` alone for
    ``https://api.bossdb.io``. ``INTERN_TOKEN`` with only one of the other two is ignored (with a warning):
    which host it is for is not clear.
    """
    env = os.environ if environ is None else environ
    found: list[_Credential] = []
    path = intern_config_path(env)
    if os.path.isfile(path):
        found.extend(_from_config_file(path))
    token = env.get("INTERN_TOKEN", "").strip()
    protocol, host = env.get("INTERN_PROTOCOL", ""), env.get("INTERN_HOST", "")
    if token and protocol and host:
        where = _configured_origin(protocol, host)
        if where is not None and _usable(token):
            found.append(_Credential(where, token, "INTERN_PROTOCOL, INTERN_HOST and INTERN_TOKEN"))
        else:
            logger.warning(
                "ignoring INTERN_TOKEN: expected INTERN_PROTOCOL http or https and INTERN_HOST a host name "
                "with an optional port, found %r and %r",
                protocol,
                host,
            )
    elif token and not protocol and not host:
        if _usable(token):
            bossdb = origin(DEFAULT_BOSS_URL)
            if bossdb is not None:
                found.append(_Credential(bossdb, token, f"INTERN_TOKEN (for {DEFAULT_BOSS_URL})"))
    elif token:
        logger.warning(
            "ignoring INTERN_TOKEN: it is set with only one of INTERN_PROTOCOL and INTERN_HOST; set both "
            "(intern needs the three together), or neither for %s",
            DEFAULT_BOSS_URL,
        )
    return found


def _credential_for(boss_url: str, environ: Mapping[str, str] | None) -> _Credential | None:
    target = origin(str(boss_url).strip())
    if target is None:
        return None
    for credential in configured_credentials(environ):
        if credential.origin == target:
            return credential
    return None


def resolve_token(boss_url: str, environ: Mapping[str, str] | None = None) -> str:
    """The Boss token for requests to ``boss_url``: the one the user's intern configuration names for
    exactly that origin (scheme, host and port), else the public token ``"public"``."""
    credential = _credential_for(boss_url, environ)
    return PUBLIC_TOKEN if credential is None else credential.token


def token_source(boss_url: str, environ: Mapping[str, str] | None = None) -> str:
    """Where the token for ``boss_url`` comes from, for messages (never the token itself)."""
    credential = _credential_for(boss_url, environ)
    if credential is None:
        return f"the public token {PUBLIC_TOKEN!r} (no intern configuration names this host)"
    return credential.source
