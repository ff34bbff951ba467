#!/usr/bin/env bash
# The wheel on every Python the project admits (requires-python) that this machine has: for each,
# a fresh venv gets the wheel and its dependencies, then `batcat run` executes a notebook in that
# venv's own kernel as a 2-value --grid sweep (two runs and their parent). Any failure fails the
# script.
#
#   scripts/smoke_versions.sh              # every admitted 3.x found (pyenv versions, then PATH)
#   SMOKE_PYTHONS="python3.10 /usr/bin/python3.12" scripts/smoke_versions.sh
#
# Quick on a second run: the dependencies are resolved once per Python and list of dependencies into
# a wheelhouse under $BATCAT_SMOKE_CACHE (default ~/.cache/batcat/smoke); each fresh venv then
# installs from it offline (--no-index): no index is asked, nothing is downloaded or built.
# The venv is made without pip and filled by the interpreter's own pip (--python, pip >= 22.3),
# without compiling every module: the runs compile (and cache) only what they import.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t batcat-smoke-XXXXXX)
trap 'rm -rf "$work"' EXIT
cache=${BATCAT_SMOKE_CACHE:-$HOME/.cache/batcat/smoke}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$cache/pip}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
export PYTHONDONTWRITEBYTECODE=         # the second command reuses what the first compiled
export BATCAT_AGENT=0                  # each command runs its job itself: no agent outlives the script
export JUPYTER_DATA_DIR="$work/jupyter" # no user-wide kernelspec can stand in for the venv's own

# Pythons: the minimum of requires-python (">=3.N") up to 3.20, first found of each.
minimum=$(sed -n 's/^requires-python *= *">=3\.\([0-9]*\)".*/\1/p' "$root/pyproject.toml")
[ -n "$minimum" ] || { echo "smoke: cannot read requires-python in pyproject.toml" >&2; exit 1; }
find_python() {  # $1 = minor version; prints an interpreter of 3.$1, or nothing
    local candidate
    for candidate in "$HOME"/.pyenv/versions/3."$1".*/bin/python3 "$(command -v "python3.$1" || true)"; do
        if [ -x "$candidate" ] && "$candidate" -c "import sys; assert sys.version_info[:2] == (3, $1)" 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
}
if [ -n "${SMOKE_PYTHONS:-}" ]; then
    read -r -a pythons <<<"$SMOKE_PYTHONS"
else
    pythons=()
    for minor in $(seq "$minimum" 20); do
        found=$(find_python "$minor")
        [ -n "$found" ] && pythons+=("$found")
    done
fi
[ "${#pythons[@]}" -gt 0 ] || { echo "smoke: no Python >= 3.$minimum found" >&2; exit 1; }

builder=${pythons[0]}
"$builder" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$root"
wheel=$(ls "$work"/dist/batcat_nb-*.whl)
# What the wheel needs (its Requires-Dist without extras) keys the wheelhouses, not pyproject.toml as
# a whole: a linter setting or a dev extra changes nothing a venv installs, and costs no new resolve.
needs=$("$builder" - "$wheel" <<'EOF' | sha256sum | cut -c1-12
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    [metadata] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    lines = wheel.read(metadata).decode().splitlines()
print(*sorted(line for line in lines if line.startswith("Requires-Dist:") and "extra ==" not in line), sep="\n")
EOF
)

cat >"$work/smoke.ipynb" <<'EOF'
{"cells": [
  {"cell_type": "code", "execution_count": null, "id": "p", "metadata": {"tags": ["parameters"]},
   "outputs": [], "source": ["x = 1\n", "prefix = ''"]},
  {"cell_type": "code", "execution_count": null, "id": "c", "metadata": {}, "outputs": [],
   "source": ["import sys\n", "assert sys.prefix == prefix, (sys.prefix, prefix)\n", "print(x * 2)"]}
 ],
 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
 "nbformat": 4, "nbformat_minor": 5}
EOF

for python in "${pythons[@]}"; do
    started=$SECONDS
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    venv="$work/venv-$version"
    "$python" -m venv --without-pip "$venv"
    wheelhouse="$cache/wheels-$version-$needs"
    if [ ! -d "$wheelhouse" ]; then  # first time for this Python and these dependencies
        rm -rf "$wheelhouse.partial"
        "$python" -m pip wheel --quiet --prefer-binary --wheel-dir "$wheelhouse.partial" "$wheel"
        rm -f "$wheelhouse.partial"/batcat_nb-*.whl
        mv "$wheelhouse.partial" "$wheelhouse"
    fi
    "$python" -m pip --python "$venv/bin/python" install --quiet --no-compile --no-index \
        --find-links "$wheelhouse" "$wheel"
    "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
    installed=$SECONDS
    # One command: a 2-value sweep is `batcat run` twice over, plus the sweep's own machinery.
    (cd "$work" && "$venv/bin/batcat" run smoke.ipynb --tracking-uri "sqlite:///$work/mlflow-$version.db" \
        --no-progress -p prefix "$venv" --output-dir "sweep-$version" --grid x=1,2)
    echo "smoke: Python $version ok in $((SECONDS - started)) s:" \
        "install $((installed - started)) s, runs $((SECONDS - installed)) s ($python)"
done
