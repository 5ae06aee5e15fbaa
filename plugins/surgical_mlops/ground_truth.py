"""Ground Truth labeling jobs: an operator that creates one and waits, and a sensor that waits for one.

Written as if they were in ``airflow.providers.amazon.aws``: thin, on ``SageMakerHook``, the request given as a
templated ``config`` (``include.labeling.ground_truth.labeling_job_request`` builds it), integer fields fixed,
the role name expanded to an ARN, and the describe result returned for XCom. The provider has no labeling-job
operator, hence this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerBaseOperator, serialize
from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from botocore.exceptions import ClientError

LABELING_NON_TERMINAL_STATES = {"Initializing", "InProgress", "Stopping"}
LABELING_FAILED_STATES = {"Failed", "Stopped"}


class SageMakerLabelingOperator(SageMakerBaseOperator):
    """
    Create a SageMaker Ground Truth labeling job and (by default) wait for it.

    The job name is the idempotency key: if a job of that name exists already (a retry, a re-run), the operator
    waits for that job instead of creating another. A job that ends ``Failed`` or ``Stopped`` fails the task with
    the job's ``FailureReason``.

    :param config: the CreateLabelingJob request (templated)
    :param wait_for_completion: wait until the job ends
    :param check_interval: seconds between two status checks
    :param max_ingestion_time: fail when the job runs longer than this many seconds (None: no limit)
    """

    def __init__(self, *, config: dict, wait_for_completion: bool = True, check_interval: int = 30,
                 max_ingestion_time: int | None = None, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self.wait_for_completion = wait_for_completion
        self.check_interval = check_interval
        self.max_ingestion_time = max_ingestion_time

    def _create_integer_fields(self) -> None:
        self.integer_fields = [
            ["HumanTaskConfig", field] for field in (
                "NumberOfHumanWorkersPerDataObject", "TaskTimeLimitInSeconds", "TaskAvailabilityLifetimeInSeconds",
                "MaxConcurrentTaskCount")
        ]

    def expand_role(self) -> None:
        if "RoleArn" in self.config:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            self.config["RoleArn"] = AwsBaseHook(self.aws_conn_id, client_type="iam").expand_role(
                self.config["RoleArn"])

    def _describe(self, name: str) -> dict:
        return self.hook.conn.describe_labeling_job(LabelingJobName=name)

    def execute(self, context: Any) -> dict:
        self.preprocess_config()
        name = self.config["LabelingJobName"]
        try:
            existing = self._describe(name)
            self.log.info("Labeling job %s exists already (%s): not creating it again", name,
                          existing["LabelingJobStatus"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ResourceNotFound", "ValidationException"):
                raise
            self.log.info("Creating labeling job %s", name)
            self.hook.conn.create_labeling_job(**self.config)
        if not self.wait_for_completion:
            return {"LabelingJob": serialize(self._describe(name))}
        response = self.hook.check_status(name, "LabelingJobStatus", self._describe, self.check_interval,
                                          self.max_ingestion_time, non_terminal_states=LABELING_NON_TERMINAL_STATES)
        if response["LabelingJobStatus"] in LABELING_FAILED_STATES:  # check_status fails on "Failed" only
            raise RuntimeError(f"Labeling job {name} ended {response['LabelingJobStatus']}: "
                               f"{response.get('FailureReason', 'no reason given')}")
        counters = response.get("LabelCounters", {})
        self.log.info("Labeling job %s completed: %s", name, counters)
        return {"LabelingJob": serialize(response)}


class SageMakerLabelingJobSensor(SageMakerBaseSensor):
    """
    Wait for a SageMaker Ground Truth labeling job to end; fail with its ``FailureReason`` if it fails or stops.

    :param job_name: name of the labeling job (templated)
    """

    template_fields: Sequence[str] = aws_template_fields("job_name")

    def __init__(self, *, job_name: str, **kwargs: Any) -> None:
        super().__init__(resource_type="labeling job", **kwargs)
        self.job_name = job_name

    def non_terminal_states(self) -> set[str]:
        return LABELING_NON_TERMINAL_STATES

    def failed_states(self) -> set[str]:
        return LABELING_FAILED_STATES

    def get_sagemaker_response(self) -> dict:
        return self.hook.conn.describe_labeling_job(LabelingJobName=self.job_name)

    def get_failed_reason_from_response(self, response: dict) -> str:
        return response.get("FailureReason", "Unknown")

    def state_from_response(self, response: dict) -> str:
        return response["LabelingJobStatus"]


