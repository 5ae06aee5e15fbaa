"""Facts about SageMaker ML instance types that decide what a request may ask for.

Certain Nitro-based instances come with local NVMe instance storage, which the instance's hardware encrypts; SageMaker
then mounts that storage instead of an EBS volume, and refuses a volume KMS key for it ("You can't request a
VolumeKmsKeyId when using an instance type with local storage": ``ResourceConfig``, ``ProcessingClusterConfig``,
``TransformResources`` and ``HyperParameterTuningResourceConfig`` in botocore's SageMaker model; AWS's answer is
"KMS key is not supported for NVMe instance storage"). The pipeline's request builders leave the volume key out on
those types, and the local SageMaker (``local_aws/sagemaker/rules.py``) refuses it, from this one table.

The table is by family (``ml.g4dn.xlarge`` -> ``ml.g4dn``), from AWS's "Instance Store Volumes" list: the families
with a ``d`` suffix, the GPU and Trainium families. EBS-only families (``ml.c5``, ``ml.m5``, ``ml.p2``, ``ml.p3``,
``ml.t2``, ``ml.t3``, ``ml.inf1``, ``ml.inf2``...) are absent. Shipped with the DAGs to MWAA: imports nothing.
"""

from __future__ import annotations

LOCAL_STORAGE_FAMILIES = frozenset({
    # General purpose, compute and memory optimized with NVMe instance store ("d")
    "ml.m5d", "ml.c5d", "ml.r5d", "ml.c6gd", "ml.m6gd", "ml.r6gd", "ml.r7gd", "ml.c6id", "ml.m6id", "ml.r6id",
    # GPU
    "ml.g4dn", "ml.g4ad", "ml.g5", "ml.g6", "ml.g6e", "ml.g7e",
    "ml.p3dn", "ml.p4d", "ml.p4de", "ml.p5", "ml.p5e", "ml.p5en", "ml.p6-b200", "ml.p6-b300", "ml.p6e-gb200",
    # Trainium, Gaudi
    "ml.trn1", "ml.trn1n", "ml.trn2", "ml.dl1",
})


def family(instance_type: str) -> str:
    """``ml.g4dn.xlarge`` -> ``ml.g4dn`` (``ml.p6-b200.48xlarge`` -> ``ml.p6-b200``)."""
    return instance_type.rsplit(".", 1)[0]


def has_local_storage(instance_type: str) -> bool:
    """True when the instance type has local (NVMe) instance storage, where SageMaker refuses a volume KMS key."""
    return family(instance_type) in LOCAL_STORAGE_FAMILIES


def volume_key(key: str | None, instance_type: str) -> dict[str, str]:
    """``{"VolumeKmsKeyId": key}`` for a job's cluster config, or nothing: no key, or an instance type with local
    storage (its hardware encrypts it, and SageMaker refuses a volume key there)."""
    return {"VolumeKmsKeyId": key} if key and not has_local_storage(instance_type) else {}
