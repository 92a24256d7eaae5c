"""SQS with API keys required (docs/security.md, "SQS signatures") through boto3 from Debian (botocore 1.29: the query protocol,
signed as kombu/Celery sign it, presigned GETs included): signatures checked against keys made for SQS, actions
against the key's grants, and every refusal leaving the queue as it was."""
import json
import time
import unittest
import urllib.error
import urllib.request
import uuid

import boto3
import botocore.config
import botocore.exceptions
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker_client._connection import Listeners
from broker_client._generated import broker_pb2, broker_pb2_grpc

from .broker_process import DEADLINE, start_requiring_keys


def new_name(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class SqsSignatureTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Information: the level at which ASP.NET would log each request's URL (test_a_presigned_urls_signature_...).
        cls.broker, cls.bootstrap = start_requiring_keys(["--LogLevel", "Information"])
        cls.listeners = Listeners([cls.broker.address], cls.bootstrap)
        cls.admin = broker_pb2_grpc.AdminStub(cls.listeners.channel)

    @classmethod
    def tearDownClass(cls):
        cls.listeners.close()
        cls.broker.close()

    def key(self, name, grants, sqs=True):
        """A new key's AWS credentials: its id and the token after the dot."""
        created = self.admin.CreateApiKey(broker_pb2.CreateApiKeyRequest(name=name, grants=grants, sqs=sqs), timeout=DEADLINE)
        return created.key.id, created.token.split(".", 1)[1]

    def sqs(self, credentials):
        client = boto3.client("sqs", endpoint_url=self.broker.http_address, region_name="ap-south-1",
                              aws_access_key_id=credentials[0], aws_secret_access_key=credentials[1],
                              config=botocore.config.Config(retries={"max_attempts": 0}))
        self.addCleanup(client.close)
        return client

    def refused(self, call, **arguments):
        with self.assertRaises(botocore.exceptions.ClientError) as raised:
            call(**arguments)
        response = raised.exception.response
        return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]

    def counts(self, client, url):
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]

    def test_a_key_made_for_sqs_creates_sends_receives_and_deletes(self):
        name = new_name("py-signed")
        sqs = self.sqs(self.key("py-worker", ["*:" + name]))
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="Zürich, signed")
        messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
        self.assertEqual(["Zürich, signed"], [m["Body"] for m in messages])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
        self.assertEqual(("0", "0"), self.counts(sqs, url))

    def test_a_wrong_secret_an_unknown_key_and_a_key_not_made_for_sqs_are_refused_and_nothing_is_sent(self):
        name = new_name("py-refused")
        access_key, secret = self.key("py-owner", ["*:" + name])
        owner = self.sqs((access_key, secret))
        url = owner.create_queue(QueueName=name)["QueueUrl"]
        wrong = secret[:-2] + ("BB" if secret.endswith("AA") else "AA")
        for credentials, expected in (((access_key, wrong), ("SignatureDoesNotMatch", 403)),
                                      (("bk0123456789abcdef", secret), ("InvalidClientTokenId", 403)),
                                      (self.key("py-grpc-only", ["*:" + name], sqs=False), ("InvalidClientTokenId", 403))):
            self.assertEqual(expected, self.refused(self.sqs(credentials).send_message, QueueUrl=url, MessageBody="x"))
        self.assertEqual(("0", "0"), self.counts(owner, url))

    def test_a_key_without_the_permission_is_denied_send_receive_and_purge_and_nothing_changes(self):
        name = new_name("py-guarded")
        owner = self.sqs(self.key("py-owner", ["*:" + name]))
        url = owner.create_queue(QueueName=name)["QueueUrl"]
        owner.send_message(QueueUrl=url, MessageBody="stays")
        reader = self.sqs(self.key("py-reader", ["consume:%s:sqs" % name]))
        writer = self.sqs(self.key("py-writer", ["publish:" + name]))

        self.assertEqual(("AccessDenied", 403), self.refused(reader.send_message, QueueUrl=url, MessageBody="no"))
        self.assertEqual(("AccessDenied", 403), self.refused(writer.receive_message, QueueUrl=url, WaitTimeSeconds=0))
        self.assertEqual(("AccessDenied", 403), self.refused(writer.purge_queue, QueueUrl=url))
        self.assertEqual(("AccessDenied", 403), self.refused(reader.purge_queue, QueueUrl=url))
        self.assertEqual(("1", "0"), self.counts(owner, url))
        self.assertEqual(["stays"], [m["Body"] for m in reader.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]])

    def test_list_queues_shows_only_the_queues_the_key_has_a_grant_on(self):
        prefix = new_name("py-listed")
        root = self.sqs(self.key("py-root", ["*"]))
        mine = root.create_queue(QueueName=prefix + "-mine")["QueueUrl"]
        root.create_queue(QueueName=prefix + "-theirs")
        limited = self.sqs(self.key("py-limited", ["publish:%s-mine" % prefix]))
        self.assertEqual([mine], limited.list_queues(QueueNamePrefix=prefix)["QueueUrls"])
        self.assertEqual(2, len(root.list_queues(QueueNamePrefix=prefix)["QueueUrls"]))
        self.assertEqual(("AccessDenied", 403), self.refused(limited.get_queue_url, QueueName=prefix + "-theirs"))

    def test_a_body_changed_after_signing_is_refused_and_nothing_is_sent(self):
        name = new_name("py-tamper")
        credentials = self.key("py-owner", ["*:" + name])
        owner = self.sqs(credentials)
        url = owner.create_queue(QueueName=name)["QueueUrl"]
        forged = self.sqs(credentials)
        tampered = []

        def tamper(request, **_):
            # After signing, before sending: someone on the path swaps the message (same length, same headers).
            body = request.body if isinstance(request.body, bytes) else request.body.encode()
            if b"signed-body" in body:
                request.body = body.replace(b"signed-body", b"forged-body")
                tampered.append(True)

        forged.meta.events.register("before-send.sqs.SendMessage", tamper)
        self.assertEqual(("SignatureDoesNotMatch", 403), self.refused(forged.send_message, QueueUrl=url, MessageBody="signed-body"))
        self.assertEqual([True], tampered)
        self.assertEqual(("0", "0"), self.counts(owner, url))
        owner.send_message(QueueUrl=url, MessageBody="signed-body")  # the same send, untouched, passes
        self.assertEqual(("1", "0"), self.counts(owner, url))

    def presigned_receive(self, client, url):
        """A receive as kombu's async SQS client makes it: a GET to the queue URL, presigned by the client's signer."""
        request = AWSRequest(method="GET", url=url, params={"Action": "ReceiveMessage", "MaxNumberOfMessages": "1",
                                                            "WaitTimeSeconds": "0"})
        client._request_signer.sign("ReceiveMessage", request, signing_type="presignurl")
        prepared = request.prepare()
        return urllib.request.urlopen(urllib.request.Request(prepared.url, headers=dict(prepared.headers)), timeout=DEADLINE)

    def test_a_presigned_get_as_kombu_sends_is_verified(self):
        name = new_name("py-presigned")
        access_key, secret = self.key("py-kombu", ["*:" + name])
        owner = self.sqs((access_key, secret))
        url = owner.create_queue(QueueName=name)["QueueUrl"]
        owner.send_message(QueueUrl=url, MessageBody="by-presigned-get")
        with self.presigned_receive(owner, url) as answer:
            self.assertIn(b"<Body>by-presigned-get</Body>", answer.read())
        self.assertEqual(("0", "1"), self.counts(owner, url))

        wrong = self.sqs((access_key, secret[:-2] + ("BB" if secret.endswith("AA") else "AA")))
        with self.assertRaises(urllib.error.HTTPError) as refused:
            self.presigned_receive(wrong, url)
        self.assertEqual(403, refused.exception.code)
        self.assertIn(b"<Code>SignatureDoesNotMatch</Code>", refused.exception.read())
        # A presigned URL changed after signing (a purge instead of the receive signed) is refused too.
        with self.assertRaises(urllib.error.HTTPError) as changed:
            request = AWSRequest(method="GET", url=url, params={"Action": "ReceiveMessage"})
            owner._request_signer.sign("ReceiveMessage", request, signing_type="presignurl")
            signed_url = request.prepare().url
            self.assertIn("Action=ReceiveMessage", signed_url)
            urllib.request.urlopen(signed_url.replace("Action=ReceiveMessage", "Action=PurgeQueue"), timeout=DEADLINE)
        self.assertEqual(403, changed.exception.code)
        self.assertEqual(("0", "1"), self.counts(owner, url))

    def wait_for_output(self, text):
        """Waits until the broker's output holds text: its log lines are written in order, so all before it are out."""
        deadline = time.monotonic() + DEADLINE
        while text not in "".join(self.broker.output):
            self.assertLess(time.monotonic(), deadline, "the broker never logged %r" % text)
            time.sleep(0.01)

    def test_a_presigned_urls_signature_never_reaches_the_log(self):
        name = new_name("py-unlogged")
        owner = self.sqs(self.key("py-unlogged", ["*:" + name]))
        url = owner.create_queue(QueueName=name)["QueueUrl"]
        # A presigned URL as generate_presigned_url makes it: the signature is in the query.
        signed_url = owner.generate_presigned_url("receive_message", Params={"QueueUrl": url, "WaitTimeSeconds": 0}, HttpMethod="GET")
        signature = signed_url.split("X-Amz-Signature=", 1)[1].split("&", 1)[0]
        with urllib.request.urlopen(signed_url, timeout=DEADLINE) as answer:
            self.assertEqual(200, answer.status)
        # Logged (at the default level) after the request: once it is out, so would be a request line before it.
        marker, _ = self.key("py-log-marker", ["publish:" + name], sqs=False)
        self.wait_for_output(marker)
        self.assertNotIn(signature, "".join(self.broker.output))

    def test_a_plus_in_a_presigned_query_is_a_space_so_a_value_changed_that_way_is_refused(self):
        name = new_name("py-plus")
        owner = self.sqs(self.key("py-plus", ["*:" + name]))
        url = owner.create_queue(QueueName=name)["QueueUrl"]
        signed_url = owner.generate_presigned_url("send_message", Params={"QueueUrl": url, "MessageBody": "1+1"}, HttpMethod="GET")
        self.assertIn("MessageBody=1%2B1", signed_url)
        # '+' in a query means a space to the broker's reader: the send would store "1 1" under a signature for "1+1".
        with self.assertRaises(urllib.error.HTTPError) as changed:
            urllib.request.urlopen(signed_url.replace("1%2B1", "1+1"), timeout=DEADLINE)
        self.assertEqual(403, changed.exception.code)
        self.assertIn(b"SignatureDoesNotMatch", changed.exception.read())
        self.assertEqual(("0", "0"), self.counts(owner, url))
        # A value signed with a space, sent with '+' for it (form encoding), is the same value: accepted.
        spaced_url = owner.generate_presigned_url("send_message", Params={"QueueUrl": url, "MessageBody": "one two"}, HttpMethod="GET")
        self.assertIn("MessageBody=one%20two", spaced_url)
        with urllib.request.urlopen(spaced_url.replace("one%20two", "one+two"), timeout=DEADLINE) as answer:
            self.assertEqual(200, answer.status)
        received = owner.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
        self.assertEqual(["one two"], [message["Body"] for message in received])

    def test_the_json_protocols_action_header_must_be_signed(self):
        name = new_name("py-target")
        access_key, secret = self.key("py-target", ["*:" + name])
        owner = self.sqs((access_key, secret))
        url = owner.create_queue(QueueName=name)["QueueUrl"]
        owner.send_message(QueueUrl=url, MessageBody="kept")

        def send(target, signed):
            request = AWSRequest(method="POST", url=self.broker.http_address + "/", data=json.dumps({"QueueUrl": url}).encode(),
                                 headers={"Content-Type": "application/x-amz-json-1.0"})
            if signed:
                request.headers["X-Amz-Target"] = target
            SigV4Auth(Credentials(access_key, secret), "sqs", "ap-south-1").add_auth(request)
            if not signed:
                request.headers["X-Amz-Target"] = target  # added after signing: someone replaying the signed body
            prepared = request.prepare()
            return urllib.request.urlopen(urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers),
                                                                 method="POST"), timeout=DEADLINE)

        with self.assertRaises(urllib.error.HTTPError) as unsigned:
            send("AmazonSQS.PurgeQueue", signed=False)
        self.assertEqual(400, unsigned.exception.code)
        self.assertIn(b"IncompleteSignature", unsigned.exception.read())
        self.assertEqual(("1", "0"), self.counts(owner, url))
        with send("AmazonSQS.GetQueueAttributes", signed=True) as answer:
            self.assertEqual(200, answer.status)


if __name__ == "__main__":
    unittest.main()
