"""The manifest and the records file survive what happens to real jobs: a line cut short, a write
that fails half-way, a manifest written by another version of batcat_nb."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_notebook

import batcat_nb
from batcat_nb.manifest import MANIFEST_NAME, Manifest, ManifestVersionError


@pytest.mark.slow
def test_a_truncated_records_line_keeps_every_good_record(project, experiment, mlflow_client):
    nb = write_notebook(
        project / "nb.ipynb",
        None,
        "import os\nfrom batcat_nb import record\nrecord('loss', 1.0)",
        # a kernel killed mid-write leaves half a line behind
        "open(os.environ['BATCAT_RECORDS_FILE'], 'a').write('{\"kind\": \"metric\", \"na')",
        "open(os.environ['BATCAT_RECORDS_FILE'], 'a').write('\\n')\nrecord('loss', 0.5, step=1)",
    )
    result = batcat_nb.run(str(nb), experiment=experiment, progress=False)
    assert result.status == "FINISHED", result.reason
    history = mlflow_client.get_metric_history(result.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5)]
    assert Manifest.read(Path(result.output_notebook).parent).metrics["loss"] == [(1.0, 0), (0.5, 1)]


_WRITE_BIGGER_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from batcat_nb.manifest import Manifest
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
Manifest("job", status="FINISHED", reason="x" * 100000).write(Path(sys.argv[1]))
"""


def test_a_manifest_write_that_fails_half_way_leaves_the_previous_one_whole(tmp_path):
    Manifest("job", status="RUNNING").write(tmp_path)
    before = (tmp_path / MANIFEST_NAME).read_text()
    done = subprocess.run(
        [sys.executable, "-c", _WRITE_BIGGER_UNDER_A_FILE_SIZE_LIMIT, str(tmp_path), "50000"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "File too large" in done.stderr
    assert (tmp_path / MANIFEST_NAME).read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # no temporary file left


def test_a_manifest_from_a_newer_minor_version_is_read_and_its_new_fields_ignored(tmp_path):
    data = Manifest("job", status="FINISHED", metrics={"loss": [(0.5, 0)]}).to_dict()
    data.update(version="1.7", gpu_hours=3.5)
    data["error"] = {"cell_index": 2, "ename": "E", "evalue": "v", "traceback_digest": "abc"}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    manifest = Manifest.read(tmp_path)
    assert manifest.status == "FINISHED" and manifest.last_metrics() == {"loss": 0.5}
    assert str(manifest.error) == "cell 2: E: v"


def test_a_manifest_from_a_newer_major_version_is_refused_in_one_line(tmp_path):
    data = {**Manifest("job", status="FINISHED").to_dict(), "version": "2.0"}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestVersionError) as refused:
        Manifest.read(tmp_path)
    message = str(refused.value)
    assert "\n" not in message and "version 2.0" in message and "pip install -U batcat_nb" in message


def test_a_manifest_without_a_version_is_read_as_1_0(tmp_path):
    data = Manifest("job", status="FAILED", reason="r").to_dict()
    del data["version"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    assert Manifest.read(tmp_path).reason == "r"
