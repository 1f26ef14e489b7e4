"""`python run_pipeline.py ARGS` is `masked-shards run ARGS` (kept for users who run from a clone)."""

import sys

from masked_shards.cli import command_line

if __name__ == "__main__":
    sys.exit(command_line(["run", *sys.argv[1:]]))
