"""``batcat rerun`` on Docker: which image the rerun runs in (the backend's ``rerun_image`` hook).

- The image the run recorded, by digest, while it exists.
- When it is gone: the runner image rebuilt from the inputs the run recorded (its tag
  ``batcat.image.inputs``: base image, requirements file, image definition, MLflow, batcat_nb's
  source), but only when they hash as they did; else one line names what changed and the fix.
- With ``--from-environment``: a runner image whose requirements are the distributions the run's
  ``environment.txt`` pins, for a base image with the same Python. It is the usual
  content-addressed image, so a second rerun finds it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ...environment import ENVIRONMENT_NAME, Recorded
from ...errors import UsageError
from ...tracking import TAG_IMAGE_DIGEST
from ..base import RerunImage
from . import image as images

log = logging.getLogger("batcat_nb")

TAG_IMAGE_REBUILT = "batcat.image_rebuilt"  # "true": the recorded image was gone, rebuilt as it was
TAG_FROM_ENVIRONMENT = "batcat.image.from_environment"  # the run whose environment.txt built it
# Distributions of a recorded environment the runner image provides itself.
_PROVIDED = {
    "batcat-nb": "installed from this batcat_nb's source",
    "pip": "the image's own",
    "setuptools": "the image's own",
    "wheel": "the image's own",
}
_FIX = (
    "pass --image IMAGE to run it in another image, or --from-environment to build one from its environment"
)


def rerun_image(client: Any, request: RerunImage) -> tuple[dict[str, Any], dict[str, str]]:
    """The backend options (and the new run's tags) that run ``request``'s rerun in its image."""
    if request.environment is not None:
        return _from_environment(client, request, request.environment)
    digest = request.tags.get(TAG_IMAGE_DIGEST)
    if not digest:
        return request.options, {}
    try:
        images.existing_image(client, digest)
    except UsageError:
        return _rebuilt(client, request, digest)
    return {**request.options, "image": digest}, {}


def _rebuilt(client: Any, request: RerunImage, digest: str) -> tuple[dict[str, Any], dict[str, str]]:
    gone = f"run {request.run_id} ran in image {digest[:19]}, which no longer exists"
    recorded = _recorded_inputs(request.tags)
    if recorded is None:
        raise UsageError(f"{gone}, and it recorded no image inputs to rebuild it from; {_FIX}")
    changed = _changed(client, recorded)
    if changed:
        raise UsageError(
            f"{gone} and cannot be rebuilt as it was: {', '.join(changed)} changed since; {_FIX}"
        )
    requirements = recorded["requirements_file"]
    if not requirements:  # none then: none now either, whatever lies beside the notebook today
        requirements = str(request.scratch / "no-requirements.txt")
        Path(requirements).write_text("")
    log.info(
        "%s; its inputs are unchanged (base image %s, requirements %s, this batcat_nb and MLflow): "
        "rebuilding it",
        gone,
        recorded["base_image"],
        recorded["requirements_file"] or "none",
    )
    options = {k: v for k, v in request.options.items() if k != "image"}
    options.update(base_image=recorded["base_image"], requirements=requirements)
    return options, {TAG_IMAGE_REBUILT: "true"}


def _recorded_inputs(tags: dict[str, str]) -> dict[str, str] | None:
    """The run's ``batcat.image.inputs``, when it has that tag in the form ``ImageInputs.record`` wrote."""
    try:
        recorded = json.loads(tags.get(images.TAG_IMAGE_INPUTS) or "null")
    except ValueError:
        return None
    if not isinstance(recorded, dict) or not all(
        isinstance(recorded.get(key), str) for key in ("base_image", "requirements_file")
    ):
        return None
    return recorded


def _changed(client: Any, recorded: dict[str, str]) -> list[str]:
    """What of the recorded image inputs is not the same today, as the user would name it."""
    base, requirements = recorded["base_image"], recorded["requirements_file"] or None
    try:
        images.resolve_base_image(client, base)
    except UsageError:
        return [f"base image {base} (no longer here)"]
    if requirements and not Path(requirements).is_file():
        return [f"requirements {requirements} (the file is gone)"]
    now = images.image_inputs(client, base, requirements).parts()
    labels = {
        "base image": f"base image {base}",
        "requirements": f"requirements {requirements}",
        "MLflow": f"MLflow ({recorded.get('MLflow') or 'none'} then, {now['MLflow'] or 'none'} now)",
        "batcat_nb": "batcat_nb (its source)",
        "image definition": "the runner image definition (Dockerfile)",
    }
    return [labels.get(name, name) for name, part in now.items() if recorded.get(name) != part]


def _from_environment(
    client: Any, request: RerunImage, environment: Recorded
) -> tuple[dict[str, Any], dict[str, str]]:
    """Options building the runner image from the pins of the run's ``environment.txt``."""
    options = {k: v for k, v in request.options.items() if k not in ("image", "requirements")}
    base, base_id = images.resolve_base_image(client, options.get("base_image"))
    python = images.python_target(client, base_id)[0]
    if python.rsplit(".", 1)[0] != environment.python:
        raise UsageError(
            f"run {request.run_id} ran Python {environment.python}, and base image {base} has Python "
            f"{python}; pass --base-image IMAGE with Python {environment.python}"
        )
    provided = {**_PROVIDED}
    mlflow = images.mlflow_version()
    if environment.pins.get("mlflow-skinny") not in (None, mlflow):  # the store needs this MLflow
        provided["mlflow-skinny"] = f"the image pins this MLflow, {mlflow}"
    pins = {name: version for name, version in environment.pins.items() if name not in provided}
    elsewhere = {pin.partition("==")[0]: pin for pin in environment.not_from_index}
    left_out = [
        f"{name} ({why})" for name, why in provided.items() if name in {*environment.pins, *elsewhere}
    ]
    left_out += [f"{pin} (not from an index)" for name, pin in elsewhere.items() if name not in provided]
    requirements = request.scratch / "environment-requirements.txt"
    requirements.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    log.info(
        "building the image from the %d pins of %s of run %s; left out: %s",
        len(pins),
        ENVIRONMENT_NAME,
        request.run_id,
        "; ".join(left_out) or "nothing",
    )
    options.update(base_image=base, requirements=str(requirements))
    return options, {TAG_FROM_ENVIRONMENT: request.run_id}
