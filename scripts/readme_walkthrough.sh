#!/usr/bin/env bash
# Run every command of the README verbatim, in order, after `bash scripts/demo.sh`
# (reads demo-run/, writes runs/ and pipeline-run/); prints each command's exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/readme_walkthrough.py "$@"
