"""``ilastik.__main__.main()``: reads ``sys.argv`` like ilastik's entry point; only a headless export.

``--headless --raw_data=PATH [--raw_data=PATH ...] --output_filename_format=FORMAT`` opens every input
through ``OpInputDataReader`` (so the same reader chain decides how it is read), reads it whole and writes
it to ``FORMAT`` (``{nickname}`` is the input's file name without extension) as dataset
``exported_data``. ``--project`` is accepted and ignored. Without ``--headless`` it exits with status 2:
the GUI is not modelled. Bad arguments exit with status 2, as argparse does.
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
    parser.add_argument("--raw_data", action="append", default=[])
    parser.add_argument("--output_filename_format", default="{nickname}_exported.h5")
    args = parser.parse_args(sys.argv[1:])
    if not args.headless:
        sys.stderr.write("ilastik double: the GUI is not modelled\n")
        sys.exit(2)

    from lazyflow.graph import Graph
    from lazyflow.operators.ioOperators.opInputDataReader import OpInputDataReader

    for raw in args.raw_data:
        nickname = os.path.splitext(os.path.basename(raw.split(".h5/")[0]))[0]
        op = OpInputDataReader(graph=Graph())
        try:
            op.WorkingDirectory.setValue(os.getcwd())
            op.FilePath.setValue(raw)
            data = op.Output[...].wait()
        finally:
            op.cleanUp()
        with h5py.File(args.output_filename_format.format(nickname=nickname), "w") as f:
            f.create_dataset("exported_data", data=data)


if __name__ == "__main__":
    main()
