"""Test double of the parts of lazyflow that ``lazyflow_rbfs.operators`` and ``lazyflow_rbfs.ilastik`` use.

It is installed on ``sys.modules`` only by the test fixture, only when the real lazyflow is not used. Each
module models the real module of the same name (ilastik 1.4 era, read from ilastik's ``lazyflow/`` sources);
its docstring says what and where it simplifies. The facts most easily assumed wrong:

* ``execute`` gets ``roi.start``/``roi.stop`` as ``TinyVector`` (a ``list`` subclass), with negative and
  out-of-range keys passed through unchanged (``lazyflow.roi``);
* its ``result`` is freshly allocated (C order) or the caller's ``writeInto`` array as it is, possibly a
  strided view (``lazyflow.slot``);
* ``meta`` is a ``defaultdict`` that compares values with ``!=`` and insists on a tuple ``shape``
  (``lazyflow.metaDict``), and ``meta.dtype`` must be a numpy scalar type (``OpInputDataReader`` calls it);
* a failing ``setupOutputs`` leaves the operator "setting up" and its outputs as they were
  (``lazyflow.operator``); exceptions from an operator's ``__init__`` arrive as ``RuntimeError``;
* a foreign-thread ``wait()`` re-raises the original exception object, a wait inside a request on an
  already-failed request ``type(exc)(exc)`` (``lazyflow.request``).

Concurrency: requests run on a pool of worker threads, and a big request is split into pieces executed
concurrently (real lazyflow calls ``execute`` once per request; the split models a blockwise cache or an
exporter downstream).
"""

__double__ = True
