"""Listener addresses and gRPC channels."""
import grpc

DEFAULT_PORT = 7100
UNLIMITED = -1

CHANNEL_OPTIONS = [
    # A publish batch may hold many messages of up to 1 MiB; a delivery frame too.
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", UNLIMITED),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 0),
]

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


def parse_listeners(listeners, port=None):
    """``"a,b:7200"`` or ``["a", "b:7200"]`` -> ``["a:7100", "b:7200"]``; a listener without a port gets ``port``."""
    if isinstance(listeners, str):
        listeners = listeners.split(",")
    port = int(port) if port not in (None, "") else DEFAULT_PORT
    targets = []
    for listener in listeners or ():
        listener = listener.strip()
        if not listener:
            continue
        if "://" in listener:
            listener = listener.split("://", 1)[1]
        listener = listener.rstrip("/")
        host, sep, maybe_port = listener.rpartition(":")
        if sep and maybe_port.isdigit() and not host.endswith(":"):
            targets.append(listener)
        else:
            targets.append("%s:%d" % (listener, port))
    if not targets:
        raise ValueError("no broker listener given")
    return targets


def wants_tls(listeners, tls=None, ca_file=None):
    """TLS for all listeners: as ``tls`` says when given, else when a CA file is given or a listener is ``https://``."""
    if tls is not None:
        return tls if isinstance(tls, bool) else str(tls).strip().lower() in ("1", "true", "yes", "on")
    if ca_file:
        return True
    if isinstance(listeners, str):
        listeners = listeners.split(",")
    return any(listener.strip().lower().startswith("https://") for listener in listeners or ())


def channel_credentials(tls, ca_file=None):
    """None for cleartext; else TLS credentials trusting only the CAs in ``ca_file`` (PEM), or the system's roots."""
    if not tls:
        return None
    root_certificates = None
    if ca_file:
        # Read here, so a wrong path fails at construction, naming the file, instead of as UNAVAILABLE on every call.
        with open(ca_file, "rb") as pem:
            root_certificates = pem.read()
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def open_channel(target, credentials=None):
    """A channel to ``target`` ("host:port"): TLS with ``credentials`` when given, else cleartext."""
    if credentials is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


class _ApiKey(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <key>`` to every call. An interceptor rather than call credentials: gRPC refuses
    call credentials on a cleartext channel, and a broker on loopback may well run without TLS."""

    def __init__(self, api_key):
        self._metadata = ("authorization", "Bearer " + api_key)

    def _with_key(self, details):
        metadata = list(details.metadata or ())
        metadata.append(self._metadata)
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata):
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class Listeners:
    """The listed brokers, one channel at a time; ``rotate()`` moves to the next after a failure. With ``api_key``
    every call carries it (docs/security.md); ``credentials`` (from ``channel_credentials``): TLS to every listener,
    None: cleartext."""

    def __init__(self, targets, api_key=None, credentials=None):
        self.targets = list(targets)
        self._api_key = api_key or None
        self.credentials = credentials
        self._index = 0
        self.channel = None
        self._open()

    def _open(self):
        channel = open_channel(self.targets[self._index], self.credentials)
        self.channel = grpc.intercept_channel(channel, _ApiKey(self._api_key)) if self._api_key else channel

    @property
    def target(self):
        return self.targets[self._index]

    def rotate(self):
        """Closes the current channel and opens one to the next listener (the same one when there is only one)."""
        old = self.channel
        self._index = (self._index + 1) % len(self.targets)
        self._open()
        old.close()

    def wait_ready(self, timeout):
        """True once some listener accepts a connection within ``timeout`` seconds in total."""
        import time
        deadline = time.monotonic() + timeout
        for target in self.targets:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            channel = open_channel(target, self.credentials)
            try:
                grpc.channel_ready_future(channel).result(timeout=remaining / max(1, len(self.targets) - self.targets.index(target)))
                return True
            except grpc.FutureTimeoutError:
                continue
            finally:
                channel.close()
        return False

    def close(self):
        self.channel.close()
