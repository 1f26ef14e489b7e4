"""The start-up row's child: `masked-shards run ARGS` in this process, printing when the first
records were processed.

    python benchmarks/first_record.py run --input F --output O --limit 100 ...   # prints one JSON line

`first_record_seconds` is the time from this process's start (as the OS recorded it, so the
interpreter's own start counts) to the end of the first batch of rows built, that is the first
records read, parsed, rendered, encoded and labelled; `seconds` is to the end of the run. The
job runs unchanged on Beam's in-process runner; only `RowBuilder.start` is wrapped to note when
the first batch it started is finished.
"""

from __future__ import annotations

import json
import sys
import time

import psutil

START = psutil.Process().create_time()


def main(argv: list[str]) -> None:
    from masked_shards import cli
    from masked_shards.build.rows import RowBuilder

    first: list[float] = []
    start = RowBuilder.start

    def noted(self, items):
        finish = start(self, items)

        def finished():
            batch = finish()
            if not first:
                first.append(time.time() - START)
            return batch

        return finished

    RowBuilder.start = noted
    status = cli.main(argv)
    if status:
        raise SystemExit(status)
    print(json.dumps({"first_record_seconds": first[0], "seconds": time.time() - START}))


if __name__ == "__main__":
    main(sys.argv[1:])
