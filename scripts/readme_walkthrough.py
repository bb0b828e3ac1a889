"""Run every command of the README's bash blocks, verbatim and in order, after the demo.

    bash scripts/readme_walkthrough.sh [--log PATH] [--json PATH]

The first bash block (the two commands that install and run the demo and the tests) is
not run: the walkthrough starts where ``bash scripts/demo.sh`` left ``demo-run/``.
Optional parts written ``[--flag value]`` are left out. Lines of one block run in one
bash shell shared by all blocks (so a server started with ``&`` in one block answers the
``curl`` of the next, and ``kill %1`` stops it). Each command's exit status and wall
time are printed as a table and written as JSON; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands(readme: Path) -> list[str]:
    """Shell commands of the README's bash blocks after the first, continuations joined,
    comments and optional ``[...]`` parts dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S)[1:]
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            commands.append(re.sub(r"\s*\[[^\[\]]*\]", "", line))
    return commands


def walkthrough_script(commands: list[str], results: Path, start: int = 0) -> str:
    """One bash script running ``commands`` in order from index ``start`` (from the first:
    in a clean ``runs/``); each appends ``index rc seconds`` to ``results`` (``bg`` for a
    command sent to the background)."""
    lines = ["set -u", f"cd {shlex.quote(str(REPO))}"]
    if start == 0:
        lines.append("rm -rf runs pipeline-run")
    for i, cmd in enumerate(commands):
        if i < start:
            continue
        lines.append(f"echo; echo '### [{i}] '{shlex.quote(cmd)}")
        lines.append("t0=$(date +%s.%N)")
        lines.append(cmd)
        status = "bg" if cmd.endswith("&") else "$?"
        lines.append(f'echo "{i} {status} $(echo "$(date +%s.%N) - $t0" | bc)" >> {results}')
    lines.append("kill $(jobs -p) 2>/dev/null; wait")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="runs-walkthrough.log", help="all commands' output")
    parser.add_argument("--json", default=None, help="write the results table here")
    parser.add_argument("--timeout", type=float, default=5400, help="for the whole walk (s)")
    parser.add_argument(
        "--start",
        type=int,
        default=0,
        help="run from this command (index in the table) on, keeping runs/ (to re-check the "
        "tail of a walk whose earlier commands passed)",
    )
    args = parser.parse_args(argv)
    if not (REPO / "demo-run" / "train" / "mlflow.db").is_file():
        print("no demo-run/ here: run `bash scripts/demo.sh` first", file=sys.stderr)
        return 2
    commands = readme_commands(REPO / "README.md")
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.txt"
        script = Path(tmp) / "walkthrough.sh"
        script.write_text(walkthrough_script(commands, results, args.start))
        with open(args.log, "w") as log:
            try:
                subprocess.run(
                    ["bash", str(script)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=args.timeout,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired:
                print(f"the walkthrough ran past {args.timeout:.0f} s", file=sys.stderr)
        done = {}
        if results.exists():
            for row in results.read_text().split("\n"):
                if row.strip():
                    index, status, seconds = row.split()
                    done[int(index)] = (status, float(seconds))
    rows = []
    for i, cmd in enumerate(commands):
        if i < args.start:
            continue
        status, seconds = done.get(i, ("not run", float("nan")))
        rows.append({"command": cmd, "status": status, "seconds": round(seconds, 1)})
        print(f"{status:>7}  {seconds:7.1f} s  {cmd[:110]}")
    failed = [r for r in rows if r["status"] not in ("0", "bg")]
    print(f"{len(rows) - len(failed)}/{len(rows)} README commands ran (log: {args.log})")
    if args.start:
        print(f"(commands {args.start} on; the ones before were not run)")
    if args.json:
        Path(args.json).write_text(json.dumps({"commands": rows, "failed": len(failed)}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
