#!/usr/bin/env bash
# Download, on the host, the wheels that `pip install --no-index` will need inside an image.
#
#   scripts/make_wheelhouse.sh IMAGE OUT_DIR REQUIREMENTS_FILE
#
# `batcat build` does this by itself for each layer of the runner image when the build cannot
# reach a package index (or with --wheelhouse); this script is the same step by hand, e.g. to
# prepare a wheelhouse for a locked-down network. The wheels are resolved for the *image's*
# interpreter, not the host's (batcat-base:bookworm has Python 3.11.2 while a host Python may be
# 3.11.7, and some wheels declare Requires-Python >=3.11.5): one `docker run --network none` asks
# the image for its Python version, ABI and glibc, then `pip download --only-binary=:all:` runs
# for exactly that target (a package that ships only an sdist must be built into a wheel first).
# Downloads are cached under ~/.cache/batcat/wheelhouse and hard-linked into OUT_DIR.
#
# Environment: PYTHON (default: python3), an interpreter where batcat_nb is installed.
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 IMAGE OUT_DIR REQUIREMENTS_FILE" >&2; exit 2; }
exec "${PYTHON:-python3}" -c '
import logging, sys
from batcat_nb.backends.docker.image import make_wheelhouse
logging.basicConfig(level=logging.INFO, format="[make_wheelhouse] %(message)s")
wheels = make_wheelhouse(*sys.argv[1:])
print(f"[make_wheelhouse] {len(wheels)} wheels in {sys.argv[2]}", file=sys.stderr)
' "$@"
