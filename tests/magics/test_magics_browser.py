"""End to end in a real browser: JupyterLab on 127.0.0.1, driven by headless Chromium.

Debian's ``chromium`` (scripts/provision_browser.sh), driven by Playwright with that system
browser: nothing downloads a browser. The screenshot is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, free_port, require, wait_until_up, write_notebook

from batcat_nb.magics.current_notebook import notebook_from_servers

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("BATCAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-gpu",
]  # fmt: skip
ARTIFACTS = REPO / "test-artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
FINISHED_OR_FAILED = """() => document.querySelector('.batcat-result') ||
    [...document.querySelectorAll('.jp-OutputArea-output')].some(o => /Traceback|Error:/.test(o.innerText))"""


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    runtime_dir: Path

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Iterator[Lab]:
    """``jupyter lab`` on 127.0.0.1 with a random token, its state in temporary directories."""
    require(importlib.util.find_spec("jupyterlab") is not None, "JupyterLab (the dev extra)")
    root, home = tmp_path_factory.mktemp("lab-root"), tmp_path_factory.mktemp("lab-home")
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no news or update checks: nothing to ask beyond loopback
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCAT_", "JPY_"))}
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
    )
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    log = home / "lab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/api", process, log)
        yield Lab(url, token, root, home / "runtime")
        process.terminate()
        process.wait(30)


def _loopback_only(route: Any) -> None:
    """The page may talk to the lab server only; anything else is refused."""
    host = urllib.parse.urlsplit(route.request.url).hostname or ""
    if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
        route.continue_()
    else:
        route.abort()


def test_a_batcat_run_cell_renders_its_summary_in_jupyterlab(jupyterlab, experiment, runs_of, tmp_path):
    require(Path(CHROMIUM).is_file(), f"Chromium at {CHROMIUM} (scripts/provision_browser.sh)")
    require(importlib.util.find_spec("playwright") is not None, "Playwright (the dev extra)")
    from playwright.sync_api import sync_playwright

    notebook = write_notebook(
        jupyterlab.root / "browser.ipynb",
        "n = 2  # how many",
        "%load_ext batcat_nb",
        "%batcat_params",
        f"%batcat_run -p n=3 -e {experiment}",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "magics-browser-failure.png").unlink(missing_ok=True)  # only a failure of this run
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        context.route("**/*", _loopback_only)
        page = context.new_page()
        try:
            page.goto(f"{jupyterlab.url}/lab/tree/{notebook.name}?token={jupyterlab.token}")
            page.wait_for_function(  # the notebook is open and its kernel is ready
                "() => document.querySelector('.jp-StatusBar-Widget')?.innerText.includes('| Idle')",
                timeout=120_000,
            )
            page.locator(".jp-Cell .jp-InputArea-editor").first.click()
            for _ in range(4):
                page.keyboard.press("Shift+Enter")
            page.wait_for_function(FINISHED_OR_FAILED, timeout=240_000)
            summary = page.locator(".batcat-result")
            assert summary.count() == 1, page.locator(".jp-OutputArea").last.inner_text()
            summary.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "magics-browser-summary.png"))
            text = summary.inner_text()
            params = page.locator(".batcat-params").inner_text()
            ran = page.get_by_text(f"batcat: running this notebook, {notebook}, as last saved")
            assert ran.count() == 1
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "magics-browser-failure.png"))
            raise
        finally:
            context.close()

    assert text.startswith("FINISHED browser-") and "mlflow run" in text
    assert "how many" in params  # %batcat_params read this notebook, found through JupyterLab
    (run,) = runs_of(experiment)  # the notebook ran itself once; inside the job nothing was submitted
    assert run.info.status == "FINISHED" and run.data.params["n"] == "3"


def test_a_notebook_renamed_since_its_kernel_started_is_found_by_asking_the_server(jupyterlab):
    notebook = write_notebook(jupyterlab.root / "before.ipynb", None, "1")
    session = jupyterlab.api(
        "POST", "sessions", {"path": notebook.name, "type": "notebook", "kernel": {"name": "python3"}}
    )
    try:
        kernel_id = session["kernel"]["id"]
        # renamed as JupyterLab renames: the file through the contents API, then the session
        jupyterlab.api("PATCH", f"contents/{notebook.name}", {"path": "after.ipynb"})
        jupyterlab.api("PATCH", f"sessions/{session['id']}", {"path": "after.ipynb", "name": "after.ipynb"})
        assert not notebook.exists()  # the kernel's JPY_SESSION_NAME now names nothing
        found = notebook_from_servers(kernel_id, runtime_dir=jupyterlab.runtime_dir)
        assert found == (jupyterlab.root / "after.ipynb").resolve()
        assert notebook_from_servers("not-a-kernel-here", runtime_dir=jupyterlab.runtime_dir) is None
    finally:
        jupyterlab.api("DELETE", f"sessions/{session['id']}")
