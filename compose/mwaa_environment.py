"""What Amazon MWAA's service does for an environment before its Airflow containers start, for docker-compose.yaml.

    python compose/mwaa_environment.py --queue-url URL --plugins-zip dist/mwaa/plugins.zip --plugins-folder DIR

1. The Celery queue. MWAA creates the environment's SQS queue (``airflow-celery-*``) itself; the execution role may
   only use it (infra/mwaa.yaml's ``CeleryQueues`` statement has no ``sqs:CreateQueue``), so MWAA's containers run
   with ``MWAA__SQS__CREATE_QUEUE=False``. Here the harness's admin creates it on the local moto (SQS on port 4566),
   with the name and account of the ``MWAA__SQS__QUEUE_URL`` the containers get.
2. ``plugins.zip``. MWAA unzips the bundle's ``plugins.zip`` into ``/usr/local/airflow/plugins`` of every container
   (MWAA's image's own compose file mounts a plugins folder there); here into the volume the Airflow containers mount
   there, emptied first, as a new ``plugins.zip`` version replaces the old one whole.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse


def queue_name(queue_url: str) -> str:
    """The queue's name: the last part of its URL's path (MWAA's image reads it so: ``mwaa/config/sqs.py``)."""
    parts = urlparse(queue_url).path.strip("/").split("/")
    if urlparse(queue_url).scheme not in ("http", "https") or len(parts) != 2:
        raise ValueError(f"not an SQS queue URL (http(s)://host/<account>/<name>): {queue_url}")
    return parts[1]


def create_queue(queue_url: str, endpoint: str) -> str:
    """Create the queue as the harness's admin (idempotent, as CreateQueue is); returns moto's URL of it."""
    import boto3

    from local_aws.settings import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY

    account = urlparse(queue_url).path.strip("/").split("/")[0]
    if account != ACCOUNT_ID:
        raise ValueError(f"{queue_url}: the local stack's account is {ACCOUNT_ID}, not {account}")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY_ID,
                       aws_secret_access_key=SECRET_ACCESS_KEY)
    return sqs.create_queue(QueueName=queue_name(queue_url))["QueueUrl"]


def unzip_plugins(plugins_zip: Path, folder: Path) -> list[str]:
    """Replace ``folder``'s contents with ``plugins_zip``'s; returns the files, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    with zipfile.ZipFile(plugins_zip) as archive:
        archive.extractall(folder)  # zipfile drops absolute paths and '..' from member names
        return sorted(info.filename for info in archive.infolist() if not info.is_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue-url", required=True, help="MWAA__SQS__QUEUE_URL of the Airflow containers")
    parser.add_argument("--endpoint", default="http://127.0.0.1:4566", help="the local moto (SQS)")
    parser.add_argument("--plugins-zip", type=Path, required=True)
    parser.add_argument("--plugins-folder", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.plugins_zip.is_file():
        print(f"error: {args.plugins_zip} is missing: build the bundle first ('make mwaa-bundle')", file=sys.stderr)
        return 2
    files = unzip_plugins(args.plugins_zip, args.plugins_folder)
    print(f"plugins.zip: {len(files)} file(s) into {args.plugins_folder}")
    print(f"Celery queue: {create_queue(args.queue_url, args.endpoint)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
