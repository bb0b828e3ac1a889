"""`ray job submit` entrypoint for `glitchflow train`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/train.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
