#!/usr/bin/env bash
# Checks every file of docs/vectors/ with the independent Python checker (generate.py --check).
#
# The pinned packages of requirements.txt are installed once into a venv under
# ${AGENTMESH_CI_CACHE:-~/.cache/agentmesh-ci}/vectors-venv, made again when requirements.txt
# changes. When they cannot be installed (no python3, PyPI unreachable) the check is skipped with
# a warning, except under CI=true, where that fails the run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${AGENTMESH_CI_CACHE:-$HOME/.cache/agentmesh-ci}
venv=$cache/vectors-venv
stamp=$venv/.requirements

unavailable() {
  if [[ ${CI:-} == true ]]; then
    echo "FAIL test vectors: $* (CI=true requires the vector check to run)" >&2
    exit 1
  fi
  echo "SKIPPED test vectors: $*" >&2
  exit 0
}

command -v python3 >/dev/null 2>&1 || unavailable "python3 is not installed"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv" || unavailable "python3 -m venv $venv failed"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" \
    || unavailable "pip could not install $here/requirements.txt into $venv: is PyPI reachable?"
  cp "$here/requirements.txt" "$stamp"
fi

"$venv/bin/python3" "$here/generate.py" --check
