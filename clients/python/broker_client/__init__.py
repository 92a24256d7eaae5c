"""Python client for the broker: a batching Producer, a Consumer with acks and an Admin client (gRPC, stubs from proto/)."""
from .admin import Admin, PeekedMessage, RedriveResult
from .consumer import Consumer, Message, RetryBackoff
from .error_codes import ErrorCode
from .errors import BrokerError, BufferFull, PublishFailed
from .producer import Producer

__all__ = ["Producer", "Consumer", "Admin", "PeekedMessage", "RedriveResult", "Message", "RetryBackoff", "BrokerError",
           "ErrorCode", "PublishFailed", "BufferFull"]
