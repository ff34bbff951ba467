"""Fast checks of the core's pure pieces, sharp enough for mutation testing (``make mutate``):
the manifest, the request contract, storage paths, parameter checking, notebook loading."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import write_notebook

from batcat_nb import contract, storage
from batcat_nb.errors import NotebookError, ParameterError, UsageError
from batcat_nb.manifest import FAILED, CellError, Manifest
from batcat_nb.notebook import Parameter, load_notebook, parse_parameters
from batcat_nb.parameters import (
    collect,
    effective_parameters,
    given_only,
    is_default,
    recorded,
    with_defaults,
)

# --------------------------------------------------------------------------- the manifest


def test_manifest_round_trips_through_its_file(tmp_path):
    manifest = Manifest(
        "job-1",
        status=FAILED,
        notebook="nb.ipynb",
        parameters={"a": 1},
        metrics={"loss": [(0.5, 0), (0.25, 1), (0.125, 2)], "empty": []},
        error=CellError(3, "ValueError", "bad"),
        reason="cell 3: ValueError: bad",
        started_at=10.0,
        ended_at=12.5,
    )
    path = manifest.write(tmp_path)
    assert path == tmp_path / "batcat-manifest.json"
    assert json.loads(path.read_text())["error"] == {"cell_index": 3, "ename": "ValueError", "evalue": "bad"}
    again = Manifest.read(tmp_path)
    assert again == manifest and again.metrics["loss"] == [(0.5, 0), (0.25, 1), (0.125, 2)]
    assert again.duration == 2.5 and again.last_metrics() == {"loss": 0.125}
    assert path.read_text().startswith('{\n  "job_name": "job-1",\n')  # indented: people read it
    Manifest("j", parameters={"where": tmp_path}).write(tmp_path)  # what JSON cannot hold, as text
    assert Manifest.read(tmp_path).parameters == {"where": str(tmp_path)}
    assert Manifest.from_dict({"job_name": "j"}).error is None


def test_manifest_duration_is_never_negative_and_errors_read_as_one_line():
    assert Manifest("j", started_at=5.0, ended_at=1.0).duration == 0.0
    assert str(CellError(0, "KeyError", "'x'")) == "cell 0: KeyError: 'x'"
    assert str(CellError(None, "KeyError", "'x'")) == "KeyError: 'x'"


# --------------------------------------------------------------------------- the request contract


def test_channels_are_refused_past_the_limits_sagemaker_sets():
    contract.check_channels({f"i{n}": "x" for n in range(10)}, {})  # ten is allowed
    with pytest.raises(UsageError, match="^11 inputs: a processing job takes at most 10$"):
        contract.check_channels({f"i{n}": "x" for n in range(11)}, {})
    with pytest.raises(UsageError, match="'b' names both an input and an output .* b_dir"):
        contract.check_channels({"a": "x", "b": "x"}, {"c": "y", "b": "y"})
    contract.check_channels({"a": "relative"}, {})  # only with uris are schemes checked
    contract.check_channels({"a": "s3://b/k"}, {"o": "file:///abs"}, uris=True)
    with pytest.raises(UsageError, match="channel 'o': 'file://rel' is neither"):
        contract.check_channels({"a": "s3://b/k"}, {"o": "file://rel"}, uris=True)


def test_environment_limits():
    contract.check_environment({f"V{n}": "x" * 256 for n in range(100)})  # exactly at the limits
    with pytest.raises(UsageError, match="^101 environment variables: a job takes at most 100$"):
        contract.check_environment({f"V{n}": "1" for n in range(101)})
    with pytest.raises(UsageError, match="^environment variable LONG is 257 characters long; SageMaker"):
        contract.check_environment({"LONG": "x" * 257})


def test_include_paths_resolve_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "helper.py").write_text("")
    assert contract.include_paths(["helper.py"]) == [tmp_path / "helper.py"]
    with pytest.raises(
        UsageError, match=f"--include gone.py: no such file or directory \\(relative to {tmp_path}"
    ):
        contract.include_paths(["helper.py", "gone.py"])


def test_code_files_keep_paths_relative_to_the_notebook_and_stage_them(tmp_path):
    nb = tmp_path / "proj" / "nb.ipynb"
    (nb.parent / "pkg" / "sub").mkdir(parents=True)
    nb.write_text("{}")
    (nb.parent / "pkg" / "b.py").write_text("b")
    (nb.parent / "pkg" / "sub" / "a.py").write_text("a")
    outside = tmp_path / "shared.py"
    outside.write_text("s")
    assert [r for _, r in contract.code_files(nb, [nb.parent / "pkg"])] == [
        "nb.ipynb",
        "pkg/b.py",
        "pkg/sub/a.py",
    ]
    files = contract.code_files(nb, [nb.parent / "pkg" / "sub", outside])
    assert [relative for _, relative in files] == ["nb.ipynb", "pkg/sub/a.py", "shared.py"]
    staged = tmp_path / "staged"
    contract.stage_files(reversed(files), staged)  # the deepest first: its folders are made
    assert (staged / "pkg" / "sub" / "a.py").read_text() == "a" and (staged / "shared.py").read_text() == "s"
    assert not (staged / "pkg" / "b.py").exists()
    assert os.path.samefile(staged / "nb.ipynb", nb)  # hard-linked, not copied, where it can be


def test_staging_copies_where_it_cannot_link(tmp_path):
    """/proc files cannot be hard-linked (another file system): they are copied."""
    contract.stage_files([(Path("/proc/self/cmdline"), "deep/er/cmdline")], tmp_path)
    staged = tmp_path / "deep" / "er" / "cmdline"
    assert staged.is_file() and not os.path.samefile(staged, "/proc/self/cmdline")


def test_file_uris_round_trip(tmp_path):
    folder = tmp_path / "a dir"
    assert contract.file_uri(folder) == f"file://{tmp_path}/a%20dir"
    assert contract.local_path(contract.file_uri(folder)) == folder


def test_job_config_names_the_job_with_the_arn_of_its_account_and_region(monkeypatch):
    def request(role: str = "arn:aws:iam::123456789012:role/r") -> dict:
        built = contract.build_request(
            SimpleNamespace(job_name="Job-1"), image="i", inputs={}, outputs={}, environment={}, role_arn=role
        )
        return {**built, "Tags": [{"Key": "k", "Value": "v"}]}

    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    config = contract.job_config(request())
    assert config["ProcessingJobArn"] == "arn:aws:sagemaker:eu-west-1:123456789012:processing-job/job-1"
    assert (
        config["ProcessingJobName"] == "Job-1" and "Tags" not in config
    )  # every field: test_docker_container
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert contract.job_config(request())["ProcessingJobArn"].startswith(
        "arn:aws:sagemaker:us-west-2:123456789012:"
    )
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert contract.job_config(request())["ProcessingJobArn"].startswith("arn:aws:sagemaker:us-east-1:")


def test_build_request_names_every_channel_at_its_container_path():
    request = contract.build_request(
        SimpleNamespace(job_name="j"),
        image="img",
        inputs={"data": "s3://b/d"},
        outputs={"out": "s3://b/o"},
        environment={"A": "1"},
        instance_count=2,
        volume_gb=50,
    )
    default = contract.build_request(
        SimpleNamespace(job_name="j"), image="i", inputs={}, outputs={}, environment={}
    )
    assert default["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"] == 30
    assert request["ProcessingResources"]["ClusterConfig"] == {
        "InstanceCount": 2,
        "InstanceType": "ml.m5.large",  # what SageMaker knows, not "local"
        "VolumeSizeInGB": 50,
    }
    assert request["ProcessingInputs"][0]["S3Input"]["LocalPath"] == "/opt/ml/processing/input/data"
    assert request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] == (
        "/opt/ml/processing/output/out"
    )
    assert request["Environment"] == {"A": "1"} and request["RoleArn"].endswith(":role/batcat-local")
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}


# --------------------------------------------------------------------------- storage


def test_s3_uris_split_into_bucket_and_key():
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/s3://b")
    assert storage.split_s3("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert storage.split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(UsageError, match="^'s3:///k' names no bucket; write s3://BUCKET/PREFIX$"):
        storage.split_s3("s3:///k")


def test_a_local_input_that_does_not_exist_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage.check_input("data", str(tmp_path))
    with pytest.raises(
        UsageError, match=f"^input 'data': gone does not exist \\(paths are relative to {tmp_path}\\)$"
    ):
        storage.check_input("data", "gone")


def test_s3_inputs_are_checked_and_copied_both_ways(bucket, tmp_path):
    """Against the moto server: an input that cannot be read is named before any job starts."""
    import boto3

    s3 = boto3.client("s3")
    source = tmp_path / "up"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.txt").write_text("b")
    assert storage.upload(source, f"s3://{bucket}/in/") == 2
    assert storage.upload(source / "a.txt", f"s3://{bucket}") == 1
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["a.txt", "in/a.txt", "in/sub/b.txt"]
    storage.check_input("data", f"s3://{bucket}/in")
    with pytest.raises(UsageError, match=f"^input 'data': nothing at s3://{bucket}/none; check the bucket"):
        storage.check_input("data", f"s3://{bucket}/none")
    with pytest.raises(
        UsageError, match=r"^input 'data': cannot read s3://no-such-bucket-here/x \(NoSuchBucket: "
    ):
        storage.check_input("data", "s3://no-such-bucket-here/x")
    s3.put_object(Bucket=bucket, Key="in/folder/", Body=b"")  # a console-made "folder"
    s3.put_object(Bucket=bucket, Key="inner.txt", Body=b"i")
    assert storage.download(f"s3://{bucket}/in", tmp_path / "down") == 3  # the prefix, as SageMaker
    assert (tmp_path / "down" / "sub" / "b.txt").read_text() == "b"
    assert (tmp_path / "down" / "ner.txt").read_text() == "i"  # inner.txt, relative to "in"
    assert storage.download(f"s3://{bucket}/in", tmp_path / "folder", folder=True) == 2
    assert sorted(p.name for p in (tmp_path / "folder").rglob("*.txt")) == ["a.txt", "b.txt"]
    assert storage.download(f"s3://{bucket}/in/a.txt", tmp_path / "one") == 1  # one object: its name
    assert (tmp_path / "one" / "a.txt").read_text() == "a"
    assert storage.download(f"s3://{bucket}/nothing-here", tmp_path / "none") == 0


def test_aws_credentials_reach_a_container_only_through_this_call(aws_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    env = storage.aws_credentials()
    assert env["AWS_ACCESS_KEY_ID"] == os.environ["AWS_ACCESS_KEY_ID"]
    assert env["AWS_SECRET_ACCESS_KEY"] == os.environ["AWS_SECRET_ACCESS_KEY"]
    assert (env["AWS_SESSION_TOKEN"], env["AWS_REGION"]) == ("token", "eu-west-1")
    assert env["AWS_ENDPOINT_URL"] == aws_env
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(
        UsageError, match="^pass_aws_credentials is set but no AWS credentials are configured here$"
    ):
        storage.aws_credentials()


def test_aws_reasons_read_as_code_and_message():
    error = SimpleNamespace(response={"Error": {"Code": "NoSuchBucket", "Message": "gone"}})
    assert storage._aws_reason(error) == "NoSuchBucket: gone"  # type: ignore[arg-type]
    assert storage._aws_reason(ValueError("x")) == "ValueError: x"


# --------------------------------------------------------------------------- parameters


@pytest.fixture
def declared(tmp_path: Path):
    path = write_notebook(tmp_path / "nb.ipynb", "alpha = 0.1\nepochs = 3\nlabel = 'a'\nratio = 0.5")
    return load_notebook(path)


def test_given_values_are_checked_and_overlaid_on_the_defaults(declared):
    effective = effective_parameters(declared, {"epochs": 5})
    assert effective == {"alpha": "0.1", "epochs": 5, "label": "'a'", "ratio": "0.5"}
    assert is_default(effective["alpha"]) and not is_default(effective["epochs"])
    assert given_only(effective) == {"epochs": 5}
    assert recorded(effective) == {"alpha": "0.1", "epochs": "5", "label": "a", "ratio": "0.5"}
    assert with_defaults(declared, {}) == {"alpha": "0.1", "epochs": "3", "label": "'a'", "ratio": "0.5"}


def test_unknown_and_mistyped_values_are_refused(declared, caplog):
    with pytest.raises(
        ParameterError,
        match="^nb.ipynb has no parameter 'ratoi' \\(did you mean 'ratio'\\?\\); "
        "declared: alpha, epochs, label, ratio. Pass --allow-unknown-parameters",
    ):
        effective_parameters(declared, {"ratoi": 1})
    assert effective_parameters(declared, {"extra": 1}, allow_unknown=True)["extra"] == 1
    message = "nb.ipynb declares no parameter 'extra'; passing it anyway"
    assert caplog.records[-1].getMessage() == message
    empty = load_notebook(write_notebook(declared.path.parent / "empty.ipynb", "# nothing yet"))
    with pytest.raises(ParameterError, match="has no parameter 'x'; declared: none. Pass"):
        effective_parameters(empty, {"x": 1})
    with pytest.raises(
        ParameterError,
        match="^parameter 'epochs' expects int \\(default 3\\), got 'x' \\(str\\); pass a int value$",
    ):
        effective_parameters(declared, {"epochs": "x"})
    with pytest.raises(
        ParameterError, match="got 7 \\(int\\); pass a str value, or -r label VALUE for text$"
    ):
        effective_parameters(declared, {"label": 7})
    with pytest.raises(ParameterError, match="got None \\(None\\)"):
        effective_parameters(declared, {"alpha": None})


def test_without_a_parameters_cell_values_pass_unchecked(tmp_path, caplog):
    notebook = load_notebook(write_notebook(tmp_path / "plain.ipynb", None, "1"))
    assert effective_parameters(notebook, {}) == {} and caplog.text == ""
    assert effective_parameters(notebook, {"x": 1}) == {"x": 1}
    assert caplog.records[-1].getMessage() == (
        f"{notebook.path} has no cell tagged 'parameters': the values are injected at the top, as "
        "papermill does. Tag the cell that sets the defaults to have them checked."
    )


def test_recorded_defaults_that_are_not_literals_stay_text(tmp_path):
    notebook = load_notebook(write_notebook(tmp_path / "nb.ipynb", "n = 2 * 3\nname = 'x'"))
    assert recorded(with_defaults(notebook, {})) == {"n": "2 * 3", "name": "x"}


def test_parameter_files_and_yaml_are_mappings(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n")
    (tmp_path / "empty.yaml").write_text("")
    assert collect(files=[tmp_path / "empty.yaml"], yaml_texts=["", "a: 1"]) == {"a": 1}
    with pytest.raises(
        ParameterError, match="^parameters file .*list.yaml must be a YAML mapping of name: value$"
    ):
        collect(files=[tmp_path / "list.yaml"])
    with pytest.raises(
        ParameterError,
        match=f"^parameters file not found: {tmp_path / 'no.yaml'} \\(-f takes a YAML file\\)$",
    ):
        collect(files=[tmp_path / "no.yaml"])
    with pytest.raises(ParameterError, match="^-y 'a: \\[' is not valid YAML"):
        collect(yaml_texts=["a: ["])
    assert collect(yaml_texts=["1: x"]) == {"1": "x"}


# --------------------------------------------------------------------------- notebooks


def test_notebook_properties(tmp_path):
    path = write_notebook(tmp_path / "my-nb.ipynb", "x = 1", kernel="ir")
    notebook = load_notebook(path)
    assert notebook.name == "my-nb" and notebook.kernel_name == "ir"
    assert (
        len(notebook.sha256) == 64
        and notebook.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    )
    assert notebook.language == "python"  # write_notebook's kernelspec says python
    content = {"cells": [], "nbformat": 4, "metadata": {"language_info": {"name": "R"}}}
    (tmp_path / "r.ipynb").write_text(json.dumps(content))
    r = load_notebook(tmp_path / "r.ipynb")
    assert r.language == "R" and r.kernel_name is None and r.parameters() is None
    (tmp_path / "bare.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
    assert load_notebook(tmp_path / "bare.ipynb").language == "python"


def test_a_parameters_cell_stored_as_a_list_of_lines(tmp_path):
    cell = {
        "cell_type": "code",
        "metadata": {"tags": ["x", "parameters"]},
        "source": ["a = 1\n", "b = 'x'\n"],
    }
    other = {"cell_type": "code", "metadata": {"tags": ["x"]}, "source": "c = 3"}
    (tmp_path / "nb.ipynb").write_text(json.dumps({"cells": [other, cell], "nbformat": 4, "metadata": {}}))
    notebook = load_notebook(tmp_path / "nb.ipynb")
    assert notebook.parameters_cell() is not None and notebook.parameters_cell()["source"][0] == "a = 1\n"
    assert [p.name for p in notebook.parameters() or []] == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not a notebook: it is not valid JSON"),
        (json.dumps([1]), "is not a notebook: it has no list of cells"),
        (json.dumps({"cells": {}}), "is not a notebook: it has no list of cells"),
        (json.dumps({"cells": [], "nbformat": 3}), "has nbformat 3, batcat needs nbformat 4"),
    ],
)
def test_files_that_are_not_notebooks_are_named(tmp_path, content, problem):
    (tmp_path / "bad.ipynb").write_text(content)
    with pytest.raises(NotebookError, match=problem):
        load_notebook(tmp_path / "bad.ipynb")


def test_missing_notebooks_and_directories_are_named(tmp_path):
    with pytest.raises(NotebookError, match="^notebook not found: .*nope.ipynb \\(check the path"):
        load_notebook(tmp_path / "nope.ipynb")
    with pytest.raises(
        NotebookError, match=r"is a directory: name the notebook \(.ipynb, .py, .md\) inside it"
    ):
        load_notebook(tmp_path)


@pytest.mark.parametrize(
    ("parameter", "value", "fits"),
    [
        (Parameter("x", "float", "1.0"), 2, True),
        (Parameter("x", "float", "1.0"), True, False),
        (Parameter("x", "int", "1"), 2.0, False),
        (Parameter("x", "list", "[]"), (1,), True),
        (Parameter("x", "list", "[]"), "ab", False),
        (Parameter("x", "dict", "{}"), {}, True),
        (Parameter("x", "dict", "{}"), [], False),
        (Parameter("x", "bool", "True"), 1, False),
        (Parameter("x", "str", "''"), None, False),
        (Parameter("x", "None", "None"), None, True),
        (Parameter("x", "str", "''", optional=True), None, True),
        (Parameter("x", "MyType", "f()"), object(), True),
    ],
)
def test_declared_types_accept_what_python_would(parameter, value, fits):
    assert parameter.accepts(value) is fits


def test_parameter_types_defaults_and_help_from_values_and_annotations():
    source = (
        "a = None\nb: int = 1\nc: Optional[str] = None\nd: 'str' = 'x'\ne = (1, 2)\nf = -1\n"
        "g = {'k': 1}\nh, i = 1, 2\nj += 1\nk: float\n# the rate\nl = 1.5\nm: int | None = None\n"
        "n = True  # yes\n"
    )
    assert [(p.name, p.type_name, p.default, p.help, p.optional) for p in parse_parameters(source)] == [
        ("a", "None", "None", "", True),
        ("b", "int", "1", "", False),
        ("c", "str", "None", "", True),
        ("d", "'str'", "'x'", "", False),
        ("e", "list", "(1, 2)", "", False),
        ("f", "int", "-1", "", False),
        ("g", "dict", "{'k': 1}", "", False),
        ("l", "float", "1.5", "the rate", False),
        ("m", "int", "None", "", True),
        ("n", "bool", "True", "yes", False),
    ]
