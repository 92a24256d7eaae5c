"""The real broker as a child process on 127.0.0.1 port 0 (as tests/Shared/BrokerChildProcess.cs does for C#)."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SERVER_DLL = os.path.join(ROOT, "src", "Broker.Server", "bin", "Release", "net10.0", "Broker.Server.dll")
LISTENING = re.compile(r"broker listening on https?://([^/\s]+)")
HTTP_LISTENING = re.compile(r"broker http on (https?://[^/\s]+)")
START_DEADLINE = 60.0
DEADLINE = 30.0  # every wait in the tests: for events, never for correctness


def ensure_built():
    """Builds the server once when its Release build is missing (the README's test command builds it first)."""
    if not os.path.exists(SERVER_DLL):
        subprocess.run(["dotnet", "build", os.path.join(ROOT, "src", "Broker.Server"), "-c", "Release", "--nologo",
                        "-v", "quiet"], check=True)


class BrokerProcess:
    """``start()`` launches the broker on a data folder (a new temp one unless given) and waits for its address."""

    def __init__(self, data_dir=None, extra_args=(), port=0):
        self.port = port  # 0: any free port; a fixed one lets a restarted broker keep its address
        self.owns_data = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="broker-py-")
        self.extra_args = list(extra_args)
        self.process = None
        self.address = None
        self.http_address = None  # the HTTP/1.1 listener (SQS API, metrics): "http://127.0.0.1:<port>"
        self.output = []

    def start(self):
        ensure_built()
        self.process = subprocess.Popen(
            ["dotnet", SERVER_DLL, "--port", str(self.port), "--http-port", "0", "--data", self.data_dir] + self.extra_args,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        found = threading.Event()

        def read():
            for line in self.process.stdout:
                self.output.append(line)
                http = HTTP_LISTENING.search(line)
                if http:
                    self.http_address = http.group(1)
                    found.set()  # printed after the gRPC line: both are known now
                match = LISTENING.search(line)
                if match:
                    self.address = match.group(1)
            found.set()
        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(START_DEADLINE) or self.address is None:
            self.kill()
            raise RuntimeError("the broker did not start:\n" + "".join(self.output))
        return self

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE)
        self._close_output()

    def _close_output(self):
        if self.process and self.process.poll() is not None and not self.process.stdout.closed:
            self._reader.join(DEADLINE)  # it ends at the output's end, once the process is gone
            self.process.stdout.close()

    def stop(self):
        """SIGTERM: the broker drains and exits 0."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(DEADLINE)
        self._close_output()

    def close(self):
        self.kill()
        if self.owns_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def start_requiring_keys(extra_args=()):
    """A broker with RequireApiKeys on, and the token of the key with every permission its first start made."""
    broker = BrokerProcess(extra_args=["--RequireApiKeys", "true"] + list(extra_args)).start()
    with open(os.path.join(broker.data_dir, "bootstrap.token")) as f:
        return broker, f.read().strip()


class BrokerTestCase(unittest.TestCase):
    """Tests of one class share one child broker, started before the first and stopped after the last."""

    @classmethod
    def setUpClass(cls):
        cls.broker = BrokerProcess().start()

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()
