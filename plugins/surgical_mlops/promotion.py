"""The mAP promotion rule as an operator: approve or reject a model package version against the champion.

Provider style, on ``SageMakerHook``: the operator reads the candidate's evaluation (per-image detections on the
held-out test set), finds the champion (the group's latest Approved version) and its evaluation **on the same test
set**, applies ``include.promotion.promotion_decision``, and writes the outcome where people look: the package's
``ModelApprovalStatus`` and ``ApprovalDescription`` (with the figures), a ``promotion.json`` next to the candidate's
evaluation, and the task's XCom. The maths lives in ``include/promotion.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields


class MapPromotionOperator(SageMakerBaseOperator):
    """
    Approve a model package version only if the mAP promotion rule says it beats the champion.

    :param model_package_arn: the candidate version (templated)
    :param evaluation_uri: S3 URI of the candidate's ``evaluation.json`` (templated)
    :param champion_evaluation_uri: S3 URI of the champion's evaluation on the candidate's test set, when the
        champion's own evaluation used another test set (templated; a re-evaluation step produces it)
    :param floor_map50: minimum mAP@0.5; :param max_class_regression: per-class AP@0.5 tolerance;
    :param confidence: bootstrap confidence level; :param resamples: bootstrap resamples;
    :param unit: ``video`` or ``frame`` (what the bootstrap resamples); :param seed: bootstrap seed
    """

    template_fields: Sequence[str] = aws_template_fields(
        "model_package_arn", "evaluation_uri", "champion_evaluation_uri", "floor_map50", "max_class_regression",
        "confidence", "resamples", "unit")

    def __init__(self, *, model_package_arn: str, evaluation_uri: str, champion_evaluation_uri: str | None = None,
                 floor_map50: float | str = 0.8, max_class_regression: float | str = 0.05,
                 confidence: float | str = 0.95, resamples: int | str = 1000, unit: str = "video", seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(config={}, **kwargs)
        self.model_package_arn = model_package_arn
        self.evaluation_uri = evaluation_uri
        self.champion_evaluation_uri = champion_evaluation_uri
        self.floor_map50, self.max_class_regression = floor_map50, max_class_regression
        self.confidence, self.resamples, self.unit, self.seed = confidence, resamples, unit, seed

    @property
    def policy_args(self) -> dict[str, Any]:
        """The policy, typed (templated values arrive as strings)."""
        return {"floor_map50": float(self.floor_map50), "max_class_regression": float(self.max_class_regression),
                "confidence": float(self.confidence), "resamples": int(self.resamples), "unit": str(self.unit),
                "seed": int(self.seed)}

    def _read_json(self, uri: str) -> dict:
        bucket, key = S3Hook.parse_s3_url(uri)
        return json.loads(S3Hook(aws_conn_id=self.aws_conn_id).read_key(key, bucket))

    def champion(self, group: str) -> dict | None:
        """The latest Approved version of the group other than the candidate."""
        from include.training import latest_approved

        return latest_approved(self.hook.conn, group, exclude=self.model_package_arn)

    def execute(self, context: Any) -> dict:
        from include.promotion import PromotionPolicy, evaluation_records, promotion_decision

        candidate_package = self.hook.conn.describe_model_package(ModelPackageName=self.model_package_arn)
        if candidate_package["ModelApprovalStatus"] != "PendingManualApproval":
            # A re-run after the decision was made: report it, do not decide twice (a second bootstrap could
            # flip a borderline decision, and an Approved champion must not be demoted by its own re-run).
            return self._recorded(candidate_package)
        candidate = self._read_json(self.evaluation_uri)
        champion_package = self.champion(candidate_package["ModelPackageGroupName"])
        champion_eval = None
        if champion_package is not None:
            own = champion_package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
            uri = self.champion_evaluation_uri if self.champion_evaluation_uri not in (None, "", "None") else own
            champion_eval = self._read_json(uri)
            self.log.info("champion: %s (evaluation %s)", champion_package["ModelPackageArn"], uri)
        else:
            self.log.info("no Approved version in %s yet: the floor alone decides",
                          candidate_package["ModelPackageGroupName"])
        candidate_records, classes = evaluation_records(candidate)
        champion_records = evaluation_records(champion_eval)[0] if champion_eval else None
        decision = promotion_decision(candidate_records, champion_records, classes,
                                      PromotionPolicy(**self.policy_args))
        record = {"model_package_arn": self.model_package_arn,
                  "champion_package_arn": champion_package["ModelPackageArn"] if champion_package else None,
                  "dataset_version": candidate.get("dataset_version"), **decision.to_dict()}
        bucket, key = S3Hook.parse_s3_url(self.evaluation_uri)
        S3Hook(aws_conn_id=self.aws_conn_id).load_string(json.dumps(record, indent=2), key.rsplit("/", 1)[0] +
                                                         "/promotion.json", bucket, replace=True)
        status = "Approved" if decision.approved else "Rejected"
        self.hook.conn.update_model_package(ModelPackageArn=self.model_package_arn, ModelApprovalStatus=status,
                                           ApprovalDescription=decision.summary[:1024])
        self.log.info("%s %s: %s", self.model_package_arn, status, json.dumps(decision.figures, indent=2))
        return record

    def _recorded(self, package: dict) -> dict:
        bucket, key = S3Hook.parse_s3_url(self.evaluation_uri)
        path = key.rsplit("/", 1)[0] + "/promotion.json"
        s3 = S3Hook(aws_conn_id=self.aws_conn_id)
        record = json.loads(s3.read_key(path, bucket)) if s3.check_for_key(path, bucket) else {
            "model_package_arn": self.model_package_arn, "approved": package["ModelApprovalStatus"] == "Approved",
            "reasons": [package.get("ApprovalDescription", "")], "figures": {}}
        self.log.info("%s was already %s (%s): not decided again", self.model_package_arn,
                      package["ModelApprovalStatus"], package.get("ApprovalDescription", ""))
        return record
