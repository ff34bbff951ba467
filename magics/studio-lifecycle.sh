#!/bin/bash
# SageMaker Studio lifecycle configuration: install batcat_nb and load its magics in every kernel.
#
# Attach it to a JupyterLab space (or a Studio Classic KernelGateway app), e.g.:
#   aws sagemaker create-studio-lifecycle-config \
#     --studio-lifecycle-config-name batcat-magics \
#     --studio-lifecycle-config-app-type JupyterLab \
#     --studio-lifecycle-config-content "$(base64 -w0 magics/studio-lifecycle.sh)"
# then pick it for the space (or make it the domain's default). It runs at each start of the
# space, as the space's user: the pip install goes into the environment the kernels use, the
# startup file into that user's IPython profile.
#
# Environment (optional):
#   BATCAT_PACKAGE   what pip installs (default "batcat_nb[aws]"; a wheel path or an S3-synced
#                    wheelhouse works too, e.g. "/home/sagemaker-user/wheels/batcat_nb-0.1.0-py3-none-any.whl")
#   BATCAT_PIP       the pip command (default: "python3 -m pip")
#   IPYTHONDIR       IPython's directory (default ~/.ipython)
set -euo pipefail

PACKAGE=${BATCAT_PACKAGE:-batcat_nb[aws]}
read -r -a PIP <<< "${BATCAT_PIP:-python3 -m pip}"
STARTUP_DIR=${IPYTHONDIR:-$HOME/.ipython}/profile_default/startup

echo "[batcat lifecycle] installing $PACKAGE"
"${PIP[@]}" install --quiet --upgrade "$PACKAGE"

mkdir -p "$STARTUP_DIR"
# The same text as magics/00-batcat.py (a test keeps the two identical): a lifecycle script
# travels alone, so the startup file is written from here rather than copied.
cat > "$STARTUP_DIR/00-batcat.py" <<'STARTUP'
"""IPython startup file: load batcat_nb's magics (%batcat_run and friends) in every session.

Copy it into ~/.ipython/profile_default/startup/ (studio-lifecycle.sh does so on SageMaker
Studio). Where batcat_nb is not installed it stays silent; anything else is one line, never an
error that stops the kernel from starting.
"""

try:
    import batcat_nb  # noqa: F401
except ImportError:
    pass
else:
    try:
        get_ipython().extension_manager.load_extension("batcat_nb")  # type: ignore[name-defined]  # noqa: F821
    except Exception as exc:  # a broken install must not break the kernel
        print(f"batcat_nb magics not loaded: {exc}")
STARTUP
echo "[batcat lifecycle] magics enabled: $STARTUP_DIR/00-batcat.py"
