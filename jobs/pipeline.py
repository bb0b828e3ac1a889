"""`ray job submit` entrypoint for `glitchflow run`: a YAML pipeline of stages.

ray job submit --working-dir . -- python jobs/pipeline.py configs/pipeline.yaml --steps synth,scan
"""

import sys

from glitchflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
