"""The IAM policies a deployed workflow needs, and (``--create-roles``) the two roles themselves.

- The job role: what SageMaker assumes to run a step's processing job (the same role
  ``batcat run --backend sagemaker --role`` takes): the workflow's S3 prefix, the runner image,
  CloudWatch Logs.
- The execution role: what Step Functions assumes to run the state machine (create and describe
  the jobs, pass them the job role, write the parameters and job files), and what EventBridge
  Scheduler and the ``on_s3`` rule assume to start executions.

SNS topics named by ``notify`` must allow ``events.amazonaws.com`` to publish (a topic policy,
printed by ``policy`` too): the failure rule has no role.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .workflow_plan import TAG_WORKFLOW, Names

if TYPE_CHECKING:
    from .workflow_deploy import AwsCalls

AWS_SERVICE = "{}.amazonaws.com"


def trust(*services: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": [AWS_SERVICE.format(s) for s in services]},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def job_policy(bucket: str, key: str) -> dict[str, Any]:
    """What a step's processing job does: read and write under the prefix, pull the image, log."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{key}*",
            },
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"},
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:GetAuthorizationToken",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "arn:aws:logs:*:*:log-group:/aws/sagemaker/ProcessingJobs*",
            },
        ],
    }


def execution_policy(bucket: str, key: str, job_role: str, state_machine: str) -> dict[str, Any]:
    """What the state machine does, and what Scheduler and EventBridge do to start it."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "sagemaker:CreateProcessingJob",
                    "sagemaker:DescribeProcessingJob",
                    "sagemaker:AddTags",
                ],
                "Resource": "arn:aws:sagemaker:*:*:processing-job/*",
            },
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": job_role,
                "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            },
            {
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/{key}executions/*",
            },
            {"Effect": "Allow", "Action": "states:StartExecution", "Resource": state_machine},
        ],
    }


def topic_policy(topic: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sns:Publish",
                "Resource": topic,
            }
        ],
    }


def policies(
    workflow: str, bucket: str, key: str, account: str = "ACCOUNT_ID", topic: str | None = None
) -> dict[str, dict[str, Any]]:
    """Every document, by what it is for (``policy`` prints them; ``--create-roles`` applies them)."""
    names = Names(workflow)
    job_role = f"arn:aws:iam::{account}:role/{names.job_role}"
    machine = f"arn:aws:states:*:{account}:stateMachine:{names.state_machine}"
    found = {
        f"{names.job_role} (job role): trust": trust("sagemaker"),
        f"{names.job_role} (job role): permissions": job_policy(bucket, key),
        f"{names.execution_role} (execution role): trust": trust("states", "scheduler", "events"),
        f"{names.execution_role} (execution role): permissions": execution_policy(
            bucket, key, job_role, machine
        ),
    }
    if topic:
        found[f"{topic} (topic policy)"] = topic_policy(topic)
    return found


def create_roles(workflow: str, root: str, calls: AwsCalls, changes: list[str]) -> tuple[str, str]:
    """The job role and the execution role, created or brought up to date; their ARNs."""
    from ...storage import split_s3

    bucket, key = split_s3(root)
    names = Names(workflow)
    job_arn = _role(names.job_role, trust("sagemaker"), workflow, calls, changes)
    account = job_arn.split(":")[4]
    machine = f"arn:aws:states:*:{account}:stateMachine:{names.state_machine}"
    _policy(names.job_role, job_policy(bucket, key), calls, changes)
    execution_arn = _role(
        names.execution_role, trust("states", "scheduler", "events"), workflow, calls, changes
    )
    _policy(names.execution_role, execution_policy(bucket, key, job_arn, machine), calls, changes)
    return job_arn, execution_arn


def _role(name: str, trusted: dict[str, Any], workflow: str, calls: AwsCalls, changes: list[str]) -> str:
    found = calls.find("iam", "get_role", RoleName=name)
    if found is None:
        created = calls(
            "iam",
            "create_role",
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trusted),
            Tags=[{"Key": TAG_WORKFLOW, "Value": workflow}],
            Description=f"batcat workflow {workflow}",
        )
        changes.append(f"created role {name}")
        return str(created["Role"]["Arn"])
    document = found["Role"].get("AssumeRolePolicyDocument")
    if isinstance(document, str):
        from urllib.parse import unquote

        document = json.loads(unquote(document))
    if document != trusted:
        calls("iam", "update_assume_role_policy", RoleName=name, PolicyDocument=json.dumps(trusted))
        changes.append(f"updated the trust policy of role {name}")
    return str(found["Role"]["Arn"])


def _policy(role: str, document: dict[str, Any], calls: AwsCalls, changes: list[str]) -> None:
    found = calls.find("iam", "get_role_policy", RoleName=role, PolicyName="batcat")
    current = found and found["PolicyDocument"]
    if isinstance(current, str):
        from urllib.parse import unquote

        current = json.loads(unquote(current))
    if current != document:
        calls(
            "iam", "put_role_policy", RoleName=role, PolicyName="batcat", PolicyDocument=json.dumps(document)
        )
        changes.append(f"set the permissions of role {role}")


def delete_roles(workflow: str, calls: AwsCalls) -> list[str]:
    """The roles ``--create-roles`` made for this workflow (recognised by their tag)."""
    removed = []
    names = Names(workflow)
    for name in (names.job_role, names.execution_role):
        if calls.find("iam", "get_role", RoleName=name) is None:
            continue
        tagged = calls("iam", "list_role_tags", RoleName=name).get("Tags", [])
        if {"Key": TAG_WORKFLOW, "Value": workflow} not in tagged:
            continue  # a role of the same name that batcat did not create
        for policy in calls("iam", "list_role_policies", RoleName=name).get("PolicyNames", []):
            calls("iam", "delete_role_policy", RoleName=name, PolicyName=policy)
        calls("iam", "delete_role", RoleName=name)
        removed.append(f"role {name}")
    return removed
