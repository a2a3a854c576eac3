"""The Celery application (``celery -A jobs.worker worker``).

The broker is kombu's filesystem transport in ``$JOBS_DATA/broker`` (no broker server needed); the
result backend is disabled. Every finished task drops a marker file in ``$JOBS_DATA/done`` so the
test knows when the worker is through.
"""
import os

from celery import Celery

DATA = os.environ["JOBS_DATA"]
BROKER = os.path.join(DATA, "broker")
for folder in ("broker", "done"):
    os.makedirs(os.path.join(DATA, folder), exist_ok=True)

app = Celery("jobs", include=["jobs.tasks"])
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={"data_folder_in": BROKER, "data_folder_out": BROKER, "polling_interval": 0.05},
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    result_backend=None,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
