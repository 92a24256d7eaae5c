"""Operator calls on the broker's Admin service: groups across topics, deleting a group, peeking at a topic (dead
letters with their story, for one) and redriving dead letters. The same calls as the .NET SDK's BrokerClient and
brokerctl; each is one unary call to the first listener that answers, failures as BrokerError."""
from collections import namedtuple

import grpc

from ._connection import Listeners, channel_credentials, parse_listeners, wants_tls
from ._generated import broker_pb2, broker_pb2_grpc
from .errors import BrokerError

# A stored message as Peek shows it: nothing is leased or acknowledged by reading it.
PeekedMessage = namedtuple("PeekedMessage", "topic offset key headers payload publish_time_unix_ms")

# What a redrive did: letters appended to their topic (or the target) and removed from the dead-letter topic, and
# letters left in place because their original topic no longer exists.
RedriveResult = namedtuple("RedriveResult", "moved skipped")


class Admin:
    """``Admin("127.0.0.1:7100")``; ``api_key``, ``tls`` and ``ca_file`` as for the Producer and Consumer."""

    def __init__(self, listeners, port=None, api_key=None, tls=None, ca_file=None, timeout=30.0):
        self.timeout = float(timeout)
        self._listeners = Listeners(parse_listeners(listeners, port), api_key,
                                    channel_credentials(wants_tls(listeners, tls, ca_file), ca_file))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self._listeners.close()

    def _call(self, method, request):
        # Each listener once: an unreachable one (UNAVAILABLE) hands the call to the next; anything else is the answer.
        for attempt in range(len(self._listeners.targets)):
            try:
                return getattr(broker_pb2_grpc.AdminStub(self._listeners.channel), method)(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == len(self._listeners.targets) - 1:
                    raise BrokerError.from_rpc_error(error) from None
                self._listeners.rotate()

    def list_groups(self, topic=None):
        """``(groups, unopened_topics)``: a ``GroupListing`` (topic, group numbers, dead-letter topic) per group of the
        topics open now, or of ``topic`` only (opening it); ``unopened_topics`` names the others (docs/operations.md)."""
        response = self._call("ListGroups", broker_pb2.ListGroupsRequest(topic=topic or ""))
        return list(response.groups), list(response.unopened_topics)

    def delete_group(self, topic, group, force=False):
        """Deletes the group and its state; refused while consumers are subscribed (error 1011) unless ``force``. The
        messages it alone held back become free for retention and truncation."""
        self._call("DeleteGroup", broker_pb2.DeleteGroupRequest(topic=topic, group=group, force=bool(force)))

    def peek(self, topic, from_offset=0, max_messages=10):
        """Up to ``max_messages`` (1 to 1000) stored messages from ``from_offset`` on (the oldest stored when it is
        gone), read without consuming: on a dead-letter topic each carries its ``broker-dlq-*`` headers."""
        response = self._call("Peek", broker_pb2.PeekRequest(topic=topic, from_offset=max(0, int(from_offset)),
                                                             max_messages=int(max_messages)))
        return [PeekedMessage(m.topic, m.offset, m.key, dict(m.headers), m.payload, m.publish_time_unix_ms)
                for m in response.messages]

    def redrive(self, dead_letter_topic, max_messages=0, target_topic=None):
        """Moves up to ``max_messages`` dead letters (0: all) back to the topics they came from, or all to
        ``target_topic`` (which must exist), in durable batches (docs/semantics.md); returns a ``RedriveResult``."""
        response = self._call("Redrive", broker_pb2.RedriveRequest(dead_letter_topic=dead_letter_topic,
                                                                   max_messages=int(max_messages),
                                                                   target_topic=target_topic or ""))
        return RedriveResult(response.moved, response.skipped)
