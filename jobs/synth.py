"""`ray job submit` entrypoint for `glitchflow synth`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/synth.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
