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
