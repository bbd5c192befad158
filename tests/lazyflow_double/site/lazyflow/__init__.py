"""Test double of the parts of lazyflow that ``lazyflow_rbfs.operators`` and ``lazyflow_rbfs.ilastik`` use.

It is installed on ``sys.modules`` only by the test fixture, only when the real lazyflow is not used.
Behaviour follows lazyflow's documented operator contract (see ``docs/LAZYFLOW.md``): ``setValue`` runs
``setupOutputs`` synchronously and propagates its exceptions, requests run ``execute`` on a pool of worker
threads (a big request is split into pieces executed concurrently), ``roi.start``/``roi.stop`` are integer
vectors, and ``execute`` gets a preallocated C-contiguous result array.
"""

__double__ = True
