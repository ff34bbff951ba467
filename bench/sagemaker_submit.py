"""SageMaker submission against moto: time from the call to the job being created, alone and for
50 jobs submitted together, and the AWS calls each job costs.

A moto server runs in this process on 127.0.0.1 (dummy credentials; nothing reaches AWS). Each
submission is the whole of ``batcat_nb.submit`` with ``backend="sagemaker"``: validation,
staging in S3, the MLflow run (SQLite), CreateProcessingJob. The jobs are not executed.
Aim (issue 4): no more AWS calls than a job needs, and no import of the ``sagemaker`` SDK.

    .venv/bin/python bench/sagemaker_submit.py [--jobs 50]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from workspace import parameters_notebook

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/batcat-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CallCounter:
    """Every AWS request a batcat client sends, by operation."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds = 0.0  # spent waiting for AWS (moto) answers
        self._lock = threading.Lock()

    def started(self, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def ended(self, context: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.seconds += time.perf_counter() - context.get("bench_started", time.perf_counter())

    def __call__(self, event_name: str, **_: Any) -> None:
        operation = event_name.split(".", 1)[1]  # before-send.<service>.<Operation>
        with self._lock:
            self.calls[operation] += 1

    def take(self) -> tuple[collections.Counter[str], float]:
        with self._lock:
            taken, self.calls = self.calls, collections.Counter()
            seconds, self.seconds = self.seconds, 0.0
        return taken, seconds


def setup(work: Path) -> tuple[Any, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        MLFLOW_SQLALCHEMYSTORE_POOL_SIZE="64",  # 50 submitting threads share one SQLite store
        MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW="16",
    )
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    ecr = boto3.client("ecr")
    ecr.create_repository(repositoryName="batcat-runner")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
    ecr.put_image(repositoryName="batcat-runner", imageManifest=json.dumps(manifest), imageTag="bench")
    return server, "123456789012.dkr.ecr.us-east-1.amazonaws.com/batcat-runner:bench"


def notebook(work: Path) -> Path:
    return parameters_notebook(work / "bench.ipynb", "alpha = 0.1", "print(alpha)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)
        server, image = setup(work)
        try:
            run(work, image, args.jobs)
        finally:
            server.stop()


def run(work: Path, image: str, jobs: int) -> None:
    import batcat_nb
    from batcat_nb.backends.sagemaker import aws

    counter = CallCounter()
    aws.reset()
    for region in (None, REGION):
        events = aws.session(region).events
        events.register("before-send", counter)
        events.register("before-call", counter.started)
        events.register("after-call", counter.ended)
    path = notebook(work)
    options = {"role": ROLE, "s3_prefix": "s3://bench/jobs", "image": image, "instance_type": "ml.t3.medium"}

    def submit(i: int) -> float:
        started = time.perf_counter()
        batcat_nb.submit(
            str(path),
            {"alpha": i / 10},
            backend="sagemaker",
            experiment="bench",
            progress=False,
            backend_options=options,
        )
        return time.perf_counter() - started

    # the first job pays for imports, the MLflow store's schema, the clients and the bucket check
    first = submit(0)
    first_calls = counter.take()
    one = [submit(i) for i in range(1, 6)]
    one_calls = counter.take()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        together = list(pool.map(submit, range(jobs)))
    wall = time.perf_counter() - started
    many_calls = counter.take()

    print(f"first job (cold: imports, MLflow store, clients, checks)  {first * 1000:7.0f} ms")
    print(f"  AWS calls: {dict(first_calls[0])}, {first_calls[1] * 1000:.0f} ms waiting for AWS")
    print(
        f"one job at a time (5 jobs, warm), per job           {statistics.median(one) * 1000:7.0f} ms median"
    )
    print(f"  AWS calls per job: {_per_job(*one_calls, 5)}")
    print(f"{jobs} jobs submitted together: all created in           {wall:7.2f} s")
    print(
        f"  per job: median {statistics.median(together) * 1000:.0f} ms, "
        f"max {max(together) * 1000:.0f} ms; {jobs / wall:.1f} jobs/s"
    )
    print(f"  AWS calls per job: {_per_job(*many_calls, jobs)}")
    print(f"sagemaker SDK imported: {'sagemaker' in sys.modules}")


def _per_job(calls: collections.Counter[str], seconds: float, jobs: int) -> str:
    total = sum(calls.values()) / jobs
    parts = ", ".join(f"{op} {n / jobs:g}" for op, n in sorted(calls.items()))
    return f"{total:g} ({parts}); {seconds / jobs * 1000:.0f} ms waiting for AWS"


if __name__ == "__main__":
    main()
