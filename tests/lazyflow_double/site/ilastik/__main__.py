"""``ilastik.__main__.main()``: ilastik's entry point, modelling only a headless batch export.

Kept from ``ilastik/__main__.py``, ``ilastik/app.py`` and the data selection applet: ``main()`` takes no
arguments and parses ``sys.argv[1:]`` (unknown arguments go to the workflow) and returns ``None``; bad
arguments exit with status 2. ``--headless`` needs ``--project``, and a project file that does not exist
is a ``RuntimeError``; without ``--headless`` ilastik starts its GUI (the double exits with 2). Each
``--raw_data`` input is opened as ``FilesystemDatasetInfo`` does —
``OpInputDataReader(graph=Graph(), WorkingDirectory=cwd, FilePath=path)``, whose axis tags must contain
``x`` and ``y`` — read whole and written to ``--output_filename_format`` (``{nickname}`` is the input's
file name without extension) as dataset ``exported_data``. The project file is not read.
"""

from __future__ import annotations

import argparse
import os
import sys

import h5py


def main() -> None:
    parser = argparse.ArgumentParser(prog="ilastik")
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--project")
    parser.add_argument("--raw_data", nargs="+", default=[])
    parser.add_argument("--output_filename_format", default="{nickname}_exported.h5")
    args, _ = parser.parse_known_args(sys.argv[1:])
    if not args.headless:
        sys.stderr.write("ilastik double: the GUI is not modelled\n")
        sys.exit(2)
    if not args.project:
        parser.error("You have to supply at least --project when invoking ilastik in headless mode.")
    if not os.path.exists(args.project):
        raise RuntimeError("Project file '" + args.project + "' does not exist.")

    from lazyflow.graph import Graph
    from lazyflow.operators.ioOperators.opInputDataReader import OpInputDataReader

    for path in args.raw_data:
        reader = OpInputDataReader(graph=Graph(), WorkingDirectory=os.getcwd(), FilePath=path)
        try:
            if not {"x", "y"} <= {tag.key for tag in reader.Output.meta.axistags}:
                raise Exception("Data must always have at leaset the axes x and y for ilastik to work.")
            data = reader.Output[...].wait()
        finally:
            reader.cleanUp()
        nickname = os.path.splitext(os.path.basename(path.split(".h5/")[0]))[0]
        with h5py.File(args.output_filename_format.format(nickname=nickname), "w") as f:
            f.create_dataset("exported_data", data=data)


if __name__ == "__main__":
    main()
