"""Run by ``.venv-sagemaker-sdk/bin/python`` (the SageMaker Python SDK's own venv: its boto3 is newer than the one MWAA
3.3.1 pins): describes a training job and invokes an endpoint of the local SageMaker with the SDK's resource classes,
and prints what it saw as JSON. The AWS endpoint variables come from the calling test (the local stack's)."""

from __future__ import annotations

import json
import sys

from sagemaker.core.resources import Endpoint, TrainingJob


def main(training_job: str, endpoint: str) -> None:
    status = TrainingJob.get(training_job_name=training_job).training_job_status
    response = Endpoint.get(endpoint_name=endpoint).invoke(body=json.dumps({"x": 1}), content_type="application/json")
    body = response.body.read() if hasattr(response.body, "read") else response.body
    print(json.dumps({"training_job_status": status, "body": json.loads(body)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
