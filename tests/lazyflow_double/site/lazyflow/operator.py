"""The Operator base class.

Modelled from lazyflow's contract: slots are class attributes, copied per instance; construction needs a
``graph`` or a ``parent``; after ``__init__`` finishes, default input values are set and ``setupOutputs``
runs once every non-optional input is ready; ``setupOutputs`` waits until no ``execute`` is running and
``execute`` waits while ``setupOutputs`` runs; ``cleanUp`` disconnects the operator and cleans up its
children.

As in lazyflow, an exception raised by ``setupOutputs`` propagates, the operator stays flagged as "setting
up" (so a later ``execute`` blocks until a successful ``setupOutputs``), and the outputs keep the ready
state they had.
"""

from __future__ import annotations

import threading

from lazyflow.slot import InputSlot, OutputSlot, Slot


class _OperatorMeta(type):
    def __call__(cls, *args, **kwargs):
        instance = super().__call__(*args, **kwargs)
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
        self._initialized = True
        for slot in self.inputs.values():
            if slot._value is None and slot.upstream_slot is None and slot._defaultValue is not None:
                slot.setValue(slot._defaultValue)
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
            self.setupOutputs()  # an exception leaves _settingUp set, as in lazyflow
            self._setup_count += 1
            self._settingUp = False
            self._condition.notify_all()
        for slot in self.outputs.values():
            if slot.upstream_slot is None:
                slot.meta._ready = True

    def setupOutputs(self) -> None:
        for slot in self.outputs.values():
            if slot.upstream_slot is None:
                raise AssertionError(
                    f"Output slot '{slot.name}' of operator '{self.name}' has no upstream_slot, "
                    "so you must override setupOutputs()"
                )

    def call_execute(self, slot, subindex, roi, result):
        with self._condition:
            while self._settingUp:
                self._condition.wait()
            self._executionCount += 1
        try:
            return self.execute(slot, subindex, roi, result)
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
                p for p in slot.downstream_slots if p.operator is not None and not p.operator._cleaningUp
            ]
            if partners:
                raise RuntimeError(
                    f"Cannot clean up this operator ({self.name}): Slot '{slot.name}' is still providing "
                    f"data to downstream operators: {[p.operator.name + '.' + p.name for p in partners]}"
                )
        self._parent = None
        for child in list(self._children):
            child.cleanUp()
