"""`ray job submit` entrypoint for `glitchflow preprocess`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/preprocess.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
