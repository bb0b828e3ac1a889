"""`ray job submit` entrypoint for `glitchflow evaluate`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/evaluate.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
