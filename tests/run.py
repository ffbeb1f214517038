"""The test command: lint, then the pytest suite. `./run.sh test` and CI call this.

Extra arguments go to pytest (e.g. `./run.sh test -k store -x`).
"""

from __future__ import annotations

import subprocess
import sys


def main(argv: list[str]) -> int:
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "."])
    if lint.returncode != 0:
        print("ruff found problems (see above); fix them or run `ruff check --fix .`")
        return lint.returncode
    return subprocess.run([sys.executable, "-m", "pytest", *argv]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
