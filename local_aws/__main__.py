"""``python -m local_aws up|down|status``: the local AWS stack (what ``make up`` / ``make down`` run);
``airflow-up|airflow-down|airflow-status``: the local Airflow services on it (``make airflow-up``);
``label-studio-up|label-studio-down|label-studio-status``: the local Label Studio (``make label-studio-up``)."""

from __future__ import annotations

import argparse
import sys

from local_aws import airflow_services, stack
from local_aws.label_studio import server as label_studio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_aws", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "airflow-up", "airflow-down", "airflow-status",
                                            "label-studio-install", "label-studio-up", "label-studio-down",
                                            "label-studio-status"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        elif args.command == "airflow-up":
            airflow_services.up()
        elif args.command == "airflow-down":
            airflow_services.down()
        elif args.command == "label-studio-install":
            label_studio.install()
        elif args.command == "label-studio-up":
            label_studio.up()
        elif args.command == "label-studio-down":
            label_studio.down()
        elif args.command == "label-studio-status":
            return 0 if label_studio.status() else 1
        elif args.command == "airflow-status":
            return 0 if airflow_services.status() else 1
        else:
            return 0 if stack.status() else 1
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
