"""estela-queue-adapter's interface on this broker: ``QUEUE_PLATFORM=broker``.

estela reads ``QUEUE_PLATFORM`` to pick a platform and passes every ``QUEUE_PLATFORM_<X>`` variable to the
platform's constructor as the keyword argument ``x`` (lower-cased name, string value); keyword arguments given to
``get_*_interface`` override them. Understood here: ``listeners`` (comma-separated hosts, ``host`` or ``host:port``),
``port`` (default 7100), ``topic``, ``max_timeout`` (or ``queue_max_timeout``: seconds a consumer may hold a message,
its lease extended meanwhile); also ``group`` (default ``group_<topic>``), ``linger``, ``max_batch_messages``, ``buffer_messages``,
``connection_timeout``, ``strict`` ("true": close() releases instead of acking), ``api_key`` (for a broker that
requires keys: ``QUEUE_PLATFORM_API_KEY``, docs/security.md), ``tls`` ("true": TLS to listeners given without a
scheme) and ``ca_file`` (PEM of the CA to trust instead of the system's roots; implies TLS); from code only,
``trace_headers`` (the producer's hook for trace context, see Producer). Others are accepted and ignored:
deployments pass every ``QUEUE_PLATFORM*`` variable to every pod.
"""
import logging
import os

from .consumer import Consumer
from .errors import PublishFailed
from .producer import Producer

PLATFORM = "broker"
queue_noisy_libraries = ["grpc", "grpc._channel", "grpc._cython.cygrpc"]

log = logging.getLogger("broker_client.estela")


def get_queue_env_vars():
    """Every environment variable whose name starts with QUEUE_PLATFORM, with its value."""
    return {name: value for name, value in os.environ.items() if name.startswith("QUEUE_PLATFORM")}


def _settings(kwargs):
    settings = {name[len("QUEUE_PLATFORM_"):].lower(): value
                for name, value in get_queue_env_vars().items() if name.startswith("QUEUE_PLATFORM_")}
    settings.update(kwargs)
    return settings


def _check_platform():
    platform = os.environ.get("QUEUE_PLATFORM", PLATFORM)
    if platform != PLATFORM:
        raise ValueError("QUEUE_PLATFORM is %r; this adapter is the %r platform" % (platform, PLATFORM))


def _listeners(settings):
    listeners = settings.get("listeners")
    if not listeners or not str(listeners).strip(" ,"):
        raise ValueError("QUEUE_PLATFORM_LISTENERS is not set: the broker's addresses, comma-separated "
                         "(host or host:port; QUEUE_PLATFORM_PORT for the rest, default 7100)")
    return listeners


def _flag(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _tls(settings):
    """QUEUE_PLATFORM_TLS and QUEUE_PLATFORM_CA_FILE, as the C# SDK reads them."""
    options = {}
    if settings.get("tls") not in (None, ""):
        options["tls"] = _flag(settings["tls"])
    if settings.get("ca_file") not in (None, ""):
        options["ca_file"] = settings["ca_file"]
    return options


def _float(settings, name, default):
    value = settings.get(name)
    return float(value) if value not in (None, "") else default


class BrokerProducer:
    """estela's producer: ``get_connection()``, fire-and-forget ``send(topic, data)``, ``flush()``, ``close()``."""

    def __init__(self, **kwargs):
        settings = _settings(kwargs)
        self.connection_timeout = _float(settings, "connection_timeout", 10.0)
        options = {}
        for name in ("linger", "delivery_timeout"):
            if settings.get(name) not in (None, ""):
                options[name] = float(settings[name])
        for name in ("max_batch_messages", "buffer_messages"):
            if settings.get(name) not in (None, ""):
                options[name] = int(settings[name])
        # Only from code (get_producer_interface(trace_headers=...)): an environment variable cannot hold a function.
        if callable(settings.get("trace_headers")):
            options["trace_headers"] = settings["trace_headers"]
        self.producer = Producer(_listeners(settings), port=settings.get("port"), api_key=settings.get("api_key"), **_tls(settings), **options)

    def get_connection(self):
        """True when the broker answers within connection_timeout seconds."""
        return self.producer.get_connection(self.connection_timeout)

    def send(self, topic, data):
        """Buffers ``data`` (a dict; JSON with datetimes as ISO strings, anything else as str()) for ``topic``."""
        self.producer.send(topic, data)

    def flush(self):
        """Waits until everything sent so far is durable. Failures are logged (as Kafka's flush does not raise) and
        returned as a list of (topic, payload, error); empty when all went well."""
        try:
            self.producer.flush()
        except PublishFailed as failed:
            log.error("%s", failed)
            return failed.failures
        return []

    def close(self):
        failures = self.flush()
        self.producer.close()
        return failures


class BrokerConsumer:
    """estela's consumer: ``get_connection()``, ``close()``, iteration yielding messages whose ``.value`` is the dict.

    Group ``group_<topic>`` from the earliest message. A message is acknowledged when the next one is requested, and
    the last one at ``close()`` (``strict=true``: released instead)."""

    def __init__(self, **kwargs):
        settings = _settings(kwargs)
        topic = settings.get("topic")
        if not topic:
            raise ValueError("QUEUE_PLATFORM_TOPIC is not set: the topic to consume")
        self.connection_timeout = _float(settings, "connection_timeout", 10.0)
        options = {}
        if settings.get("max_in_flight") not in (None, ""):
            options["max_in_flight"] = int(settings["max_in_flight"])
        self.consumer = Consumer(topic, settings.get("group") or "group_%s" % topic, _listeners(settings),
                                 port=settings.get("port"), start="earliest",
                                 # queue_max_timeout: the name an earlier estela-queue-adapter passed it under
                                 max_timeout=_float(settings, "max_timeout", _float(settings, "queue_max_timeout", 300.0)),
                                 strict=_flag(settings.get("strict", "false")), api_key=settings.get("api_key"), **_tls(settings), **options)

    def get_connection(self):
        return self.consumer.get_connection(self.connection_timeout)

    def __iter__(self):
        return iter(self.consumer)

    def batch(self, max_count=100, max_wait=1.0):
        return self.consumer.batch(max_count, max_wait)

    def ack(self, messages):
        self.consumer.ack(messages)

    def nack(self, messages, delay=0, reason=None, dead_letter=False):
        self.consumer.nack(messages, delay=delay, reason=reason, dead_letter=dead_letter)

    def close(self):
        self.consumer.close()


def get_producer_interface(**kwargs):
    _check_platform()
    return BrokerProducer(**kwargs)


def get_consumer_interface(**kwargs):
    _check_platform()
    return BrokerConsumer(**kwargs)
