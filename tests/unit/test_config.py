"""The pipeline config: one setting picks the environment; overrides are typed and checked."""

from __future__ import annotations

import pytest

from include.config import ConfigError, build_config


def test_local_is_the_default(monkeypatch):
    monkeypatch.delenv("PIPELINE_ENV", raising=False)
    config = build_config()
    assert config.env == "local" and config.raw_bucket == "surgical-videos-raw"
    assert config.extraction_fps == 5.0 and config.label_classes == ("scalpel", "retractor", "tumor")


def test_pipeline_env_selects_the_preset(monkeypatch):
    monkeypatch.setenv("PIPELINE_ENV", "prod")
    config = build_config()
    assert config.env == "prod" and config.raw_bucket.endswith("-prod")
    assert config.training_instance_type.startswith("ml.g")


def test_overrides_take_the_type_of_the_setting():
    config = build_config("local", {"extraction_fps": 2, "label_classes": ["scalpel", "forceps"]})
    assert config.extraction_fps == 2.0 and isinstance(config.extraction_fps, float)
    assert config.label_classes == ("scalpel", "forceps")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"fps": 3}, "unknown setting 'fps'"),
        ({"extraction_fps": "fast"}, "must be a number"),
        ({"label_classes": []}, "non-empty list"),
        ({"raw_bucket": 3}, "must be a string"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config("local", overrides)


def test_unknown_environment_is_rejected():
    with pytest.raises(ConfigError, match="PIPELINE_ENV must be one of local, dev, prod"):
        build_config("staging")


@pytest.mark.parametrize("env", ["local", "dev", "prod"])
def test_every_preset_defaults_to_the_services_open_to_new_customers(env):
    config = build_config(env)
    assert (config.labeling_backend, config.monitoring_backend) == ("label_studio", "processing")
    assert build_config(env, {"labeling_backend": "ground_truth", "monitoring_backend": "model_monitor"})


def test_an_unknown_monitoring_backend_is_a_clear_error():
    with pytest.raises(ConfigError, match="'monitoring_backend' must be one of processing, model_monitor"):
        build_config("local", {"monitoring_backend": "cloudwatch"})


def test_load_config_resolves_the_kms_alias_to_the_key_arn_the_requests_name(in_process_aws):
    import boto3

    from include import config as config_module

    kms = boto3.client("kms")
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/surgical-mlops", TargetKeyId=key["KeyId"])
    config_module.resolve_key_arn.cache_clear()
    try:
        config = config_module.load_config("local")
        assert config.kms_key_alias == "alias/surgical-mlops" and config.kms_key_arn == key["Arn"]
        kms.delete_alias(AliasName="alias/surgical-mlops")
        assert config_module.load_config("local").kms_key_arn == key["Arn"]  # cached per process
        assert config_module.load_config("local", use_airflow_variable=False).kms_key_arn is None
        with pytest.raises(ConfigError, match=r"'alias/nobody' \(setting 'kms_key_alias'\) could not be resolved"):
            config_module.resolve_key_arn("alias/nobody", "us-east-1")
    finally:
        config_module.resolve_key_arn.cache_clear()


def test_a_kms_key_arn_given_in_the_settings_is_used_as_is():
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert build_config("prod", {"kms_key_arn": arn}).kms_key_arn == arn
    assert build_config("prod").kms_key_arn is None  # resolved inside a task, by load_config


# -- stages in one account: dev and prod name every resource with their stage, local keeps the plain names ----------
def test_dev_and_prod_name_every_resource_with_their_stage():
    from include.config import STAGE_NAMED_FIELDS

    local, dev, prod = (build_config(env) for env in ("local", "dev", "prod"))
    for name in STAGE_NAMED_FIELDS:
        plain = getattr(local, name)
        assert getattr(dev, name) == f"{plain}-dev" and getattr(prod, name) == f"{plain}-prod", name
    assert (dev.video_queue, dev.kms_key_alias, dev.endpoint_name, dev.monitoring_schedule_name) == (
        "video-processing-queue-dev", "alias/surgical-mlops-dev", "surgical-detector-dev",
        "surgical-detector-drift-dev")
    assert prod.sagemaker_role_arn.endswith(":role/surgical-sagemaker-execution-prod")
    assert prod.workteam_arn.endswith("/private-crowd/surgical-annotators-prod")
    assert prod.alarm_names == ("surgical-input-drift-prod", "surgical-prediction-drift-prod",
                                "surgical-fresh-label-map50-prod")


def test_the_local_preset_keeps_the_unsuffixed_names():
    local = build_config("local")
    assert (local.video_queue, local.video_dlq, local.sagemaker_role_name, local.kms_key_alias) == (
        "video-processing-queue", "video-processing-dlq", "surgical-sagemaker-execution", "alias/surgical-mlops")
    assert (local.endpoint_name, local.model_package_group, local.monitoring_schedule_name, local.workteam_name) == (
        "surgical-detector", "surgical-detector", "surgical-detector-drift", "surgical-annotators")


def test_a_stage_name_can_still_be_overridden():
    assert build_config("dev", {"endpoint_name": "surgical-detector-dev2"}).endpoint_name == "surgical-detector-dev2"
