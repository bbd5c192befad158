"""Input and output slots.

Modelled from lazyflow's contract:

* ``InputSlot.setValue(v)`` stores ``v`` (nothing happens if it equals the current value, unless
  ``check_changed=False``), runs the operator's ``setupOutputs`` synchronously (its exception propagates to
  the caller) and then marks the input dirty, which calls the operator's ``propagateDirty``.
* ``OutputSlot[key]`` / ``OutputSlot(start, stop)`` return a :class:`~lazyflow.request.Request`; ``wait()``
  allocates a C-contiguous result of the slot's dtype (or uses the array given to ``writeInto``), splits a
  big roi into pieces and runs the operator's ``execute`` for them concurrently on the worker pool. A failed
  piece fails the whole request: the waiter gets an exception of the same type whose ``__cause__`` is the
  one ``execute`` raised (lazyflow re-raises ``exc_type(exc_value)`` when a request waits on a failed one).
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
        self.meta._ready = value is not None
        for key, item in (extra_meta or {}).items():
            setattr(self.meta, key, item)
        operator = self.operator
        if operator is not None and not operator._cleaningUp:
            operator._setupOutputs()
            if operator.configured():
                self.setDirty(slice(None))

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


def _pieces(start: np.ndarray, stop: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a roi along its first axis longer than 1 into up to ``Request.num_workers`` pieces."""
    shape = stop - start
    if int(np.prod(shape)) < Request.split_threshold or Request.num_workers < 2:
        return [(start, stop)]
    axes = [i for i, n in enumerate(shape) if n > 1]
    if not axes:
        return [(start, stop)]
    axis = axes[0]
    bounds = np.linspace(start[axis], stop[axis], min(int(shape[axis]), Request.num_workers) + 1).astype(
        np.int64
    )
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        piece_start, piece_stop = start.copy(), stop.copy()
        piece_start[axis], piece_stop[axis] = a, b
        pieces.append((piece_start, piece_stop))
    return pieces


def _reraise_wrapped(exc: BaseException):
    """Raise like lazyflow does when a request waits on a failed one: same type, original as the cause."""
    try:
        wrapped = type(exc)(exc)
    except Exception:  # noqa: BLE001 - a type that cannot be built from its instance: raise the original
        wrapped = None
    if wrapped is None:
        raise exc
    raise wrapped.with_traceback(exc.__traceback__) from exc


class _SlotExecution:
    """The workload of a slot request: allocate, split, execute the pieces, assemble."""

    def __init__(self, slot: OutputSlot, roi: SubRegion) -> None:
        self.slot = slot
        self.roi = roi

    def __call__(self, destination=None):
        slot = self.slot
        start, stop = self.roi.start, self.roi.stop
        shape = tuple(int(n) for n in stop - start)
        dtype = slot.meta.dtype
        if destination is None:
            destination = np.empty(shape, dtype=dtype)
        else:
            if tuple(destination.shape) != shape:
                raise ValueError(
                    f"destination shape {destination.shape} does not match the roi shape {shape}"
                )
            if dtype is not None and np.dtype(destination.dtype) != np.dtype(dtype):
                raise ValueError(
                    f"Can't provide a destination array of the wrong dtype. Slot generates "
                    f"{np.dtype(dtype)}, but you gave {destination.dtype}"
                )
        pieces = _pieces(start, stop)
        pool = Request.global_pool()
        if len(pieces) == 1 or pool is None or Request.in_worker_thread():
            for piece_start, piece_stop in pieces:
                self._run_piece(piece_start, piece_stop, destination, dtype)
            return destination
        futures = [
            pool.submit(functools.partial(self._run_piece, a, b, destination, dtype)) for a, b in pieces
        ]
        concurrent.futures.wait(futures)
        for future in futures:
            exc = future.exception()
            if exc is not None:
                _reraise_wrapped(exc)
        return destination

    def _run_piece(self, piece_start, piece_stop, destination, dtype) -> None:
        slot = self.slot
        operator = slot.operator
        local = tuple(
            slice(int(a - s), int(b - s)) for a, b, s in zip(piece_start, piece_stop, self.roi.start)
        )
        view = destination[local]
        buffer = view if view.flags.c_contiguous else np.empty(view.shape, dtype=view.dtype)
        roi = SubRegion(slot, start=piece_start, stop=piece_stop)
        result = operator.call_execute(slot, (), roi, buffer)
        if result is not None and result is not buffer:
            if tuple(np.shape(result)) != tuple(buffer.shape):
                raise ValueError(
                    f"{operator.name}.execute returned shape {np.shape(result)} for roi shape {buffer.shape}"
                )
            buffer[...] = result
        if buffer is not view:
            view[...] = buffer
