"""`ray job submit` entrypoint for `glitchflow retrain`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/retrain.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["retrain", *sys.argv[1:]]))
