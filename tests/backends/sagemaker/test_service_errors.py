"""AWS failing on its side (5xx, throttling after botocore's retries) is not the user's mistake:
``batcat`` exits 1 with a "try again" hint, not 2."""

from __future__ import annotations

from conftest import run_batcat


def test_aws_failing_on_its_side_exits_1_with_a_try_again_hint(faulty_sagemaker, tmp_path):
    faulty_sagemaker.fail("ListProcessingJobs", 99, error=("ServiceUnavailable", 503))

    done = run_batcat("list", "--region", "us-east-1", cwd=tmp_path)

    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith("batcat: error: listing processing jobs")
    assert "ServiceUnavailable" in lines[0] and "try again" in lines[0]
    assert faulty_sagemaker.failed == ["ListProcessingJobs"] * 2  # botocore's attempts, no more
