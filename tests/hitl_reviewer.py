"""A person answering a Human-in-the-loop task (ApprovalOperator) in the Airflow UI, for tests that run ``dag.test()``.

    AIRFLOW_HOME=... python -m tests.hitl_reviewer <option> <seconds>

Waits (up to ``seconds``) for a HITL request nobody has answered in the metadata DB of ``AIRFLOW_HOME``, answers it
with ``option`` exactly as the api-server's HITL endpoint does (``PATCH .../hitlDetails``: the responder, the time, the
chosen option, then ``handle_event_submit`` puts the parked task back to SCHEDULED with the response as its resume
event; ``dag.test()`` waits for that), and prints what the request said as JSON. Uses Airflow's own models and
``handle_event_submit``: no api-server runs in a ``dag.test()``, and a hand-written row update would miss the resume.
"""

from __future__ import annotations

import json
import sys
import time


def answer(option: str, timeout: float) -> dict:
    from airflow._shared.timezones import timezone
    from airflow.models.hitl import HITLDetail, HITLUser
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with create_session() as session:
            detail = session.scalars(select(HITLDetail).where(HITLDetail.responded_at.is_(None))).first()
            ti = session.get(TaskInstance, detail.ti_id) if detail is not None else None
            if ti is not None and ti.state in (TaskInstanceState.AWAITING_INPUT, TaskInstanceState.DEFERRED):
                asked = {"task_id": ti.task_id, "subject": detail.subject, "body": detail.body,
                         "options": list(detail.options)}
                detail.responded_by = HITLUser(id="reviewer", name="Reviewer")
                detail.responded_at = timezone.utcnow()
                detail.chosen_options = [option]
                detail.params_input = {}
                handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
                session.commit()
                return asked
        time.sleep(1)
    raise SystemExit(f"no Human-in-the-loop request to answer within {timeout:.0f} s")


if __name__ == "__main__":
    print(json.dumps(answer(sys.argv[1], float(sys.argv[2]))))
