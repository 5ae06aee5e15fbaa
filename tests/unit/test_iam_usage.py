"""tools/iam_usage.py: per role, the permissions a run used against the ones granted (the least-privilege report)."""

from __future__ import annotations

import json

from tools import iam_usage

ROLE = "arn:aws:iam::123456789012:role/surgical-mwaa-execution-local"
POLICIES = {ROLE: {"pipeline": {"Version": "2012-10-17", "Statement": [
    {"Sid": "Frames", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
     "Resource": "arn:aws:s3:::surgical-frames-processed/*"},
    {"Sid": "Jobs", "Effect": "Allow", "Action": "sagemaker:CreateProcessingJob",
     "Resource": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/frames-*"},
    {"Sid": "Alarms", "Effect": "Allow", "Action": "cloudwatch:DescribeAlarms", "Resource": "*"},
    {"Sid": "NoDeletes", "Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"},
]}}}


def _decision(action, resource="*", allowed=True, principal=ROLE):
    return {"principal": principal, "action": action, "resource": resource, "allowed": allowed}


def test_used_missing_and_unused_grants_per_role():
    decisions = [
        _decision("s3:GetObject", "arn:aws:s3:::surgical-frames-processed/v1/f.jpg"),
        _decision("sagemaker:CreateProcessingJob",
                  "arn:aws:sagemaker:us-east-1:123456789012:processing-job/frames-abc"),
        _decision("sagemaker:CreateProcessingJob", "arn:aws:sagemaker:us-east-1:123456789012:processing-job/predict-1",
                  allowed=False),
        _decision("s3:GetObject", "arn:aws:s3:::someone-else/x", principal="arn:aws:iam::123456789012:user/admin"),
    ]
    [usage] = iam_usage.analyse(decisions, POLICIES)
    assert set(usage.used) == {"s3:GetObject", "sagemaker:CreateProcessingJob"}
    assert usage.missing == {"sagemaker:CreateProcessingJob": {
        "arn:aws:sagemaker:us-east-1:123456789012:processing-job/predict-1"}}
    assert [(g.sid, g.action) for g in usage.unused] == [("Frames", "s3:PutObject"),
                                                         ("Alarms", "cloudwatch:DescribeAlarms")]
    text = iam_usage.report([usage])
    assert "MISSING  surgical-mwaa-execution-local: sagemaker:CreateProcessingJob on " in text
    assert text.splitlines()[-1] == "RESULT iam_usage roles=1 used=2 granted=4 missing=1 unused=2"


def test_a_grant_is_used_only_by_an_action_on_a_resource_it_names():
    decisions = [_decision("s3:PutObject", "arn:aws:s3:::surgical-models/m.tar.gz")]  # allowed by another policy
    [usage] = iam_usage.analyse(decisions, POLICIES)
    assert ("Frames", "s3:PutObject") in [(g.sid, g.action) for g in usage.unused]


def test_a_refusal_then_allowed_on_the_same_resource_is_not_missing():
    resource = "arn:aws:s3:::surgical-frames-processed/a.jpg"
    decisions = [_decision("s3:GetObject", resource, allowed=False), _decision("s3:GetObject", resource)]
    [usage] = iam_usage.analyse(decisions, POLICIES)
    assert usage.missing == {}


def test_the_decision_record_is_read_and_a_missing_one_is_a_clear_error(tmp_path):
    path = tmp_path / "decisions.jsonl"
    path.write_text(json.dumps(_decision("s3:GetObject")) + "\n\n", encoding="utf-8")
    assert iam_usage.read_decisions(path) == [_decision("s3:GetObject")]
    try:
        iam_usage.read_decisions(tmp_path / "absent.jsonl")
    except SystemExit as exc:
        assert "LOCAL_AWS_IAM=enforce" in str(exc)
    else:
        raise AssertionError("no error for a missing record")
