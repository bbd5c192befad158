"""Open composite descriptions in ilastik: an opt-in hook for ``OpInputDataReader``, and ``rbfs ilastik``.

Imported as :mod:`lazyflow_rbfs.ilastik` (the public name, which re-exports this module's API).

ilastik opens every input (GUI data selection, headless ``--raw_data=...``) through lazyflow's
``OpInputDataReader``, which tries its readers in a fixed order. For ``.json`` files that order is tiled
volume, H5BlockStore, blockwise fileset, RESTful blockwise fileset; a reader says "not mine" only by
raising lazyflow's ``JsonConfigParser.SchemaError``. Two things keep a composite description from
opening there today: the H5BlockStore attempt raises ``NameError`` for every ``.json`` unless the optional
``quilted`` package is installed, and the RESTful reader at the end of the chain is upstream's old one.

:func:`install` wraps the ``.json`` attempts of ``OpInputDataReader`` (nothing else):

* a composite description (``_schema_name`` ``"RESTful-blockwise-fileset-description"``) is opened with
  :class:`~lazyflow_rbfs.operators.OpRESTfulBlockwiseFilesetReader` at the first ``.json`` attempt, before
  any other reader sees it;
* a file of any of this package's schemas skips the H5BlockStore attempt (which can never open it)
  instead of failing with ``NameError``;
* every other file — other JSON included — goes through the original attempts unchanged.

:func:`uninstall` restores the original methods. Both are idempotent. :func:`main` runs ilastik's own
entry point in this process with the hook installed (``rbfs ilastik [--] ILASTIK_ARGS...``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lazyflow_rbfs import errors
from lazyflow_rbfs.description import (
    COMPOSITE_SCHEMA_NAME,
    LOCAL_SCHEMA_NAME,
    MAX_FILE_SIZE,
    REMOTE_SCHEMA_NAME,
)

__all__ = ["install", "uninstall", "installed", "main", "EXIT_UNAVAILABLE", "JSON_ATTEMPTS"]

logger = logging.getLogger(__name__)

#: Exit status of :func:`main` when ilastik (or lazyflow) cannot be imported (the CLI's "not available").
EXIT_UNAVAILABLE = 2

_READER_MODULE = "lazyflow.operators.ioOperators.opInputDataReader"

#: The ``.json`` attempts of ``OpInputDataReader`` that are wrapped (those that exist are).
JSON_ATTEMPTS = (
    "_attemptOpenAsTiledVolume",
    "_attemptOpenAsH5BlockStore",
    "_attemptOpenAsBlockwiseFileset",
    "_attemptOpenAsRESTfulBlockwiseFileset",
)
_H5BLOCKSTORE = "_attemptOpenAsH5BlockStore"
_OUR_SCHEMAS = frozenset({COMPOSITE_SCHEMA_NAME, LOCAL_SCHEMA_NAME, REMOTE_SCHEMA_NAME})
_MARK = "_lazyflow_rbfs_originals"

# Options for the filesets the hook opens (max_parallel, timeout, headers, ...); set by install().
_fileset_options: dict[str, Any] = {}


def _reader_class() -> type:
    from lazyflow.operators.ioOperators.opInputDataReader import OpInputDataReader

    return OpInputDataReader


def installed() -> bool:
    """Whether the hook is installed in the currently imported ``OpInputDataReader``."""
    module = sys.modules.get(_READER_MODULE)
    cls = getattr(module, "OpInputDataReader", None)
    return cls is not None and _MARK in cls.__dict__


def install(**fileset_options: Any) -> None:
    """Make ``OpInputDataReader`` open composite descriptions with our operator (see the module docstring).

    Parameters
    ----------
    **fileset_options
        Options for every :class:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset` the hook opens
        (``max_parallel``, ``timeout``, ``retries``, ``lock_timeout``, ``headers``). Calling ``install``
        again while installed replaces them.

    Raises
    ------
    ImportError
        lazyflow is not importable.
    RuntimeError
        This ``OpInputDataReader`` has none of the ``.json`` attempts the hook wraps.
    """
    cls = _reader_class()
    importlib.import_module("lazyflow_rbfs.integrations.lazyflow")  # fails early; registers with the factory
    _fileset_options.clear()
    _fileset_options.update(fileset_options)
    if _MARK in cls.__dict__:
        return
    originals = {name: cls.__dict__[name] for name in JSON_ATTEMPTS if name in cls.__dict__}
    _check_layout(cls, originals)
    for name, original in originals.items():
        setattr(cls, name, _wrap(name, original))
    setattr(cls, _MARK, originals)
    logger.debug("installed the lazyflow_rbfs hook in %s (%s)", cls.__qualname__, ", ".join(originals))


def _check_layout(cls: type, originals: dict[str, Any]) -> None:
    """Refuse (``RuntimeError``) an ``OpInputDataReader`` whose ``.json`` attempts we do not recognise.

    Expected, as in ilastik 1.4: methods ``_attemptOpenAs...(self, filePath)`` that ``setupOutputs`` (or
    another method of the class) calls. A hook that patched methods nobody calls would do nothing,
    silently; this check makes such an ilastik version fail at :func:`install` instead.
    """
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not originals:
        raise RuntimeError(
            f"cannot hook {where}: expected at least one of {', '.join(JSON_ATTEMPTS)}, found none "
            "(an ilastik version this package does not know)"
        )
    for name, original in originals.items():
        try:
            signature = inspect.signature(original)
        except (TypeError, ValueError) as exc:
            raise RuntimeError(f"cannot hook {where}.{name}: it is not a plain method ({exc})") from exc
        required = [
            p
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not inspect.isfunction(original) or len(required) != 2:
            raise RuntimeError(
                f"cannot hook {where}.{name}: expected a method taking (self, filePath), found "
                f"{type(original).__name__} {name}{signature}"
            )
    if not _names_used_by(cls, exclude=set(originals)) & set(originals):
        raise RuntimeError(
            f"cannot hook {where}: none of its methods calls {', '.join(originals)} any more "
            "(an ilastik version whose reader chain this package does not know)"
        )


def _names_used_by(cls: type, exclude: set[str]) -> set[str]:
    """Attribute names that the methods of ``cls`` (and its bases), except ``exclude``, refer to."""
    names: set[str] = set()
    for klass in cls.__mro__:
        for attr, value in vars(klass).items():
            if attr in exclude:
                continue
            function = getattr(value, "__func__", value)  # staticmethod and classmethod too
            if inspect.isfunction(function):
                function = inspect.unwrap(function)
            code = getattr(function, "__code__", None)
            todo = [code] if code is not None else []
            while todo:
                code = todo.pop()
                names.update(code.co_names)
                todo.extend(c for c in code.co_consts if inspect.iscode(c))
    return names


def uninstall() -> None:
    """Restore ``OpInputDataReader``'s original methods (idempotent; never imports lazyflow)."""
    module = sys.modules.get(_READER_MODULE)
    cls = getattr(module, "OpInputDataReader", None)
    if cls is None or _MARK not in cls.__dict__:
        return
    for name, original in cls.__dict__[_MARK].items():
        setattr(cls, name, original)
    delattr(cls, _MARK)
    _fileset_options.clear()
    logger.debug("uninstalled the lazyflow_rbfs hook")


def _wrap(name: str, original: Callable) -> Callable:
    skip_if_ours = name == _H5BLOCKSTORE

    @functools.wraps(original)
    def attempt(self: Any, filePath: str) -> Any:
        schema = _our_schema(filePath)
        if schema == COMPOSITE_SCHEMA_NAME:
            opened = _open_with_our_operator(self, filePath)
            if opened is not None:
                return opened
        if schema is not None and skip_if_ours:
            return _nothing(self)
        return original(self, filePath)

    return attempt


def _our_schema(path: str) -> str | None:
    """The ``_schema_name`` of a ``.json`` file if it is one of this package's schemas, else ``None``."""
    if not isinstance(path, str) or os.path.splitext(path)[1].lower() != ".json":
        return None
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_SIZE + 1)
        if len(raw) > MAX_FILE_SIZE:
            return None
        obj = json.loads(raw.decode("utf-8-sig"))
    except (OSError, ValueError, RecursionError):
        return None  # not readable JSON: the original chain decides, as before
    name = obj.get("_schema_name") if isinstance(obj, dict) else None
    return name if name in _OUR_SCHEMAS else None


def _nothing(reader: Any) -> tuple:
    return ([], None) if hasattr(reader, "internalOperators") else (None, None)


def _open_with_our_operator(reader: Any, path: str) -> tuple | None:
    """``([op], op.Output)`` as the reader chain expects, or ``None`` if the file is not ours after all."""
    from lazyflow_rbfs.integrations.lazyflow import OpRESTfulBlockwiseFilesetReader, SchemaError

    dataset_read_error = getattr(type(reader), "DatasetReadError", RuntimeError)
    op = OpRESTfulBlockwiseFilesetReader(parent=reader, fileset_options=dict(_fileset_options))
    try:
        op.DescriptionFilePath.setValue(path)
    except SchemaError:
        op.cleanUp()
        return None
    except OpRESTfulBlockwiseFilesetReader.MissingDatasetError as exc:
        op.cleanUp()
        raise dataset_read_error(*exc.args) from exc
    except errors.DescriptionError as exc:
        op.cleanUp()
        raise dataset_read_error(f"invalid description {path}: {exc}") from exc
    except BaseException:
        op.cleanUp()
        raise
    logger.info("opened %s with %s", path, type(op).__name__)
    return ([op], op.Output) if hasattr(reader, "internalOperators") else (op, op.Output)


# ----------------------------------------------------------------------------------------------------------
# rbfs ilastik


def _ilastik_entry_point() -> tuple[str, Any]:
    """``("main", ilastik.__main__)`` (current ilastik) or ``("legacy", ilastik_main)`` (ilastik 1.3)."""
    try:
        module = importlib.import_module("ilastik.__main__")
    except ImportError as exc:
        try:
            legacy = importlib.import_module("ilastik_main")
        except ImportError:
            raise exc from None
        return "legacy", legacy
    if not callable(getattr(module, "main", None)):
        raise ImportError(f"{module.__name__} has no main()")
    return "main", module


def _import_opengm_first() -> None:
    """Import ``opengm`` (when present) before :func:`install` imports vigra, as ilastik's start-up does.

    ilastik imports ``opengm`` before anything imports ``vigra`` (``app._import_opengm``: otherwise its
    graph-cut thresholding is unavailable); :func:`install` imports vigra earlier than ilastik would.
    """
    try:
        importlib.import_module("opengm")
    except ImportError:
        pass


def _exit_status(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ilastik's own entry point in this process with the hook installed; return its exit status.

    ``argv`` are ilastik's arguments (a leading ``--`` is dropped), e.g.
    ``["--headless", "--project=pc.ilp", "--raw_data=volume.json", "--output_filename_format=out.h5"]``;
    without ``--headless`` ilastik starts its GUI. The hook is removed again afterwards unless it was
    installed before. Exceptions escaping ilastik propagate.

    If ilastik or lazyflow cannot be imported, writes one line to stderr and returns
    :data:`EXIT_UNAVAILABLE`.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    try:
        kind, entry = _ilastik_entry_point()
        was_installed = installed()
        _import_opengm_first()
        install()
    except ImportError as exc:
        sys.stderr.write(
            f"rbfs ilastik: error: ilastik is not importable here ({exc}); run rbfs from ilastik's Python "
            "environment (conda install -c ilastik-forge ilastik)\n"
        )
        return EXIT_UNAVAILABLE
    saved_argv = sys.argv
    sys.argv = ["ilastik", *args]
    try:
        if kind == "main":
            entry.main()
        else:
            parsed, rest = entry.parser.parse_known_args(args)
            shell = entry.main(parsed, rest)
            if shell is not None and hasattr(shell, "closeCurrentProject"):
                shell.closeCurrentProject()
    except SystemExit as exc:
        return _exit_status(exc.code)
    finally:
        sys.argv = saved_argv
        if not was_installed:
            uninstall()
    return 0
