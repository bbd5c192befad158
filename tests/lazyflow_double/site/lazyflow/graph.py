"""``from lazyflow.graph import Graph, Operator, InputSlot, OutputSlot``."""

from __future__ import annotations

from lazyflow.operator import Operator
from lazyflow.slot import InputSlot, OutputSlot

__all__ = ["Graph", "Operator", "InputSlot", "OutputSlot"]


class Graph:
    """Owns nothing here; operators only need a graph object to belong to."""

    def __repr__(self) -> str:
        return f"<lazyflow double Graph at {id(self):#x}>"
