"""`ray job submit` entrypoint for `glitchflow infer`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/infer.py --config configs/demo.yaml ...
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
