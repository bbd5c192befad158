"""Input and output slots, modelled on ``lazyflow/slot.py`` and ``lazyflow/stype.py``.

* ``InputSlot.setValue(v)`` stores ``v`` (nothing happens if it equals the current value, unless
  ``check_changed=False``), runs the operator's ``setupOutputs`` synchronously (its exception propagates to
  the caller) and then marks the input dirty, which calls the operator's ``propagateDirty``.
* ``OutputSlot[key]`` / ``OutputSlot(start, stop)`` build a ``SubRegion`` (``start``/``stop`` are
  ``TinyVector`` lists, negative or out-of-range keys are passed through unchanged, see ``lazyflow.roi``)
  and return a :class:`~lazyflow.request.Request`. Its workload allocates ``numpy.ndarray(stop - start,
  dtype=meta.dtype)`` (C order, uninitialised) or uses the array given to ``writeInto`` **as it is** —
  a non-contiguous view (e.g. a slice of a bigger array, as lazyflow's caches and exporters pass) reaches
  ``execute`` unchanged. A ``writeInto`` array of another dtype fails an assertion, as in lazyflow.
* Real lazyflow calls ``execute`` once per request. To put concurrency on ``execute`` (as a blockwise cache
  or an exporter downstream of a reader does), the double splits a big request into pieces along its first
  axis longer than 1 and runs them on the worker pool, each piece writing into its view of the destination.
  The requester waits as a "foreign" (non-worker) thread, so a failed piece re-raises **the original
  exception object** (``raise_with_traceback(exc_value, tb)`` in lazyflow); see ``lazyflow.request`` for
  the one path that re-creates it instead.
* A result returned by ``execute`` must be an ``ndarray`` of the roi's shape (lazyflow's
  ``check_result_valid`` raises ``InvalidResult``, a ``ValueError``); if it is not the destination it is
  copied into it.
* An output connected to another output forwards requests and shows the upstream metadata.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools

import numpy as np

from lazyflow.metaDict import MetaDict
from lazyflow.request import Request
from lazyflow.rtype import SubRegion


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and np.shape(a) == np.shape(b) and bool(np.all(a == b))
    try:
        return bool(a == b)
    except ValueError:
        return False


class Slot:
    _counter = itertools.count()

    class SlotNotReadyError(Exception):
        pass

    def __init__(
        self,
        name: str = "",
        operator=None,
        stype=None,
        rtype=SubRegion,
        value=None,
        optional=False,
        level: int = 0,
    ) -> None:
        if level != 0:
            raise NotImplementedError("the lazyflow double does not model multi-slots (level > 0)")
        self.name = name
        self.operator = operator
        self._stype = stype
        self.rtype = rtype
        self._defaultValue = value
        self._optional = optional
        self.level = level
        self._order = next(Slot._counter)
        self._meta = MetaDict()
        self._value = None
        self.upstream_slot = None
        self.downstream_slots: list[Slot] = []
        self._dirty_callbacks: list = []

    def __set_name__(self, owner, name: str) -> None:
        if not self.name:
            self.name = name

    def _instantiate(self, operator) -> Slot:
        return type(self)(
            self.name,
            operator,
            stype=self._stype,
            rtype=self.rtype,
            value=self._defaultValue,
            optional=self._optional,
        )

    @property
    def meta(self) -> MetaDict:
        return self._meta

    @meta.setter
    def meta(self, value: MetaDict) -> None:
        self._meta = value

    @property
    def graph(self):
        return None if self.operator is None else self.operator.graph

    def ready(self) -> bool:
        return bool(self.meta._ready)

    def connected(self) -> bool:
        return self._value is not None or self.upstream_slot is not None

    def notifyDirty(self, function, **kwargs):
        callback = functools.partial(function, **kwargs) if kwargs else function
        self._dirty_callbacks.append(callback)
        return functools.partial(self._dirty_callbacks.remove, callback)

    def unregisterDirty(self, function) -> None:
        self._dirty_callbacks.remove(function)

    def _make_roi(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and isinstance(args[0], SubRegion):
            return args[0]
        if len(args) == 1 and not kwargs:
            return SubRegion(self, pslice=args[0])
        return SubRegion(self, *args, **kwargs)

    def __repr__(self) -> str:
        owner = None if self.operator is None else self.operator.name
        return f"<{type(self).__name__} {owner}.{self.name} meta={dict(self.meta)}>"


class InputSlot(Slot):
    def setOrConnect(self, value_or_slot) -> None:
        if isinstance(value_or_slot, Slot):
            self.connect(value_or_slot)
        else:
            self.setValue(value_or_slot)

    def setOrConnectIfAvailable(self, value_or_slot) -> None:
        if value_or_slot is not None:
            self.setOrConnect(value_or_slot)

    def setValue(self, value, notify: bool = True, check_changed: bool = True, extra_meta=None) -> None:
        if isinstance(value, Slot):
            raise TypeError("When using setValue, value cannot be a slot. Use connect instead.")
        if self.upstream_slot is not None:
            raise RuntimeError(
                f"Cannot call setValue on slot {self.name}: it is connected to an upstream slot"
            )
        if check_changed and self._value is not None and _same(value, self._value):
            return
        self._value = value
        if isinstance(value, np.ndarray):  # lazyflow's ArrayLike.setupMetaForValue
            self.meta.shape, self.meta.dtype = value.shape, value.dtype.type
        else:
            self.meta.shape, self.meta.dtype = (1,), object
        self.meta._ready = value is not None
        for key, item in (extra_meta or {}).items():
            setattr(self.meta, key, item)
        operator = self.operator
        if operator is not None and not operator._cleaningUp:
            operator._setupOutputs()
            if operator.configured():
                self.setDirty(slice(None))

    def __call__(self, *args, **kwargs):
        """A request for a roi of the upstream slot (an input relays to what it is connected to)."""
        if self.upstream_slot is None:
            raise Slot.SlotNotReadyError(f"input slot {self.name} is not connected to an upstream slot")
        return self.upstream_slot(*args, **kwargs)

    def __getitem__(self, key):
        if self.upstream_slot is None:
            raise Slot.SlotNotReadyError(f"input slot {self.name} is not connected to an upstream slot")
        return self.upstream_slot[key]

    @property
    def value(self):
        if self._value is not None:
            return self._value
        if self.upstream_slot is not None:
            return self.upstream_slot.value
        raise Slot.SlotNotReadyError(f"input slot {self.name} has no value and no upstream slot")

    def connect(self, upstream: Slot) -> None:
        if self.upstream_slot is upstream:
            return
        self.disconnect()
        self.upstream_slot = upstream
        upstream.downstream_slots.append(self)
        self.meta = upstream.meta.copy()
        if self.operator is not None and upstream.ready():
            self.operator._setupOutputs()

    def disconnect(self) -> None:
        if self.upstream_slot is not None:
            self.upstream_slot.downstream_slots.remove(self)
            self.upstream_slot = None
        self._value = None
        self.meta = MetaDict()

    def setDirty(self, *args, **kwargs) -> None:
        roi = self._make_roi(*args, **kwargs) if self.meta.shape is not None else None
        for callback in list(self._dirty_callbacks):
            callback(self, roi)
        operator = self.operator
        if operator is not None and operator.configured() and not operator._cleaningUp:
            operator.propagateDirty(self, (), roi)


class OutputSlot(Slot):
    def __init__(self, *args, **kwargs) -> None:
        if kwargs.pop("optional", False):
            raise TypeError('"optional" init arg cannot be used with OutputSlot')
        super().__init__(*args, **kwargs)

    def _instantiate(self, operator) -> Slot:
        return OutputSlot(self.name, operator, stype=self._stype, rtype=self.rtype)

    @property
    def meta(self) -> MetaDict:
        return self.upstream_slot.meta if self.upstream_slot is not None else self._meta

    @meta.setter
    def meta(self, value: MetaDict) -> None:
        self._meta = value

    def connect(self, upstream: OutputSlot) -> None:
        """Forward this output to ``upstream`` (an operator exposing an internal operator's output)."""
        self.disconnect()
        self.upstream_slot = upstream
        upstream.downstream_slots.append(self)

    def disconnect(self) -> None:
        if self.upstream_slot is not None:
            if self in self.upstream_slot.downstream_slots:
                self.upstream_slot.downstream_slots.remove(self)
            self.upstream_slot = None
        self._meta = MetaDict()

    def _producer(self) -> OutputSlot:
        slot = self
        while slot.upstream_slot is not None:
            slot = slot.upstream_slot
        return slot

    def __getitem__(self, key) -> Request:
        return self.get(self._make_roi(key))

    def __call__(self, *args, **kwargs) -> Request:
        return self.get(self._make_roi(*args, **kwargs))

    def _make_roi(self, *args, **kwargs):
        if not self.ready():
            raise Slot.SlotNotReadyError(f"Can't get data from slot {self.name} yet. It isn't ready.")
        return super()._make_roi(*args, **kwargs)

    def get(self, roi: SubRegion) -> Request:
        return Request(_SlotExecution(self._producer(), roi))

    @property
    def value(self):
        return self[...].wait()

    def setDirty(self, *args, **kwargs) -> None:
        roi = Slot._make_roi(self, *args, **kwargs) if self.meta.shape is not None else None
        for callback in list(self._dirty_callbacks):
            callback(self, roi)
        for downstream in list(self.downstream_slots):
            downstream.setDirty(roi) if roi is not None else downstream.setDirty(slice(None))


class InvalidResult(ValueError):
    """``execute`` returned something that is not an array of the roi's shape (lazyflow's stype error)."""


def _pieces(start, stop) -> list[tuple[list[int], list[int]]]:
    """Split a roi along its first axis longer than 1 into up to ``Request.num_workers`` pieces."""
    start = [int(a) for a in start]
    stop = [int(b) for b in stop]
    shape = [b - a for a, b in zip(start, stop)]
    if int(np.prod(shape)) < Request.split_threshold or Request.num_workers < 2:
        return [(start, stop)]
    axes = [i for i, n in enumerate(shape) if n > 1]
    if not axes:
        return [(start, stop)]
    axis = axes[0]
    bounds = np.linspace(start[axis], stop[axis], min(shape[axis], Request.num_workers) + 1).astype(np.int64)
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        piece_start, piece_stop = list(start), list(stop)
        piece_start[axis], piece_stop[axis] = int(a), int(b)
        pieces.append((piece_start, piece_stop))
    return pieces


class _SlotExecution:
    """The workload of a slot request: allocate, (split,) execute, check."""

    def __init__(self, slot: OutputSlot, roi: SubRegion) -> None:
        self.slot = slot
        self.roi = roi

    def __call__(self, destination=None):
        slot = self.slot
        start, stop = self.roi.start, self.roi.stop
        dtype = slot.meta.dtype
        if destination is None:
            destination = np.ndarray(tuple(stop - start), dtype=dtype)
        elif dtype is not None and hasattr(destination, "dtype"):
            if not dtype == destination.dtype:
                raise AssertionError(
                    f"Can't provide a destination array of the wrong dtype.  Slot generates {dtype}, "
                    f"but you gave {destination.dtype}"
                )
        pieces = _pieces(start, stop)
        pool = Request.global_pool()
        if len(pieces) == 1 or pool is None or Request.in_worker_thread():
            for piece_start, piece_stop in pieces:
                self._run_piece(piece_start, piece_stop, destination)
            return destination
        futures = [pool.submit(functools.partial(self._run_piece, a, b, destination)) for a, b in pieces]
        concurrent.futures.wait(futures)
        for future in futures:
            exc = future.exception()
            if exc is not None:
                raise exc  # the original object, as a foreign-thread wait in lazyflow raises it
        return destination

    def _run_piece(self, piece_start, piece_stop, destination) -> None:
        slot = self.slot
        operator = slot.operator
        local = tuple(
            slice(int(a) - int(s), int(b) - int(s))
            for a, b, s in zip(piece_start, piece_stop, self.roi.start)
        )
        view = destination[local]  # possibly non-contiguous: passed on as it is
        roi = SubRegion(slot, start=piece_start, stop=piece_stop)
        result = operator.call_execute(slot, (), roi, view)
        if result is None:
            return
        if not isinstance(result, np.ndarray):
            raise InvalidResult(f"Result of type {type(result).__name__} is not supported")
        if tuple(result.shape) != tuple(view.shape):
            raise InvalidResult(f"Result has shape {result.shape}, but expected {view.shape}")
        if result is not view:
            view[...] = result
