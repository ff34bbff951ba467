"""The runner image starts its worker as root and drops to its own user before any notebook runs.

SageMaker Processing creates the output channels and ``/opt/ml/output`` itself, owned by root
(aws/sagemaker-python-sdk#4764: a non-root image USER cannot write them), and runs the image's
USER. The image therefore runs as root with ``BATCAT_RUN_AS=uid:gid``: before reading its job, the
worker hands those folders to that user, then becomes it, so the notebook never runs as root. A
worker not started as root, or without ``BATCAT_RUN_AS`` (local runs), changes nothing.
"""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path

from .layout import JobLayout

log = logging.getLogger("batcat_nb.worker")

RUN_AS_ENV = "BATCAT_RUN_AS"


def drop_privileges(layout: JobLayout) -> None:
    """As root with ``$BATCAT_RUN_AS``: give the writable folders to that user and become it."""
    wanted = os.environ.get(RUN_AS_ENV)
    if not wanted or os.getuid() != 0:
        return
    uid, _, gid = wanted.partition(":")
    user, group = int(uid), int(gid or uid)
    outputs = layout.output("x").parent
    folders = [layout.message_file.parent, *(p for p in outputs.iterdir() if p.is_dir())]
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, user, group, follow_symlinks=False)
    except OSError as exc:  # a platform that refuses: run as root rather than not write at all
        log.warning("cannot hand %s to %s (%s): the job runs as root", folder, wanted, exc)
        return
    os.setgroups([])
    os.setgid(group)
    os.setuid(user)
    try:
        home = Path(pwd.getpwuid(user).pw_dir)
    except KeyError:
        home = Path("/tmp")
    os.environ["HOME"] = str(home if os.access(home, os.W_OK) else "/tmp")
    log.debug("running as %s", wanted)
