"""The lazyflow operator that serves a remote volume through the local block cache.

Imported as :mod:`lazyflow_rbfs.operators` (the public name, which re-exports this module's API).

``OpRESTfulBlockwiseFilesetReader`` is a thin adapter over
:class:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset` (``setupOutputs`` -> metadata, ``execute`` ->
``readData`` into lazyflow's result array). It is a drop-in for lazyflow's operator of the same name and
slots.

This module needs lazyflow and vigra (ilastik's conda environment). Importing it also registers this
package's fileset classes with lazyflow's own
``lazyflow.utility.io_util.blockwiseFileset.BlockwiseFilesetFactory`` so that its ``create(path, mode)``
returns *our* fileset for a composite description, whatever else is registered there (see
:func:`register_with_lazyflow`).

Concurrency: lazyflow runs many ``execute`` calls at once, as greenlets on its worker threads. ``execute``
only calls ``readData``, which waits for downloads on the package's own threads and futures; this module
holds no lock of its own, so none is ever held across a lazyflow wait or a network wait.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np

try:
    import vigra
    from lazyflow.graph import InputSlot, Operator, OutputSlot
except ImportError as exc:  # pragma: no cover - exercised only without lazyflow
    raise ImportError(
        "lazyflow_rbfs.operators needs lazyflow and vigra, which come with ilastik's conda environment "
        f"(conda install -c ilastik-forge ilastik-core); importing them failed: {exc}"
    ) from exc

from lazyflow_rbfs import errors
from lazyflow_rbfs.cache import RESTfulBlockwiseFileset

__all__ = [
    "OpRESTfulBlockwiseFilesetReader",
    "SchemaError",
    "register_with_lazyflow",
    "unregister_from_lazyflow",
]

logger = logging.getLogger(__name__)


def _lazyflow_schema_error() -> type[Exception] | None:
    try:
        from lazyflow.utility.jsonConfig import JsonConfigParser
    except ImportError:  # pragma: no cover - very old lazyflow layouts
        return None
    return JsonConfigParser.SchemaError


_JsonSchemaError = _lazyflow_schema_error()

if _JsonSchemaError is not None:

    class SchemaError(errors.SchemaError, _JsonSchemaError):
        """The description is not a composite description: "not mine".

        An instance of both :class:`lazyflow_rbfs.errors.SchemaError` and lazyflow's
        ``JsonConfigParser.SchemaError``, so lazyflow's reader chains (which only treat the latter as "try
        the next reader") and this package's callers both recognise it.
        """

else:  # pragma: no cover

    class SchemaError(errors.SchemaError):
        """The description is not a composite description: "not mine"."""


class OpRESTfulBlockwiseFilesetReader(Operator):
    """Read a remote volume, described by a composite JSON file, through its local block cache.

    Slots
    -----
    DescriptionFilePath
        Path of a ``"RESTful-blockwise-fileset-description"`` file.
    Output
        The view of the volume: ``meta.shape`` is the local ``view_shape``, ``meta.dtype`` the dtype,
        ``meta.axistags`` vigra's default tags for ``axes``, ``meta.drange`` the description's ``drange``
        (when set) and ``meta.ideal_blockshape`` the cache's block shape, so downstream caches ask for
        whole blocks.

    Parameters
    ----------
    fileset_options
        Keyword options for :class:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset` (``max_parallel``,
        ``timeout``, ``retries``, ``lock_timeout``, ``headers``, ...). Other arguments are lazyflow's
        (``graph=`` or ``parent=``).

    Raises (from ``DescriptionFilePath.setValue``)
    ----------------------------------------------
    MissingDatasetError
        The description file does not exist (as upstream's operator).
    SchemaError
        The file is not a composite description (see :class:`SchemaError`).
    lazyflow_rbfs.errors.DescriptionError
        A composite description with invalid content.

    Errors while reading (``DownloadError`` and the rest of :mod:`lazyflow_rbfs.errors`) are raised by
    ``execute``. lazyflow re-raises them in ``wait()``: as the same object when the waiter is a plain
    thread (``op.Output[...].wait()``); as ``type(error)(error)`` — same class, the original as its first
    argument — when a request waits on a request that has already failed. After a failed re-setup (a bad
    path) ``Output`` is not ready, so requests fail with lazyflow's ``SlotNotReadyError`` until a good path
    is set.

    ``execute`` accepts what lazyflow passes: ``roi.start``/``roi.stop`` as ``TinyVector`` lists (or any
    integer sequences), and a ``result`` that may be a strided view (``writeInto`` of a slice).

    Examples
    --------
    >>> from lazyflow.graph import Graph                                          # doctest: +SKIP
    >>> op = OpRESTfulBlockwiseFilesetReader(graph=Graph())                        # doctest: +SKIP
    >>> op.DescriptionFilePath.setValue("bock11.json")                             # doctest: +SKIP
    >>> block = op.Output[0:32, 0:512, 0:512].wait()                               # doctest: +SKIP
    >>> op.cleanUp()                                                               # doctest: +SKIP
    """

    name = "OpRESTfulBlockwiseFilesetReader"
    category = "Input"

    DescriptionFilePath = InputSlot(stype="filestring")
    Output = OutputSlot()

    class MissingDatasetError(Exception):
        """The description file does not exist."""

    def __init__(self, *args: Any, fileset_options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # Set before lazyflow's __init__: it may already run setupOutputs (default slot values).
        self._fileset: RESTfulBlockwiseFileset | None = None
        self._fileset_options = dict(fileset_options or {})
        super().__init__(*args, **kwargs)

    @property
    def fileset(self) -> RESTfulBlockwiseFileset | None:
        """The open fileset, or ``None`` before setup and after ``cleanUp``."""
        return self._fileset

    def setupOutputs(self) -> None:
        # lazyflow calls this only while no execute() is running, so closing the old fileset is safe.
        self._close_fileset()
        try:
            self._open_and_describe()
        except BaseException:
            self._close_fileset()
            self._make_output_unready()
            raise

    def _make_output_unready(self) -> None:
        """After a failed re-setup: no request may reach the closed fileset through a stale ``Output``.

        lazyflow leaves an operator whose ``setupOutputs`` raised flagged as "setting up" (``execute``
        waits for that flag to clear) and leaves its outputs as they were. An ``Output`` that was ready
        before would so accept requests that wait forever. Disconnecting it (what lazyflow itself does to
        force an output unready) makes requests fail at once with ``SlotNotReadyError`` until a good path
        is set.
        """
        if not self.Output.ready():
            return
        try:
            self.Output.disconnect()
        except Exception:  # noqa: BLE001 - never hide the setup error that got us here
            logger.warning("could not mark %s.Output unready after a failed setup", self.name, exc_info=True)

    def _open_and_describe(self) -> None:
        path = os.fspath(self.DescriptionFilePath.value)
        if not os.path.exists(path):
            raise OpRESTfulBlockwiseFilesetReader.MissingDatasetError(
                f"Dataset description not found: {path!r} does not exist"
            )
        try:
            fileset = RESTfulBlockwiseFileset(path, **self._fileset_options)
        except errors.SchemaError as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"{path}: {exc.message}") from exc
        self._fileset = fileset

        local = fileset.localDescription
        shape = tuple(int(n) for n in local.view_shape)
        meta = self.Output.meta
        meta.shape = shape
        meta.dtype = np.dtype(local.dtype).type
        meta.axistags = vigra.defaultAxistags(str(local.axes))
        if local.drange is not None:
            meta.drange = tuple(local.drange)
        elif "drange" in meta:
            del meta["drange"]
        meta.ideal_blockshape = tuple(min(int(b), n) for b, n in zip(local.block_shape, shape))
        logger.debug("opened %s: shape %s, dtype %s, axes %s", path, shape, meta.dtype.__name__, local.axes)

    def execute(self, slot: Any, subindex: Any, roi: Any, result: np.ndarray) -> np.ndarray:
        fileset = self._fileset
        if fileset is None:
            raise errors.ClosedError(
                f"{self.name}: no fileset is open (expected a ready operator, found one that is not set up "
                "or already cleaned up)"
            )
        start = np.asarray(roi.start, dtype=np.int64)
        stop = np.asarray(roi.stop, dtype=np.int64)
        if result.flags.c_contiguous:
            fileset.readData((start, stop), result)
        else:
            result[...] = fileset.readData((start, stop))
        return result

    def propagateDirty(self, slot: Any, subindex: Any, roi: Any) -> None:
        self.Output.setDirty(slice(None))

    def cleanUp(self) -> None:
        self._close_fileset()
        super().cleanUp()

    def _close_fileset(self) -> None:
        fileset, self._fileset = self._fileset, None
        if fileset is None:
            return
        try:
            fileset.close()
        except Exception:  # noqa: BLE001 - a failed close must not keep the operator from reconfiguring
            logger.warning("closing %r failed", fileset, exc_info=True)


# ----------------------------------------------------------------------------------------------------------
# Registration with lazyflow's BlockwiseFilesetFactory
#
# lazyflow's factory keeps creation functions in a set (arbitrary order) and returns the first non-None
# result, and lazyflow registers its own older RESTful class. To make "ours first" deterministic, its
# ``create`` classmethod is wrapped: ours are tried first, then the original ``create`` (with our creation
# function, which is also in the set for code that iterates it, made to answer None for that call).

_ORIGINAL = "_lazyflow_rbfs_original_create"
_CREATION_FN = "_lazyflow_rbfs_creation_fn"
_skip_ours = threading.local()


def _create_ours(descriptionPath: str, mode: str):
    """Creation function in lazyflow's convention: our fileset, or ``None`` if the file is not ours."""
    if getattr(_skip_ours, "active", False):
        return None
    from lazyflow_rbfs.factory import BlockwiseFilesetFactory

    try:
        return BlockwiseFilesetFactory.create(descriptionPath, mode)
    except errors.SchemaError:
        return None


def _create_ours_first(cls: type, descriptionPath: str, mode: str):
    fileset = _create_ours(descriptionPath, mode)
    if fileset is not None:
        return fileset
    original = getattr(cls, _ORIGINAL)  # the original classmethod, bound to cls
    previous = getattr(_skip_ours, "active", False)
    _skip_ours.active = True  # our function is in creationFns too: already answered None
    try:
        return original(descriptionPath, mode)
    finally:
        _skip_ours.active = previous


def _lazyflow_factory() -> type | None:
    try:
        from lazyflow.utility.io_util.blockwiseFileset import BlockwiseFilesetFactory
    except ImportError as exc:
        # lazyflow itself is importable here (this module imported lazyflow.graph): an unknown layout.
        logger.warning(
            "lazyflow is importable but lazyflow.utility.io_util.blockwiseFileset.BlockwiseFilesetFactory "
            "is not (%s); lazyflow's factory will not return lazyflow_rbfs filesets",
            exc,
        )
        return None
    return BlockwiseFilesetFactory


def register_with_lazyflow() -> bool:
    """Make lazyflow's ``BlockwiseFilesetFactory.create`` try this package's filesets first.

    Idempotent; done on import of this module. Returns ``False`` if lazyflow has no such factory.
    """
    factory = _lazyflow_factory()
    if factory is None:
        return False
    if _ORIGINAL in factory.__dict__:
        return True
    original = factory.__dict__.get("create")
    if not isinstance(original, (classmethod, staticmethod)):
        raise TypeError(
            "expected lazyflow's BlockwiseFilesetFactory.create to be a classmethod, found "
            f"{type(original).__name__}"
        )
    setattr(factory, _ORIGINAL, original)
    setattr(factory, _CREATION_FN, _create_ours)
    factory.create = classmethod(_create_ours_first)
    factory.creationFns.add(_create_ours)
    logger.debug("registered lazyflow_rbfs filesets with lazyflow's BlockwiseFilesetFactory")
    return True


def unregister_from_lazyflow() -> None:
    """Undo :func:`register_with_lazyflow` (idempotent)."""
    factory = _lazyflow_factory()
    if factory is None or _ORIGINAL not in factory.__dict__:
        return
    factory.create = factory.__dict__[_ORIGINAL]
    factory.creationFns.discard(factory.__dict__[_CREATION_FN])
    delattr(factory, _ORIGINAL)
    delattr(factory, _CREATION_FN)


register_with_lazyflow()
