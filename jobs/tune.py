"""`ray job submit` entrypoint for `glitchflow tune`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/tune.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
