"""Test double of the parts of lazyflow that ``lazyflow_rbfs`` uses; installed only by
``tests.lazyflow_double.fixtures``. Each module's docstring says which lazyflow facts it keeps."""

__double__ = True
