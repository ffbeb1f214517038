#!/usr/bin/env bash
# One entry point for a fresh machine.
#   ./run.sh          set up .venv, prepare the embedded default, open the dashboard
#   ./run.sh test     set up .venv, run the test suite (what CI runs)
#   ./run.sh demo     set up .venv, prepare the embedded default only (CLI)
# Extra arguments after `--` go to streamlit (e.g. ./run.sh -- --server.port 8600).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

setup() {
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
  fi
  # Re-install only when requirements.txt changed since the last successful install.
  local want have=""
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  [ -f .venv/.requirements.sha256 ] && have=$(cat .venv/.requirements.sha256)
  if [ "$want" != "$have" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements.txt
    echo "$want" > .venv/.requirements.sha256
  fi
}

cmd=${1:-dashboard}
[ $# -gt 0 ] && shift
setup
case "$cmd" in
  test)
    exec .venv/bin/python -m tests.run "$@"
    ;;
  demo)
    exec .venv/bin/python -m engine demo "$@"
    ;;
  dashboard|--)
    [ "${1:-}" = "--" ] && shift
    .venv/bin/python -m engine demo
    exec .venv/bin/python -m dashboard "$@"
    ;;
  *)
    echo "unknown command '$cmd': use ./run.sh, ./run.sh test or ./run.sh demo" >&2
    exit 2
    ;;
esac
