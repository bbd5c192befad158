"""The Operator base class, modelled on ``lazyflow/operator.py``.

* Slots are class attributes, copied per instance; construction needs a ``graph`` or a ``parent``
  (``Operator.__init__(self, parent=None, graph=None)``: a positional argument is the *parent*).
* The metaclass calls ``__init__`` inside ``try``: any exception raised by an ``__init__`` reaches the
  caller as a ``RuntimeError`` ("Could not create instance of ..."), not as itself. ``_after_init`` runs
  after that ``try``: it sets default input values and runs ``setupOutputs`` once every non-optional
  input is ready, and its exceptions propagate unchanged.
* ``_setupOutputs`` waits until no ``execute`` is running and ``execute`` waits while ``setupOutputs``
  runs. An exception raised by ``setupOutputs`` propagates, **leaves the operator flagged as "setting
  up"** (so a later ``execute`` blocks until a successful ``setupOutputs``) and leaves the outputs as
  they were: an output that was ready keeps its old metadata and stays ready.
* After a successful ``setupOutputs`` every output without an upstream becomes ready, unless its
  ``meta.NOTREADY`` is set (then it is disconnected, i.e. made unready); the old and new metadata are
  compared with ``!=`` (which raises for numpy arrays in ``meta``).
* ``cleanUp`` disconnects the operator and its children, refuses (``RuntimeError``) while an output still
  feeds an operator that is not ``externally_managed``, then cleans up the children.
"""

from __future__ import annotations

import threading

from lazyflow.slot import InputSlot, OutputSlot, Slot


class _OperatorMeta(type):
    def __call__(cls, *args, **kwargs):
        try:
            instance = super().__call__(*args, **kwargs)
        except Exception as exc:
            raise RuntimeError(
                f"Could not create instance of '{cls}'\nargs   = {args}\nkwargs = {kwargs}\n"
                f"The exception was:\n{exc}"
            ) from None
        instance._after_init()
        return instance


class Operator(metaclass=_OperatorMeta):
    name = "Operator"
    category = "General"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, parent: Operator | None = None, graph=None) -> None:
        if not (parent is None or isinstance(parent, Operator)):
            raise Exception(f"parent of operator name='{self.name}' must be an operator, not {parent!r}")
        if parent is None and graph is None:
            raise Exception("Operator.__init__(): parent and graph can't both be None")
        if parent is not None and graph is not None and graph is not parent.graph:
            raise Exception("Operator.__init__(): the graph differs from the parent's graph")
        self._parent = parent
        self.graph = parent.graph if parent is not None else graph
        self._children: dict[Operator, None] = {}
        if parent is not None:
            parent._children[self] = None
        self._condition = threading.Condition()
        self._settingUp = False
        self._executionCount = 0
        self._cleaningUp = False
        self._initialized = False
        self._setup_count = 0
        self.externally_managed = False
        templates: dict[str, Slot] = {}
        for klass in reversed(type(self).__mro__):
            for attr in vars(klass).values():
                if isinstance(attr, Slot):
                    templates[attr.name] = attr
        self.inputs: dict[str, InputSlot] = {}
        self.outputs: dict[str, OutputSlot] = {}
        for template in sorted(templates.values(), key=lambda s: s._order):
            slot = template._instantiate(self)
            (self.inputs if isinstance(slot, InputSlot) else self.outputs)[slot.name] = slot
            object.__setattr__(self, slot.name, slot)

    def __setattr__(self, name: str, value) -> None:
        slots = self.__dict__.get("inputs", {}).keys() | self.__dict__.get("outputs", {}).keys()
        if name in slots and not isinstance(value, Slot):
            raise AttributeError(f"operator {self.name}: can't overwrite slot {name} with {value!r}")
        object.__setattr__(self, name, value)

    def _after_init(self) -> None:
        for slot in self.inputs.values():
            if slot._value is None and slot.upstream_slot is None and slot._defaultValue is not None:
                slot.setValue(slot._defaultValue)
        self._initialized = True
        self._setupOutputs()

    @property
    def parent(self) -> Operator | None:
        return self._parent

    @property
    def children(self) -> list[Operator]:
        return list(self._children)

    def configured(self) -> bool:
        return self._initialized and all(s.ready() or s._optional for s in self.inputs.values())

    def _setupOutputs(self) -> None:
        if not self.configured():
            return
        with self._condition:
            while self._executionCount > 0:
                self._condition.wait()
            self._settingUp = True
            old_metadata = {slot: slot.meta.copy() for slot in self.outputs.values()}
            self.setupOutputs()  # an exception leaves _settingUp set and the outputs as they were
            self._setup_count += 1
            self._settingUp = False
            self._condition.notify_all()
        try:
            for slot in self.outputs.values():
                if slot.upstream_slot is None:
                    if slot.meta.NOTREADY:
                        slot.disconnect()
                    else:
                        slot.meta._ready = True
            for slot in self.outputs.values():
                _ = old_metadata[slot] != slot.meta  # lazyflow compares to decide whether to notify
        except BaseException:
            for slot in self.outputs.values():
                if slot.upstream_slot is None:
                    slot.disconnect()
            raise

    def setupOutputs(self) -> None:
        for slot in self.outputs.values():
            if slot.upstream_slot is None:
                raise AssertionError(
                    f"Output slot '{slot.name}' of operator '{self.name}' has no upstream_slot, "
                    "so you must override setupOutputs()"
                )

    def call_execute(self, slot, subindex, roi, result, **kwargs):
        with self._condition:
            while self._settingUp:
                self._condition.wait()
            self._executionCount += 1
        try:
            return self.execute(slot, subindex, roi, result, **kwargs)
        finally:
            with self._condition:
                self._executionCount -= 1
                self._condition.notify_all()

    def execute(self, slot, subindex, roi, result):
        raise NotImplementedError(f"Operator {self.name} does not implement execute()")

    def propagateDirty(self, slot, subindex, roi):
        raise NotImplementedError(f".propagateDirty() of Operator {self.name} is not implemented !")

    def _initCleanup(self) -> None:
        self._cleaningUp = True
        for child in list(self._children):
            child._initCleanup()

    def _disconnect(self) -> None:
        for slot in list(self.inputs.values()) + list(self.outputs.values()):
            slot.disconnect()
        for child in list(self._children):
            child._disconnect()

    def cleanUp(self) -> None:
        if not self._cleaningUp:
            self._initCleanup()
        if self._parent is not None:
            self._parent._children.pop(self, None)
        self._disconnect()
        for slot in list(self.inputs.values()) + list(self.outputs.values()):
            partners = [
                p
                for p in slot.downstream_slots
                if p.operator is not None and not p.operator.externally_managed
            ]
            if partners:
                raise RuntimeError(
                    f"Cannot clean up this operator ({self.name}): Slot '{slot.name}' is still providing "
                    f"data to downstream operators: {[p.operator.name + '.' + p.name for p in partners]}"
                )
        self._parent = None
        for child in list(self._children):
            child.cleanUp()
