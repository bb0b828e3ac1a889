#!/usr/bin/env bash
# Install (if needed) and run the whole pipeline on the detector twin, locally.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/glitchflow demo --workdir "${DEMO_DIR:-demo-run}" "$@"
