"""``from lazyflow.graph import Graph, Operator, InputSlot, OutputSlot``, and what they hand an operator.

Real lazyflow spreads this over ``operator.py``, ``slot.py``, ``metaDict.py``, ``roi.py`` and
``rtype.py``. Kept, because an operator can get each of them wrong:

* ``Op(graph=g)`` or ``Op(parent=p)`` (a positional argument is the parent); an exception from ``__init__``
  reaches the caller as ``RuntimeError``; the first ``setupOutputs`` runs after ``__init__``.
* ``InputSlot.setValue(v)`` (a no-op if ``v`` equals the current value) runs ``setupOutputs``
  synchronously — its exception reaches the caller, **leaves the operator flagged "setting up"**
  (``execute`` waits for the flag to clear) and leaves the outputs as they were, a ready one still ready —
  then calls ``propagateDirty``. After a successful setup every output is ready.
* ``Output[key]`` / ``Output(start, stop)`` give a ``Request``. ``execute(slot, subindex, roi, result)``
  gets ``roi.start``/``roi.stop`` as ``TinyVector`` lists, keys neither wrapped nor clipped (``-3`` stays
  ``-3``, ``0:1000`` stays ``[0, 1000)``, an int ``k`` is ``[k, k + 1)``), and ``result`` is a fresh
  C-order ``numpy.ndarray(stop - start, meta.dtype)`` or the ``writeInto`` array as it is, maybe a strided
  view (a ``writeInto`` array of another dtype fails an assertion). A returned array that is not
  ``result`` must have its shape and is copied in.
* Real lazyflow runs one ``execute`` per request; the double splits a big request into pieces on the
  worker threads (as a blockwise cache or an exporter downstream does), so ``execute`` runs in several
  threads at once. The requester waits from outside the pool: a failed piece re-raises the original.
* ``meta`` is a ``MetaDict``: a ``defaultdict`` (a read of an unset key returns ``None`` and inserts it);
  ``meta.x = v`` compares the old value with ``!=`` (numpy arrays there raise) and ``shape`` must be a
  tuple; ``del meta["x"]`` works.
* ``cleanUp`` disconnects the operator's slots (outputs become unready) and cleans up its children.
"""

from __future__ import annotations

import functools
import operator
import threading
from collections import OrderedDict, defaultdict
from concurrent.futures import wait as wait_all

import numpy as np

from lazyflow.request import WORKERS, Request, in_worker_thread, pool

__all__ = ["Graph", "Operator", "InputSlot", "OutputSlot"]

#: Requests of at least this many elements are split into pieces run on the worker threads.
SPLIT_THRESHOLD = 4096


class Graph:
    """Operators only need one to belong to."""


class MetaDict(defaultdict):
    def __init__(self, *args) -> None:
        super().__init__(lambda: None, *args)
        self.setdefault("_ready", False)

    def __setattr__(self, name: str, value) -> None:
        if self[name] != value:  # lazyflow marks the metadata dirty; numpy arrays make this raise
            self["_dirty"] = True
        if name == "shape" and not isinstance(value, tuple):
            raise Exception(f"Slot.meta.shape must always be a tuple, not {type(value)}")
        self[name] = value

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def copy(self) -> MetaDict:
        return MetaDict(self)

    def getTaggedShape(self) -> OrderedDict:
        return OrderedDict(zip((tag.key for tag in self.axistags), self.shape))


class TinyVector(list):
    """``lazyflow.roi.TinyVector``: a list whose arithmetic and comparisons work element-wise."""

    __hash__ = None


def _elementwise(fn):
    def method(self, other):
        others = other if isinstance(other, (list, tuple, np.ndarray)) else [other] * len(self)
        return TinyVector(fn(a, b) for a, b in zip(self, others))

    return method


for _name in ("add", "sub", "mul", "floordiv", "eq", "ne", "lt", "le", "gt", "ge"):
    setattr(TinyVector, f"__{_name}__", _elementwise(getattr(operator, _name)))


class SubRegion:
    """``lazyflow.rtype.SubRegion``."""

    def __init__(self, slot, start, stop) -> None:
        self.slot, self.start, self.stop = slot, TinyVector(start), TinyVector(stop)

    def toSlice(self) -> tuple[slice, ...]:
        return tuple(slice(int(a), int(b)) for a, b in zip(self.start, self.stop))


def _key_to_roi(key, shape) -> tuple[list, list]:
    """``lazyflow.roi.sliceToRoi``: ``...`` and missing trailing axes become ``:``; nothing else changes."""
    key = key if isinstance(key, tuple) else (key,)
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key += (slice(None),) * (len(shape) - len(key))
    start = [(k.start or 0) if isinstance(k, slice) else k for k in key]
    stop = [(n if k.stop is None else k.stop) if isinstance(k, slice) else k for k, n in zip(key, shape)]
    return start, [b + 1 if a == b else b for a, b in zip(start, stop)]


class Slot:
    class SlotNotReadyError(Exception):
        pass

    def __init__(self, name: str = "", operator=None, stype=None, optional: bool = False) -> None:
        self.name, self.operator, self.stype, self._optional = name, operator, stype, optional
        self._value = None
        self.meta = MetaDict()
        self._dirty_callbacks: list = []

    def __set_name__(self, owner, name: str) -> None:
        self.name = self.name or name

    def instance(self, operator) -> Slot:
        return type(self)(self.name, operator, self.stype, self._optional)

    def ready(self) -> bool:
        return bool(self.meta._ready)

    def disconnect(self) -> None:
        self._value = None
        self.meta = MetaDict()

    def notifyDirty(self, callback) -> None:
        self._dirty_callbacks.append(callback)

    def setDirty(self, key=slice(None)) -> None:
        roi = None if self.meta.shape is None else SubRegion(self, *_key_to_roi(key, self.meta.shape))
        for callback in list(self._dirty_callbacks):
            callback(self, roi)
        operator = self.operator
        if isinstance(self, InputSlot) and operator is not None and operator.configured():
            operator.propagateDirty(self, (), roi)


class InputSlot(Slot):
    def setValue(self, value, check_changed: bool = True) -> None:
        if check_changed and self._value is not None and value == self._value:
            return
        self._value = value
        self.meta.shape, self.meta.dtype = (1,), object
        self.meta._ready = value is not None
        operator = self.operator
        if operator is not None and not operator._cleaning_up:
            operator._setupOutputs()
            self.setDirty()

    @property
    def value(self):
        if self._value is None:
            raise Slot.SlotNotReadyError(f"input slot {self.name} has no value")
        return self._value


class OutputSlot(Slot):
    def __getitem__(self, key) -> Request:
        self._check_ready()
        return self(*_key_to_roi(key, self.meta.shape))

    def __call__(self, start, stop) -> Request:
        self._check_ready()
        return Request(functools.partial(_execute, self, SubRegion(self, start, stop)))

    def _check_ready(self) -> None:
        if not self.ready():
            raise Slot.SlotNotReadyError(f"Can't get data from slot {self.name} yet. It isn't ready.")


def _pieces(roi: SubRegion) -> list[tuple[list[int], list[int]]]:
    """The roi cut along its first axis longer than 1 into up to ``WORKERS`` pieces, if it is big."""
    start, stop = [int(a) for a in roi.start], [int(b) for b in roi.stop]
    shape = [b - a for a, b in zip(start, stop)]
    axes = [i for i, n in enumerate(shape) if n > 1]
    if int(np.prod(shape)) < SPLIT_THRESHOLD or not axes:
        return [(start, stop)]
    ax = axes[0]
    cuts = [int(c) for c in np.linspace(start[ax], stop[ax], min(shape[ax], WORKERS) + 1)]
    return [
        (start[:ax] + [a] + start[ax + 1 :], stop[:ax] + [b] + stop[ax + 1 :]) for a, b in zip(cuts, cuts[1:])
    ]


def _execute(slot: OutputSlot, roi: SubRegion, destination=None):
    """The workload of a slot request: allocate (or take the ``writeInto`` array), execute the pieces."""
    if destination is None:
        destination = np.ndarray(tuple(roi.stop - roi.start), dtype=slot.meta.dtype)
    elif np.dtype(destination.dtype) != np.dtype(slot.meta.dtype):
        raise AssertionError(f"Can't provide a destination array of the wrong dtype: {destination.dtype}")
    pieces = _pieces(roi)
    if len(pieces) == 1 or in_worker_thread():
        for piece in pieces:
            _execute_piece(slot, roi, piece, destination)
        return destination
    futures = [pool().submit(_execute_piece, slot, roi, piece, destination) for piece in pieces]
    wait_all(futures)
    for future in futures:
        if future.exception() is not None:
            raise future.exception()
    return destination


def _execute_piece(slot: OutputSlot, roi: SubRegion, piece, destination) -> None:
    start, stop = piece
    view = destination[tuple(slice(a - s, b - s) for a, b, s in zip(start, stop, roi.start))]
    result = slot.operator.call_execute(slot, (), SubRegion(slot, start, stop), view)
    if result is not None and result is not view:
        if not isinstance(result, np.ndarray) or result.shape != view.shape:
            raise ValueError(f"execute returned {type(result).__name__} {np.shape(result)}, not {view.shape}")
        view[...] = result


class _OperatorMeta(type):
    def __call__(cls, *args, **kwargs):
        try:
            op = super().__call__(*args, **kwargs)
        except Exception as exc:
            raise RuntimeError(f"Could not create instance of '{cls}'\nThe exception was:\n{exc}")  # noqa: B904
        op._initialized = True
        op._setupOutputs()
        return op


class Operator(metaclass=_OperatorMeta):
    name = "Operator"

    def __init__(self, parent: Operator | None = None, graph: Graph | None = None) -> None:
        if parent is None and graph is None:
            raise Exception(
                f"Operator.__init__() [self.name='{self.name}']: parent and graph can't be both None"
            )
        self.parent, self.graph = parent, graph if graph is not None else parent.graph
        self.children: list[Operator] = []
        if parent is not None:
            parent.children.append(self)
        self._initialized = self._cleaning_up = self._setting_up = False
        self._executing = 0
        self._condition = threading.Condition()
        self.inputs: dict[str, InputSlot] = {}
        self.outputs: dict[str, OutputSlot] = {}
        for klass in reversed(type(self).__mro__):
            for template in vars(klass).values():
                if isinstance(template, Slot):
                    slot = template.instance(self)
                    (self.inputs if isinstance(slot, InputSlot) else self.outputs)[slot.name] = slot
                    self.__dict__[slot.name] = slot

    def configured(self) -> bool:
        return self._initialized and all(s.ready() or s._optional for s in self.inputs.values())

    def _setupOutputs(self) -> None:
        if not self.configured():
            return
        with self._condition:
            while self._executing:
                self._condition.wait()
            self._setting_up = True
            self.setupOutputs()  # an exception leaves _setting_up set and the outputs as they were
            self._setting_up = False
            self._condition.notify_all()
        for slot in self.outputs.values():
            slot.meta._ready = True

    def call_execute(self, slot, subindex, roi, result):
        with self._condition:
            while self._setting_up:
                self._condition.wait()
            self._executing += 1
        try:
            return self.execute(slot, subindex, roi, result)
        finally:
            with self._condition:
                self._executing -= 1
                self._condition.notify_all()

    def propagateDirty(self, slot, subindex, roi) -> None:
        raise NotImplementedError(f".propagateDirty() of Operator {self.name} is not implemented !")

    def cleanUp(self) -> None:
        self._cleaning_up = True
        if self.parent is not None and self in self.parent.children:
            self.parent.children.remove(self)
        for slot in [*self.inputs.values(), *self.outputs.values()]:
            slot.disconnect()
        for child in list(self.children):
            child.cleanUp()
