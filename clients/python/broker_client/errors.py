"""Typed errors: the gRPC status and the broker's stable error code (docs/errors.md) instead of raw trailers."""
import grpc

from .error_codes import ErrorCode


class BrokerError(Exception):
    """A call the broker refused or that could not reach it.

    ``status`` is the gRPC status name ("NOT_FOUND", "UNAVAILABLE", ...), ``error_code`` the broker's stable code
    (1001 = topic not found, 1201 = shutting down, ...; docs/errors.md) or None when the broker sent none; ``code``
    the same as an ``ErrorCode`` (``ErrorCode.TOPIC_NOT_FOUND``), or None for none or a code this client does not know.
    """

    def __init__(self, message, status=None, error_code=None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code

    @property
    def code(self):
        try:
            return ErrorCode(self.error_code) if self.error_code is not None else None
        except ValueError:
            return None

    @classmethod
    def from_rpc_error(cls, error):
        code = error.code() if hasattr(error, "code") else None
        error_code = None
        for key, value in (error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else ():
            if key == "broker-error-code":
                try:
                    error_code = int(value)
                except ValueError:
                    pass
        details = error.details() if hasattr(error, "details") else str(error)
        return cls("%s: %s" % (code.name if code else "UNKNOWN", details), code.name if code else None, error_code)

    @classmethod
    def from_error_message(cls, error):
        """From the proto Error carried by one item of a stream (a publish batch, a settled delivery)."""
        status = next((c.name for c in grpc.StatusCode if c.value[0] == error.status_code), str(error.status_code))
        return cls("%s (%d): %s" % (status, error.error_code, error.message), status, error.error_code)


class PublishFailed(BrokerError):
    """Raised by ``Producer.flush()`` when messages sent before it were not acknowledged by the broker.

    ``failures`` lists ``(topic, payload, error)`` for each message that failed; nothing else is lost.
    """

    def __init__(self, failures):
        first = failures[0][2]
        super().__init__("%d message(s) failed to publish; first: %s" % (len(failures), first),
                         getattr(first, "status", None), getattr(first, "error_code", None))
        self.failures = failures


class BufferFull(Exception):
    """``Producer.send(..., timeout=...)`` waited that long and the producer's buffer stayed full."""
