"""Job names: unique across a sweep of 10,000 combinations, readable, valid on SageMaker."""

from __future__ import annotations

import re

import pytest
from conftest import write_notebook

from batcat_nb import api
from batcat_nb.errors import UsageError
from batcat_nb.spec import RunRequest
from batcat_nb.sweeps import SweepRequest, _Sweep

SAGEMAKER_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


@pytest.mark.slow
def test_a_sweep_of_10000_combinations_gets_10000_unique_valid_names(project):
    stem = "a notebook with a long name, über-long: more than sixty-three characters in all"
    nb = write_notebook(project / f"{stem}.ipynb", "alpha = 0.1\nseed = 0")
    grid = [{"alpha": a / 100, "seed": s} for a in range(100) for s in range(100)]
    sweep = _Sweep(SweepRequest(RunRequest(str(nb), backend="local"), grid))  # resolved, not run
    names = [spec.job_name for spec in sweep.specs]
    assert len(set(names)) == 10000
    assert len({spec.output_dir for spec in sweep.specs}) == 10000  # no two share a folder
    assert all(SAGEMAKER_NAME.fullmatch(name) for name in names)
    # readable: the notebook, the time, the sweep's token, the combination's index
    assert re.fullmatch(r"a-notebook-with-a-long-name-ber-long-\d{8}-\d{6}-[0-9a-f]{4}-00001", names[0])
    assert names[-1].endswith("-10000") and names[-1][:-5] == names[0][:-5]


def test_two_sweeps_of_the_same_notebook_in_the_same_second_never_share_a_name(project):
    nb = write_notebook(project / "nb.ipynb", "alpha = 0.1")
    grid = [{"alpha": a} for a in range(200)]
    first, second = (_Sweep(SweepRequest(RunRequest(str(nb)), grid)) for _ in range(2))
    assert not {s.job_name for s in first.specs} & {s.job_name for s in second.specs}


def test_single_runs_started_together_get_distinct_names(project):
    nb = write_notebook(project / "nb.ipynb", "alpha = 0.1")
    names = {api.resolve_spec(RunRequest(str(nb))).job_name for _ in range(1000)}
    assert len(names) == 1000


def test_a_job_name_sagemaker_would_refuse_is_refused_in_one_line(project):
    nb = write_notebook(project / "nb.ipynb", "alpha = 0.1")
    with pytest.raises(UsageError, match="job name 'bad_name!': use 1 to 63 letters"):
        api.resolve_spec(RunRequest(str(nb), job_name="bad_name!"))
