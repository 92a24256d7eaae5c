"""Celery on this broker by configuration alone: kombu's SQS transport (Debian's celery 5.2 / kombu 5.2, botocore's
query protocol and kombu's own pycurl client for receives) against the real broker's SQS API."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import boto3

from .broker_process import DEADLINE, BrokerTestCase

TASKS = '''
import os
from celery import Celery

app = Celery("tasks", broker="sqs://any:secret@" + os.environ["BROKER_SQS_ADDRESS"])
app.conf.broker_transport_options = {"region": "us-east-1", "is_secure": False, "visibility_timeout": 60,
                                     "polling_interval": 0.1, "wait_time_seconds": 1}
app.conf.task_default_queue = os.environ["BROKER_SQS_QUEUE"]


@app.task
def add(x, y):
    with open(os.environ["RESULTS"], "a") as results:
        results.write("%d\\n" % (x + y))
    return x + y
'''


class CeleryTest(BrokerTestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="broker-celery-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        with open(os.path.join(self.folder, "tasks.py"), "w") as module:
            module.write(TASKS)
        self.queue = "celery-%s" % uuid.uuid4().hex[:8]
        self.results = os.path.join(self.folder, "results.txt")
        self.env = dict(os.environ, BROKER_SQS_ADDRESS=self.broker.http_address[len("http://"):],
                        BROKER_SQS_QUEUE=self.queue, RESULTS=self.results, PYTHONPATH=self.folder)

    def run_python(self, code):
        done = subprocess.run([sys.executable, "-c", code], cwd=self.folder, env=self.env, capture_output=True,
                              text=True, timeout=DEADLINE * 2)
        self.assertEqual(0, done.returncode, done.stdout + done.stderr)

    def results_so_far(self):
        if not os.path.exists(self.results):
            return []
        with open(self.results) as results:
            return [int(line) for line in results.read().split()]

    def test_a_celery_worker_runs_every_task_sent_through_the_sqs_api_once(self):
        self.run_python("from tasks import add\nfor i in range(20):\n    add.delay(i, 100)\n")
        sqs = boto3.client("sqs", endpoint_url=self.broker.http_address, region_name="us-east-1",
                           aws_access_key_id="any", aws_secret_access_key="any")
        self.addCleanup(sqs.close)
        url = sqs.get_queue_url(QueueName=self.queue)["QueueUrl"]

        def queue_empty():
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            return attributes["ApproximateNumberOfMessages"] == "0" and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"

        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "solo", "--without-heartbeat",
                                   "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
                                  cwd=self.folder, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # Every task ran, and every message was deleted after it ran (the queue is empty, nothing in flight).
            deadline = time.monotonic() + DEADLINE * 2
            while not (len(self.results_so_far()) >= 20 and queue_empty()) and time.monotonic() < deadline and worker.poll() is None:
                time.sleep(0.05)  # polling the worker's effects, not waiting for correctness
            drained = queue_empty()
        finally:
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=DEADLINE)
        self.assertEqual(list(range(100, 120)), sorted(self.results_so_far()), output)
        self.assertTrue(drained, output)
