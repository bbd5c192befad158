"""Test double of the parts of lazyflow that ``lazyflow_rbfs.operators`` and ``lazyflow_rbfs.ilastik`` use.

Installed only by ``tests.lazyflow_double``, never when the real lazyflow is used. Modelled on ilastik's
``lazyflow/`` sources (1.4 era): ``graph`` (operators, slots, metadata, rois), ``request`` (worker threads
and how failures reach a waiter), ``utility.jsonConfig``, ``utility.io_util.blockwiseFileset`` (the
factory) and ``operators.ioOperators.opInputDataReader`` (the reader chain ilastik opens inputs with).
"""

__double__ = True
