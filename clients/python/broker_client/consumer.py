"""Consumer: one Consume stream, iteration with ack-on-next, explicit ack/nack, batches, automatic lease extension."""
import itertools
import logging
import queue
import threading
import time

import grpc

from . import _json
from ._connection import Listeners, channel_credentials, parse_listeners, wants_tls
from ._generated import broker_pb2, broker_pb2_grpc
from .errors import BrokerError

log = logging.getLogger("broker_client.consumer")

_START = {"earliest": broker_pb2.START_POSITION_EARLIEST, "latest": broker_pb2.START_POSITION_LATEST}

# Iteration's implicit acks go out together: one frame per ACK_BATCH messages, or sooner when ACK_LINGER seconds have
# passed since the oldest (checked on each iteration and by the lease extender) or no message is waiting (a frame per
# message costs a stream write each: 4k msg/s). Until its ack is sent a message stays held, so its lease is extended.
ACK_BATCH = 64
ACK_LINGER = 0.05


class Message:
    """One delivery. ``value`` is the payload decoded as JSON; ``payload`` the raw bytes."""

    __slots__ = ("topic", "offset", "key", "headers", "payload", "attempt", "token", "publish_time_unix_ms",
                 "deliver_at_unix_ms", "scheduled_offset",
                 "_consumer", "_session", "_handed_at", "_settled")

    def __init__(self, delivery, consumer, session):
        self.topic = delivery.topic
        self.offset = delivery.offset
        self.key = delivery.key or None
        self.headers = dict(delivery.headers)
        self.payload = delivery.payload
        self.attempt = delivery.attempt
        self.token = delivery.token
        self.publish_time_unix_ms = delivery.publish_time_unix_ms
        # A scheduled message: when it was due, and the offset its publish was answered with (None otherwise).
        scheduled = delivery.scheduled if delivery.HasField("scheduled") else None
        self.deliver_at_unix_ms = scheduled.deliver_at_unix_ms if scheduled is not None else None
        self.scheduled_offset = scheduled.published_offset if scheduled is not None else None
        self._consumer = consumer
        self._session = session
        self._handed_at = None
        self._settled = False

    @property
    def value(self):
        return _json.decode(self.payload)

    def ack(self):
        self._consumer.ack(self)

    def nack(self, delay=0, reason=None, dead_letter=False):
        self._consumer.nack(self, delay=delay, reason=reason, dead_letter=dead_letter)

    def __repr__(self):
        return "Message(topic=%r, offset=%d, attempt=%d)" % (self.topic, self.offset, self.attempt)


class _Session:
    """One Consume stream: a request queue feeding the call, a reader thread, pending settle answers by request id."""

    def __init__(self, stub, subscribe, deliveries):
        self.requests = queue.Queue()
        self.requests.put(broker_pb2.ConsumeRequest(subscribe=subscribe))
        self.pending = {}
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.visibility_timeout = None
        self.stopped = threading.Event()  # no delivery follows: the answer to our stop, or the broker draining
        self.ended = threading.Event()
        self.sending_closed = False  # half-closed when the broker said this stream is done (shutdown)
        self.error = None
        self._deliveries = deliveries
        self._call = stub.Consume(iter(self.requests.get, None))
        self._reader = threading.Thread(target=self._read, name="broker-consumer-reader", daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for response in self._call:
                kind = response.WhichOneof("kind")
                if kind == "subscribed":
                    self.visibility_timeout = response.subscribed.visibility_timeout_ms / 1000.0
                    self.subscribed.set()
                elif kind == "deliveries":
                    for delivery in response.deliveries.items:
                        self._deliveries.put((self, delivery))
                elif kind in ("stopped", "draining"):
                    self.stopped.set()
                elif kind == "drained":
                    # The broker is shutting down and this stream is done: half-close. The broker ends the stream only
                    # then, so the answers it sent before closing its connections are all read.
                    with self.lock:
                        self.sending_closed = True
                        self.requests.put(None)
                elif kind == "settled":
                    with self.lock:
                        waiter = self.pending.pop(response.settled.request_id, None)
                    if waiter is not None:
                        waiter[1].append(response.settled)
                        waiter[0].set()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = BrokerError.from_rpc_error(error)
        finally:
            self.ended.set()
            self.stopped.set()
            self.subscribed.set()
            with self.lock:
                waiters, self.pending = list(self.pending.values()), {}
            for event, _ in waiters:
                event.set()
            self._deliveries.put((self, None))  # wakes a waiting reader

    def send(self, request_id, request):
        """Sends a settle frame; returns a function that waits for its SettleResponse (None if the stream ended)."""
        event, answer = threading.Event(), []
        with self.lock:
            if self.ended.is_set() or self.sending_closed:
                event.set()
            else:
                self.pending[request_id] = (event, answer)
                self.requests.put(request)

        def wait(timeout=None):
            event.wait(timeout)
            return answer[0] if answer else None
        return wait

    def stop(self, timeout):
        """Asks the broker to deliver nothing more; True once it confirmed (what was received is then all there is)."""
        if not self.ended.is_set():
            self.requests.put(broker_pb2.ConsumeRequest(stop=broker_pb2.Stop()))
        return self.stopped.wait(timeout) and not self.ended.is_set()

    def close(self, timeout=5.0):
        self.requests.put(None)  # half-close: the broker gives back what this stream still holds
        if not self.ended.wait(timeout):
            self._call.cancel()


class RetryBackoff:
    """A group's retry schedule, applied by the broker to failures that name no delay (a ``nack()`` without one, a
    lease that ran out): after failed delivery n a message waits ``min(maximum, initial * multiplier ** (n - 1))``
    seconds, shortened at random by up to ``jitter`` of itself. ``RetryBackoff(1, 600, jitter=0.2)``: 1 s, 2 s, 4 s, ...
    up to 10 minutes."""

    __slots__ = ("initial", "maximum", "multiplier", "jitter")

    def __init__(self, initial, maximum=None, multiplier=2.0, jitter=0.0):
        self.initial = float(initial)
        self.maximum = float(maximum) if maximum is not None else self.initial
        self.multiplier = float(multiplier)
        self.jitter = float(jitter)

    def to_proto(self):
        # Out-of-range values go as they are (saturated at the field's range) for the broker to refuse with its reason.
        def millis(seconds):
            return max(0, min(int(round(seconds * 1000)), 2**32 - 1))
        return broker_pb2.RetryBackoff(initial_ms=millis(self.initial), max_ms=millis(self.maximum),
                                       multiplier=self.multiplier, jitter=self.jitter)


class Consumer:
    """Consumes ``topic`` in ``group`` (created on first use, starting at ``start``: "earliest" or "latest").

    Iterating yields messages and acknowledges the previous one when the next is requested (at-least-once: a consumer
    that dies while it holds a message gets it back). ``ack()`` / ``nack()`` settle explicitly; ``batch()`` hands out
    several messages that the caller settles itself, usually with one ``ack(messages)`` after its database commit.

    While the application holds a message its lease is extended automatically, for at most ``max_timeout`` seconds
    from when it was handed out; after that the lease runs out and the message goes to another consumer. When the
    stream breaks (broker restart) the consumer subscribes again, with backoff, across the listed listeners; what it
    held then comes back from the broker (its attempt increased).

    ``close()`` acknowledges the last message iteration handed out, as Kafka's auto-commit consumer commits what it
    read (so estela sees no redelivery of it); with ``strict=True`` it releases it instead (delivered again, not counted
    as a failed delivery). Messages from ``batch()`` that were never settled, and messages received but never handed
    out, are always released.

    ``max_deliveries``, ``dead_letter_topic``, ``retry_backoff`` (a ``RetryBackoff``), ``ordered_by_key`` (messages
    with one key delivered one at a time, in publish order), and the routing filter ``key_patterns`` (AMQP topic
    patterns: "orders.*.eu", "logs.#", or exact keys) and ``header_filter`` (a dict every message must carry), and the
    delivery order ``priority_levels`` (2 to 32: higher ``priority`` first) or ``newest_first`` (LIFO) set the group's
    rules when this consumer creates the group; an existing group keeps its own.

    TLS: ``tls=True`` (or ``https://`` listeners, or a ``ca_file``) dials every listener over TLS; ``ca_file`` (PEM)
    trusts only the CAs in it instead of the system's roots.
    """

    def __init__(self, topic, group, listeners, port=None, start="earliest", max_in_flight=256,
                 visibility_timeout=None, max_timeout=300.0, strict=False, settle_timeout=30.0,
                 reconnect_timeout=120.0, max_deliveries=None, dead_letter_topic=None, retry_backoff=None,
                 ordered_by_key=False, key_patterns=None, header_filter=None, priority_levels=0, newest_first=False,
                 api_key=None, tls=None, ca_file=None):
        self.topic = topic
        self.group = group
        self.max_timeout = float(max_timeout)
        self.strict = bool(strict)
        self.settle_timeout = float(settle_timeout)
        self.reconnect_timeout = float(reconnect_timeout)
        self._subscribe = broker_pb2.Subscribe(topic=topic, group=group, max_in_flight=int(max_in_flight),
                                               start=_START[start])
        if visibility_timeout:
            self._subscribe.visibility_timeout_ms = int(float(visibility_timeout) * 1000)
        # The group's rules: they apply when this consumer creates the group (an existing group keeps its own).
        if max_deliveries is not None:
            self._subscribe.group_settings.max_deliveries = int(max_deliveries)
        if dead_letter_topic:
            self._subscribe.group_settings.dead_letter_topic = dead_letter_topic
        if retry_backoff is not None:
            self._subscribe.group_settings.retry_backoff.CopyFrom(retry_backoff.to_proto())
        if ordered_by_key:
            self._subscribe.group_settings.ordered_by_key = True
        if priority_levels:
            self._subscribe.group_settings.priority_levels = int(priority_levels)
        if newest_first:
            self._subscribe.group_settings.newest_first = True
        if key_patterns or header_filter:
            self._subscribe.group_settings.filter.key_patterns.extend(key_patterns or [])
            self._subscribe.group_settings.filter.headers.update(header_filter or {})
        self._listeners = Listeners(parse_listeners(listeners, port), api_key,
                                    channel_credentials(wants_tls(listeners, tls, ca_file), ca_file))
        self._deliveries = queue.Queue()
        self._request_ids = itertools.count(1)
        self._held = {}            # (offset, token) -> Message handed to the application, not settled
        self._held_lock = threading.Lock()
        self._last = None          # the last message iteration handed out
        self._acks_due = []        # iteration's implicit acks not yet sent (see ACK_BATCH), still in _held
        self._acks_due_since = 0.0
        self._acks_lock = threading.Lock()
        self._closed = threading.Event()
        self._session = None
        self._connect(deadline=time.monotonic() + self.reconnect_timeout)
        self._extender = threading.Thread(target=self._extend_leases, name="broker-consumer-extender", daemon=True)
        self._extender.start()

    # ----------------------------------------------------------------------------------------------------------
    # Receiving

    def __iter__(self):
        return self

    def __next__(self):
        self._ack_last()
        message = self._receive(None)
        self._last = message
        return message

    def poll(self, timeout):
        """One message within ``timeout`` seconds or None; like iteration, acks the previous one first."""
        self._ack_last()
        self._last = self._receive(timeout)
        return self._last

    def _ack_last(self):
        """Iteration's implicit ack of the message handed out before, batched with the next few (ACK_BATCH)."""
        last, self._last = self._last, None
        if last is None or last._settled:
            return
        last._settled = True  # to the application; it stays in _held (its lease extended) until the ack is sent
        with self._acks_lock:
            if not self._acks_due:
                self._acks_due_since = time.monotonic()
            self._acks_due.append(last)
            due = len(self._acks_due) >= ACK_BATCH
        if due:
            self._send_acks_due()
        else:
            self._send_acks_due(older_than=ACK_LINGER)

    def _send_acks_due(self, older_than=None):
        """Sends the pending implicit acks (all, or only when the oldest has waited ``older_than`` seconds)."""
        with self._acks_lock:
            if not self._acks_due or (older_than is not None and time.monotonic() - self._acks_due_since < older_than):
                return []
            due, self._acks_due = self._acks_due, []
        return self._settle_async("ack", due)

    def batch(self, max_count=100, max_wait=1.0):
        """Up to ``max_count`` messages: waits up to ``max_wait`` seconds for the first, then takes what arrives until
        ``max_count`` or ``max_wait`` from the call. May be empty. The caller settles them (``ack(messages)``)."""
        deadline = time.monotonic() + max_wait
        messages = []
        while len(messages) < max_count:
            remaining = deadline - time.monotonic()
            message = self._receive(max(0.0, remaining)) if remaining > 0 or not messages else self._receive(0)
            if message is None:
                break
            messages.append(message)
        return messages

    def _receive(self, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed.is_set():
                raise StopIteration
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                session, delivery = self._deliveries.get_nowait()
            except queue.Empty:
                self._send_acks_due()  # nothing waiting: the acks go now rather than wait for more
                try:
                    session, delivery = self._deliveries.get(timeout=remaining) if remaining != 0 else self._deliveries.get_nowait()
                except queue.Empty:
                    return None
            if delivery is None:
                if session is self._session and session.ended.is_set() and not self._closed.is_set():
                    self._reconnect(session)
                continue
            if session is not self._session:
                continue  # from a stream that ended: the broker has given it back already
            if session.stopped.is_set():
                # The broker is draining: hand out nothing more; give it back unstarted before the stream ends.
                self._settle_async("release", [Message(delivery, self, session)])
                continue
            message = Message(delivery, self, session)
            message._handed_at = time.monotonic()
            with self._held_lock:
                self._held[(message.offset, message.token)] = message
            return message

    # ----------------------------------------------------------------------------------------------------------
    # Settling

    def ack(self, messages):
        """Acknowledges one message or a list; returns once the acks are durable. Raises BrokerError if refused."""
        self._settle_and_wait("ack", messages)

    def nack(self, messages, delay=0, reason=None, dead_letter=False):
        """This work failed. Retry: visible again after ``delay`` seconds (``reason`` kept as the last error); after the
        group's max deliveries it becomes a dead letter. ``dead_letter=True``: to the dead-letter topic now."""
        self._settle_and_wait("nack", messages, delay=delay, reason=reason, dead_letter=dead_letter)

    def release(self, messages):
        """Never started: visible again at once, not counted as a failed delivery."""
        self._settle_and_wait("release", messages)

    def _settle_and_wait(self, kind, messages, **options):
        if isinstance(messages, Message):
            messages = [messages]
        for wait, group in self._settle_async(kind, messages, **options):
            answer = wait(self.settle_timeout)
            if answer is None:
                raise BrokerError("%s of %d message(s) not confirmed: the stream ended (they come back)" % (kind, len(group)),
                                  "UNAVAILABLE")
            if answer.failures:
                raise BrokerError.from_error_message(answer.failures[0].error)

    def _settle_async(self, kind, messages, delay=0, reason=None, dead_letter=False):
        by_session = {}
        with self._held_lock:
            for message in messages:
                message._settled = True
                self._held.pop((message.offset, message.token), None)
                by_session.setdefault(message._session, []).append(message)
        waits = []
        for session, group in by_session.items():
            request_id = next(self._request_ids)
            refs = [broker_pb2.DeliveryRef(offset=m.offset, token=m.token) for m in group]
            if kind == "ack":
                request = broker_pb2.ConsumeRequest(ack=broker_pb2.Ack(request_id=request_id, deliveries=refs))
            elif kind == "release":
                request = broker_pb2.ConsumeRequest(release=broker_pb2.Release(request_id=request_id, deliveries=refs))
            elif kind == "extend":
                request = broker_pb2.ConsumeRequest(extend=broker_pb2.Extend(request_id=request_id, deliveries=refs))
            else:
                nack = broker_pb2.Nack(request_id=request_id, deliveries=refs)
                if dead_letter:
                    nack.action = broker_pb2.NACK_ACTION_DEAD_LETTER
                    nack.reason = reason or "dead-lettered by the consumer"
                else:
                    nack.delay_ms = int(delay * 1000)
                    if reason:
                        nack.last_error = reason
                request = broker_pb2.ConsumeRequest(nack=nack)
            waits.append((session.send(request_id, request), group))
        return waits

    def _extend_leases(self):
        """Every quarter second (or third of a lease, if shorter): sends acks held back for a batch that waited
        ACK_LINGER; every third of the lease: extends the leases of what the application holds (acks pending included)."""
        last_extend = time.monotonic()
        while not self._closed.wait(min(0.25, self._extend_interval())):
            self._send_acks_due(older_than=ACK_LINGER)
            now = time.monotonic()
            if now - last_extend < self._extend_interval():
                continue
            last_extend = now
            with self._held_lock:
                due = [m for m in self._held.values() if now - m._handed_at < self.max_timeout]
            if due:
                by_session = {}
                for message in due:
                    by_session.setdefault(message._session, []).append(message)
                for session, group in by_session.items():
                    request_id = next(self._request_ids)
                    refs = [broker_pb2.DeliveryRef(offset=m.offset, token=m.token) for m in group]
                    session.send(request_id, broker_pb2.ConsumeRequest(
                        extend=broker_pb2.Extend(request_id=request_id, deliveries=refs)))

    def _extend_interval(self):
        session = self._session
        lease = session.visibility_timeout if session is not None and session.visibility_timeout else 30.0
        return max(0.05, lease / 3.0)

    # ----------------------------------------------------------------------------------------------------------
    # Connection

    def _connect(self, deadline):
        backoff = 0.05
        while True:
            stub = broker_pb2_grpc.ConsumerStub(self._listeners.channel)
            session = _Session(stub, self._subscribe, self._deliveries)
            session.subscribed.wait(max(0.1, deadline - time.monotonic()))
            if session.visibility_timeout is not None and not session.ended.is_set():
                self._session = session
                return
            session.close(timeout=0)
            error = session.error or BrokerError("subscribe to %s timed out" % self._listeners.target, "UNAVAILABLE")
            if error.status != "UNAVAILABLE" or time.monotonic() + backoff > deadline or self._closed.is_set():
                raise error
            log.info("subscribe via %s: %s; retrying in %.2f s", self._listeners.target, error, backoff)
            time.sleep(backoff)  # backoff between attempts, not a wait for correctness
            backoff = min(backoff * 2, 2.0)
            if len(self._listeners.targets) > 1:
                self._listeners.rotate()

    def _reconnect(self, ended):
        log.warning("consume stream of %s/%s ended (%s); subscribing again", self.topic, self.group, ended.error)
        with self._held_lock:
            self._held.clear()  # the broker gave them back when the stream ended
        self._connect(deadline=time.monotonic() + self.reconnect_timeout)

    def get_connection(self, timeout=5.0):
        """True while the consume stream is subscribed, or when a listener accepts a connection within ``timeout``."""
        session = self._session
        if session is not None and not session.ended.is_set():
            return True
        return self._listeners.wait_ready(timeout)

    def close(self):
        """Settles the last message iteration handed out (ack, or release when strict), releases everything else it
        holds or received, and ends the stream. Waits for those answers (up to settle_timeout).

        Before releasing, it asks the broker to stop delivering (a stop frame) and waits for the answer, so nothing
        arrives after the releases: a release is not a failed delivery, while a message the stream still held at its
        end would count as one."""
        if self._closed.is_set():
            return
        session = self._session
        if self.strict:
            self._last = None  # still held: released below with the rest
        else:
            self._ack_last()
        waits = self._send_acks_due()
        if session is not None:
            session.stop(self.settle_timeout)
        with self._held_lock:
            unsettled = [m for m in self._held.values() if m._session is session and not m._settled]
        while True:
            try:
                other, delivery = self._deliveries.get_nowait()
            except queue.Empty:
                break
            if delivery is not None and other is session:
                unsettled.append(Message(delivery, self, session))
        if unsettled:
            waits += self._settle_async("release", unsettled)
        for wait, _ in waits:
            wait(self.settle_timeout)
        self._closed.set()
        if session is not None:
            session.close()
        self._listeners.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
