"""Python client for the broker: a batching Producer and a Consumer with acks (gRPC, stubs from proto/)."""
from .consumer import Consumer, Message, RetryBackoff
from .error_codes import ErrorCode
from .errors import BrokerError, BufferFull, PublishFailed
from .producer import Producer

__all__ = ["Producer", "Consumer", "Message", "RetryBackoff", "BrokerError", "ErrorCode", "PublishFailed", "BufferFull"]
