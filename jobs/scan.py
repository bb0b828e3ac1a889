"""`ray job submit` entrypoint for `glitchflow scan`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/scan.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["scan", *sys.argv[1:]]))
