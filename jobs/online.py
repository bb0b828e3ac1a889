"""`ray job submit` entrypoint for `glitchflow online`: same arguments, same library code.

ray job submit --working-dir . -- python jobs/online.py --config configs/science.yaml \
    --frames /dev/shm/llhoft/V1 --model models:/glitchflow-unet@production --out /data/online
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["online", *sys.argv[1:]]))
