"""Producer: ``send`` buffers, a background thread publishes in batches, ``flush`` waits for durability."""
import collections
import datetime
import logging
import math
import threading
import time

import grpc

from . import _json
from ._connection import RETRYABLE, Listeners, channel_credentials, parse_listeners, wants_tls
from ._generated import broker_pb2, broker_pb2_grpc
from .errors import BrokerError, BufferFull, PublishFailed

log = logging.getLogger("broker_client.producer")

_Item = collections.namedtuple("_Item", "topic message size")


class Producer:
    """Publishes messages without blocking the caller on the network.

    ``send`` puts a message in a bounded buffer and returns. One background thread takes what the buffer holds, waits
    up to ``linger`` seconds for more, and publishes it per topic in batches of at most ``max_batch_messages``
    messages / ``max_batch_bytes`` bytes; each publish returns once its batch is durable (fsynced) on the broker.
    When the buffer holds ``buffer_messages`` messages or ``buffer_bytes`` bytes, ``send`` waits for room
    (backpressure) instead of growing without limit.

    A publish that fails with UNAVAILABLE (broker down, restarting, shutting down) is retried with exponential backoff
    on the next listener, until ``delivery_timeout`` seconds have passed; other errors fail the batch at once. A retry
    after a publish whose answer was lost can store a batch twice (at-least-once; docs/semantics.md). Failures are
    reported by ``flush()``.

    ``trace_headers``: a callable without arguments that returns headers (a dict of str, or None) for each message,
    called by ``send`` on the caller's thread, so it sees the caller's current span. Meant for the W3C trace context,
    as the .NET SDK adds it: with OpenTelemetry, a function that calls ``opentelemetry.propagate.inject`` on a new dict
    and returns it (docs/python-client.md, "Traces"). A message that already has a ``traceparent`` header gets nothing
    from it, and headers given to ``send`` win over the hook's. An exception from the hook is logged and the message
    is sent without its headers: tracing never stops a publish.

    TLS: ``tls=True`` (or ``https://`` listeners, or a ``ca_file``) dials every listener over TLS; ``ca_file`` (PEM)
    trusts only the CAs in it instead of the system's roots.
    """

    def __init__(self, listeners, port=None, linger=0.005, max_batch_messages=1000, max_batch_bytes=4 << 20,
                 buffer_messages=100000, buffer_bytes=64 << 20, delivery_timeout=120.0, request_timeout=30.0,
                 retry_backoff=0.05, max_retry_backoff=2.0, api_key=None, trace_headers=None, tls=None, ca_file=None):
        self._listeners = Listeners(parse_listeners(listeners, port), api_key,
                                    channel_credentials(wants_tls(listeners, tls, ca_file), ca_file))
        self._stub = broker_pb2_grpc.PublisherStub(self._listeners.channel)
        self.linger = float(linger)
        self.max_batch_messages = int(max_batch_messages)
        self.max_batch_bytes = int(max_batch_bytes)
        self.buffer_messages = int(buffer_messages)
        self.buffer_bytes = int(buffer_bytes)
        self.delivery_timeout = float(delivery_timeout)
        self.request_timeout = float(request_timeout)
        self.retry_backoff = float(retry_backoff)
        self.max_retry_backoff = float(max_retry_backoff)
        if trace_headers is not None and not callable(trace_headers):
            raise TypeError("trace_headers must be a callable returning a dict of headers, or None")
        self.trace_headers = trace_headers

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._buffer = collections.deque()
        self._buffered_bytes = 0
        self._sent = 0          # messages accepted by send()
        self._completed = 0     # a prefix of them: published or failed
        self._failures = []
        self._flushing = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="broker-producer", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------------------------------
    # API

    def send(self, topic, value, key=None, headers=None, timeout=None, delay=None, eta=None, message_id=None,
             priority=0):
        """Buffers one message for ``topic`` and returns; never waits for the network.

        ``value``: bytes as they are, anything else JSON-encoded (datetimes as ISO strings, other objects as str()).
        Waits for room while the buffer is full; with ``timeout`` (seconds), raises BufferFull after that long.
        Scheduled delivery, as Celery's ``countdown`` and ``eta``: ``delay`` (seconds, or a ``timedelta``) after the
        broker receives it, or at ``eta`` (an aware ``datetime``, or Unix seconds), and not before; give one of them.
        The message is durable when its publish is confirmed, and is delivered to every group at that time.
        ``message_id`` (a string of 1 to 128 UTF-8 bytes): a send with the id of a message sent to the topic within the
        broker's deduplication window (5 minutes by default, also across restarts) stores nothing, so a retried or
        repeated send of one job enqueues it once. ``priority`` (0, the lowest, to 255): groups with priority levels hand
        out higher priorities first.
        """
        message = broker_pb2.Message(payload=_json.encode(value))
        if key is not None:
            message.key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if headers:
            message.headers.update(headers)
        if self.trace_headers is not None and "traceparent" not in message.headers:
            _add_trace_headers(message, self.trace_headers)
        _schedule(message, delay, eta)
        if message_id is not None:
            message.message_id = message_id
        if priority:
            message.priority = int(priority)
        size = len(message.payload) + len(message.key) + sum(len(k) + len(v) for k, v in message.headers.items())
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            if self._closed:
                raise RuntimeError("the producer is closed")
            while self._buffer and (len(self._buffer) >= self.buffer_messages
                                    or self._buffered_bytes + size > self.buffer_bytes):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BufferFull("the producer's buffer stayed full for %s s" % timeout)
                self._changed.wait(remaining)
            self._buffer.append(_Item(topic, message, size))
            self._buffered_bytes += size
            self._sent += 1
            # Wake the publisher only when it has something new to do: the first message (it waits for one) or a
            # full batch (it lingers for one). A wake-up per send cost a thread switch per message.
            if len(self._buffer) == 1 or len(self._buffer) == self.max_batch_messages:
                self._changed.notify_all()

    def flush(self, timeout=None):
        """Returns once every message sent before this call is durable on the broker, or has failed.

        Raises PublishFailed (with ``.failures``) when any message failed since the last flush, and TimeoutError when
        ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            target = self._sent
            self._flushing += 1
            self._changed.notify_all()
            try:
                while self._completed < target:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("flush: %d message(s) not yet durable" % (target - self._completed))
                    self._changed.wait(remaining)
            finally:
                self._flushing -= 1
            failures, self._failures = self._failures, []
        if failures:
            raise PublishFailed(failures)

    def get_connection(self, timeout=5.0):
        """True when one of the listeners accepts a connection within ``timeout`` seconds."""
        return self._listeners.wait_ready(timeout)

    def close(self, timeout=None):
        """Flushes (raising PublishFailed as flush does), then stops the background thread and closes the channel."""
        try:
            self.flush(timeout)
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()
            self._thread.join(timeout)
            self._listeners.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------------------------------------------------
    # The background thread

    def _run(self):
        while True:
            items = self._take()
            if items is None:
                return
            failures = []
            by_topic = collections.OrderedDict()
            for item in items:
                by_topic.setdefault(item.topic, []).append(item)
            for topic, topic_items in by_topic.items():
                for batch in self._split(topic_items):
                    try:
                        error = self._publish(topic, batch)
                    except Exception as unexpected:  # never let the thread die: flush would wait forever
                        log.exception("publish to %s failed", topic)
                        error = BrokerError("publish failed: %r" % unexpected)
                    if error is not None:
                        failures.extend((topic, item.message.payload, error) for item in batch)
            with self._changed:
                # Completed only after the whole take: completions stay a prefix of the send order, as flush needs.
                self._completed += len(items)
                self._failures.extend(failures)
                self._changed.notify_all()

    def _take(self):
        """Waits for messages, lingers for more, and takes up to one round of batches from the buffer."""
        with self._changed:
            while not self._buffer:
                if self._closed:
                    return None
                self._changed.wait()
            if self.linger > 0 and not self._flushing and not self._closed:
                deadline = time.monotonic() + self.linger
                while len(self._buffer) < self.max_batch_messages and not self._flushing and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
            items = []
            limit = self.max_batch_messages * 16
            while self._buffer and len(items) < limit:
                item = self._buffer.popleft()
                self._buffered_bytes -= item.size
                items.append(item)
            self._changed.notify_all()  # room for blocked senders
            return items

    def _split(self, items):
        batch, size = [], 0
        for item in items:
            if batch and (len(batch) >= self.max_batch_messages or size + item.size > self.max_batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += item.size
        if batch:
            yield batch

    def _publish(self, topic, batch):
        """Publishes one batch, retrying UNAVAILABLE across listeners; returns None or the BrokerError."""
        request = broker_pb2.PublishRequest(topic=topic, messages=[item.message for item in batch])
        give_up = time.monotonic() + self.delivery_timeout
        backoff = self.retry_backoff
        while True:
            try:
                self._stub.Publish(request, timeout=self.request_timeout)
                return None
            except grpc.RpcError as rpc_error:
                error = BrokerError.from_rpc_error(rpc_error)
                if rpc_error.code() not in RETRYABLE or time.monotonic() + backoff > give_up:
                    log.warning("publish of %d message(s) to %s failed: %s", len(batch), topic, error)
                    return error
                log.info("publish to %s via %s: %s; retrying in %.2f s", topic, self._listeners.target, error, backoff)
                time.sleep(backoff)  # backoff between retries, not a wait for correctness
                backoff = min(backoff * 2, self.max_retry_backoff)
                if len(self._listeners.targets) > 1:
                    self._listeners.rotate()
                    self._stub = broker_pb2_grpc.PublisherStub(self._listeners.channel)


def _add_trace_headers(message, trace_headers):
    """The hook's headers, for those the message does not have; a failing hook costs the trace, never the message."""
    try:
        extra = {name: value for name, value in (trace_headers() or {}).items() if name not in message.headers}
        if not all(isinstance(name, str) and isinstance(value, str) for name, value in extra.items()):
            raise TypeError("trace_headers must return a dict of str to str, not %r" % (extra,))
    except Exception:
        log.warning("trace_headers failed; the message is sent without trace context", exc_info=True)
        return
    message.headers.update(extra)  # all or nothing: checked above, so a bad value never leaves half a context


def _schedule(message, delay, eta):
    """Sets a message's delay or delivery time; refuses both at once, negative delays and naive datetimes."""
    if delay is not None and eta is not None:
        raise ValueError("give delay or eta, not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, datetime.timedelta) else float(delay)
        if seconds < 0:
            raise ValueError("delay must not be negative")
        message.delay_ms = int(math.ceil(seconds * 1000))
    elif eta is not None:
        if isinstance(eta, datetime.datetime):
            if eta.tzinfo is None:
                raise ValueError("eta must be an aware datetime (with a timezone), or Unix seconds")
            eta = eta.timestamp()
        message.deliver_at_unix_ms = int(math.ceil(float(eta) * 1000))
