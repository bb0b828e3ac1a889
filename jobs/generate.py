"""`ray job submit` entrypoint for `glitchflow generate`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/generate.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
