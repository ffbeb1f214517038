"""The test command: lint, the layers contract, then the pytest suite. `./run.sh test` and CI
call this.

Extra arguments go to pytest (e.g. `./run.sh test -k store -x`).
"""

from __future__ import annotations

import subprocess
import sys

# import-linter's command line, run by this interpreter (the contracts are in pyproject.toml)
LINT_IMPORTS = [sys.executable, "-c",
                "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def main(argv: list[str]) -> int:
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "."])
    if lint.returncode != 0:
        print("ruff found problems (see above); fix them or run `ruff check --fix .`")
        return lint.returncode
    layers = subprocess.run([*LINT_IMPORTS, "--no-cache", "--no-logo"])
    if layers.returncode != 0:
        print("an import crosses the engine's layers the wrong way (see above and docs/architecture.md)")
        return layers.returncode
    return subprocess.run([sys.executable, "-m", "pytest", *argv]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
