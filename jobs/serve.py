"""`ray job submit` entrypoint for `glitchflow serve`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/serve.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
