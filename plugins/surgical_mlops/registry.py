"""Model Registry: register a model version once per training job.

``SageMakerRegisterModelVersionOperator`` creates a new version on every call and does not template ``extras``
(ModelMetrics, lineage), which differ per run. This subclass templates ``extras`` and first looks for the version
already registered for the same training job (``CustomerMetadataProperties["training_job"]``): a retry or a re-run of
the DAG run returns that version instead of registering a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerRegisterModelVersionOperator


class RegisterModelVersionOnceOperator(SageMakerRegisterModelVersionOperator):
    """:param extras: CreateModelPackage fields (templated); must hold ``CustomerMetadataProperties.training_job``."""

    template_fields: Sequence[str] = (*SageMakerRegisterModelVersionOperator.template_fields, "extras")

    def execute(self, context: Any) -> str:
        from include.training import find_package

        job = (self.extras or {}).get("CustomerMetadataProperties", {}).get("training_job")
        if not job:
            raise ValueError("extras.CustomerMetadataProperties.training_job is required (it makes the "
                             "registration idempotent)")
        existing = find_package(self.hook.conn, self.package_group_name, job)
        if existing is not None:
            self.log.info("training job %s is already registered as %s (%s): not registering again", job,
                          existing["ModelPackageArn"], existing["ModelApprovalStatus"])
            return existing["ModelPackageArn"]
        arn = super().execute(context)
        self.log.info("registered %s for training job %s", arn, job)
        return arn
