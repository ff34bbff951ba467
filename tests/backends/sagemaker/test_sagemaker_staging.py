"""What a SageMaker job stages in S3 before it starts: only what should travel, encrypted as asked.

``--include DIR`` ships what git would commit (``.gitignore``, ``.batcatignore``) and never
``.env``, ``.git`` or key files unless each is named on its own; ``--kms-key`` covers the
notebook, the parameters and the includes, not only the outputs. Checked on moto's S3.
"""

from __future__ import annotations

from pathlib import Path

import boto3
from aws_fixtures import s3_keys
from conftest import write_notebook

from batcat_nb import api
from batcat_nb.backends.sagemaker import backend as sm
from batcat_nb.spec import RunRequest

KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)


def stage(project: Path, options: dict, **fields) -> str:
    """Stage a job as ``batcat submit`` does (nothing is started); its S3 prefix."""
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "print(x)")
    request = RunRequest(
        notebook=str(notebook), backend="sagemaker", experiment="e", backend_options=options, **fields
    )
    spec = api.resolve_spec(request)
    sm.SageMakerBackend().submit(spec)
    return f"jobs/{spec.job_name}/input/"


def test_include_ships_what_git_would_commit_and_never_secrets_unless_named(project, options, bucket):
    (project / ".git").mkdir()  # the project is a repository: its root .gitignore counts
    write(
        project,
        {
            ".gitignore": "*.log\n",
            ".env": "TOKEN=named-on-its-own",
            "src/model.py": "",
            "src/keep.log": "",
            "src/debug.log": "",
            "src/.gitignore": "!keep.log\ncache/\n",
            "src/.batcatignore": "notes.txt\n",
            "src/notes.txt": "",
            "src/cache/big.bin": "",
            "src/pkg/util.py": "",
            "src/.env": "TOKEN=secret",
            "src/.env.local": "TOKEN=secret",
            "src/.git/config": "[remote] url = https://token@host/x",
            "src/keys/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----",
            "src/server.pem": "",
            "src/tls.key": "",
            "src/.aws/credentials": "aws_secret_access_key = x",
        },
    )

    prefix = stage(project, {**options, "include": ["src", ".env"]})

    code = sorted(k.removeprefix(prefix + "code/") for k in s3_keys(bucket, prefix + "code/"))
    assert code == [
        ".env",
        "nb.ipynb",
        "src/.batcatignore",
        "src/.gitignore",
        "src/keep.log",
        "src/model.py",
        "src/pkg/util.py",
    ]


def test_kms_key_encrypts_every_staged_object_and_input_links_are_followed(project, options, bucket):
    write(project, {"helper.py": "", "data/a.csv": "x\n1\n", "shared/b.csv": "x\n2\n"})
    (project / "data" / "b.csv").symlink_to(project / "shared" / "b.csv")  # the user's own link

    prefix = stage(project, {**options, "include": ["helper.py"], "kms_key": KEY}, inputs={"data": "data"})

    s3 = boto3.client("s3")
    staged = s3_keys(bucket, prefix)
    assert {k.removeprefix(prefix) for k in staged} == {
        "code/nb.ipynb",
        "code/helper.py",
        "batcat/job.json",
        "data/a.csv",
        "data/b.csv",
    }
    for key in staged:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", KEY), key
