"""Integrations with the ecosystem that uses the cache: lazyflow and ilastik.

* :mod:`~lazyflow_rbfs.integrations.lazyflow`: the operator ``OpRESTfulBlockwiseFilesetReader`` and the
  registration with lazyflow's own ``BlockwiseFilesetFactory`` (needs lazyflow and vigra).
* :mod:`~lazyflow_rbfs.integrations.ilastik`: the opt-in hook for ilastik's ``OpInputDataReader`` and
  the ``rbfs ilastik`` launcher (imports lazyflow only when installed or run).

Their public names are :mod:`lazyflow_rbfs.operators` and :mod:`lazyflow_rbfs.ilastik`, which re-export
them. Importing this package imports neither, and no other module of the package imports them.
"""
