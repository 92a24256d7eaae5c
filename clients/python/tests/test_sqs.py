"""The SQS-compatible API through boto3 from Debian (botocore 1.29: the query protocol, as kombu/Celery use it)."""
import threading
import time
import uuid

import boto3
import botocore.exceptions

from broker_client import Consumer, Producer

from .broker_process import DEADLINE, BrokerTestCase


def new_name(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class SqsQueryProtocolTest(BrokerTestCase):
    def setUp(self):
        self.sqs = boto3.client("sqs", endpoint_url=self.broker.http_address, region_name="us-east-1",
                                aws_access_key_id="any", aws_secret_access_key="credentials",
                                config=botocore.config.Config(retries={"max_attempts": 0}))
        self.addCleanup(self.sqs.close)

    def receive(self, url, count, **options):
        messages = []
        while len(messages) < count:
            answer = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(10, count - len(messages)),
                                              WaitTimeSeconds=5, AttributeNames=["All"], MessageAttributeNames=["All"],
                                              **options)
            messages += answer.get("Messages", [])
        return messages

    def error_code(self, call, **arguments):
        with self.assertRaises(botocore.exceptions.ClientError) as raised:
            call(**arguments)
        return raised.exception.response["Error"]["Code"]

    def test_create_send_batch_receive_delete_with_attributes_checked_by_md5(self):
        name = new_name("jobs")
        url = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
        self.assertEqual(url, self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
        self.assertIn(url, self.sqs.list_queues(QueueNamePrefix=name)["QueueUrls"])
        # botocore verifies MD5OfMessageBody and MD5OfMessageAttributes of sends and receives: a wrong digest raises.
        self.sqs.send_message(QueueUrl=url, MessageBody="Zürich 🕷", MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "item"},
            "n": {"DataType": "Number", "StringValue": "42"},
            "raw": {"DataType": "Binary", "BinaryValue": b"\x00\xff"}})
        sent = self.sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two"}])
        self.assertEqual(["a", "b"], sorted(entry["Id"] for entry in sent["Successful"]))

        messages = self.receive(url, 3)
        by_body = {m["Body"]: m for m in messages}
        self.assertEqual({"Zürich 🕷", "one", "two"}, set(by_body))
        first = by_body["Zürich 🕷"]
        self.assertEqual({"kind": {"StringValue": "item", "DataType": "String"},
                          "n": {"StringValue": "42", "DataType": "Number"},
                          "raw": {"BinaryValue": b"\x00\xff", "DataType": "Binary"}}, first["MessageAttributes"])
        self.assertEqual("1", first["Attributes"]["ApproximateReceiveCount"])
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        self.assertEqual(("0", "3", "60"), (attributes["ApproximateNumberOfMessages"],
                                            attributes["ApproximateNumberOfMessagesNotVisible"], attributes["VisibilityTimeout"]))
        deleted = self.sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": "d%d" % i, "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        self.assertEqual(3, len(deleted["Successful"]))
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
        self.assertEqual({"ApproximateNumberOfMessagesNotVisible": "0"}, attributes["Attributes"])
        self.sqs.delete_queue(QueueUrl=url)
        self.assertEqual("AWS.SimpleQueueService.NonExistentQueue", self.error_code(self.sqs.get_queue_url, QueueName=name))

    def test_delay_seconds_holds_a_message_until_its_time(self):
        url = self.sqs.create_queue(QueueName=new_name("delayed"))["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody="in two seconds", DelaySeconds=2)
        self.sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "a", "MessageBody": "in one second", "DelaySeconds": 1}, {"Id": "b", "MessageBody": "now"}])
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        self.assertEqual(("1", "2"), (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesDelayed"]))
        arrivals = []
        while len(arrivals) < 3:
            answer = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5, AttributeNames=["All"])
            arrivals += [(m, time.time() * 1000) for m in answer.get("Messages", [])]
        self.assertEqual(["now", "in one second", "in two seconds"], [m["Body"] for m, _ in arrivals])
        for (message, arrived_ms), delay in zip(arrivals, (0, 1, 2)):
            # SentTimestamp is the send; the message is not received before its delay has passed (one clock).
            self.assertGreaterEqual(arrived_ms, int(message["Attributes"]["SentTimestamp"]) + delay * 1000)
        self.assertEqual("InvalidParameterValue", self.error_code(
            self.sqs.send_message, QueueUrl=url, MessageBody="x", DelaySeconds=-1))

    def test_a_fifo_queue_keeps_each_message_group_in_order_and_drops_repeated_deduplication_ids(self):
        name = new_name("orders") + ".fifo"
        url = self.sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        self.assertEqual(("true", "false"), (attributes["FifoQueue"], attributes["ContentBasedDeduplication"]))
        sent = []
        for n in range(4):
            for group in ("alice", "bob"):
                sent.append(self.sqs.send_message(QueueUrl=url, MessageBody="%s %d" % (group, n), MessageGroupId=group,
                                                  MessageDeduplicationId="%s-%d" % (group, n)))
        # A retried send (same deduplication id) stores nothing and is answered with the first one's message id.
        again = self.sqs.send_message(QueueUrl=url, MessageBody="alice 0", MessageGroupId="alice", MessageDeduplicationId="alice-0")
        self.assertEqual(sent[0]["MessageId"], again["MessageId"])
        self.assertEqual(sent[0]["SequenceNumber"], again["SequenceNumber"])
        batch = self.sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "a", "MessageBody": "bob 0", "MessageGroupId": "bob", "MessageDeduplicationId": "bob-0"},
            {"Id": "b", "MessageBody": "carol 0", "MessageGroupId": "carol", "MessageDeduplicationId": "carol-0"}])
        self.assertEqual(sent[1]["MessageId"], [e for e in batch["Successful"] if e["Id"] == "a"][0]["MessageId"])

        # Each group's messages come one at a time, in order; a message not deleted holds its group back.
        received = {"alice": [], "bob": [], "carol": []}
        held = None
        while sum(len(v) for v in received.values()) < 9:
            answer = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5, AttributeNames=["All"])
            messages = answer.get("Messages", [])
            groups = [m["Attributes"]["MessageGroupId"] for m in messages]
            self.assertEqual(len(groups), len(set(groups)), "two messages of one group in flight at once")
            for m in messages:
                received[m["Attributes"]["MessageGroupId"]].append(m["Body"])
                self.assertEqual(m["Body"].replace(" ", "-"), m["Attributes"]["MessageDeduplicationId"])
                if m["Body"] == "bob 1" and held is None:
                    held = m  # bob's next waits until this one is deleted
                else:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            if held and len(received["alice"]) == 4 and "carol 0" in received["carol"]:
                self.assertEqual(["bob 0", "bob 1"], received["bob"])
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=held["ReceiptHandle"])
                held = False
        self.assertEqual({"alice": ["alice %d" % n for n in range(4)], "bob": ["bob %d" % n for n in range(4)],
                          "carol": ["carol 0"]}, received)

        self.assertEqual("MissingParameter", self.error_code(
            self.sqs.send_message, QueueUrl=url, MessageBody="x", MessageDeduplicationId="x"))
        self.assertEqual("InvalidParameterValue", self.error_code(
            self.sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g"))
        self.assertEqual("InvalidParameterValue", self.error_code(
            self.sqs.create_queue, QueueName=new_name("not-fifo"), Attributes={"FifoQueue": "true"}))
        standard = self.sqs.create_queue(QueueName=new_name("standard"))["QueueUrl"]
        self.assertEqual("InvalidParameterValue", self.error_code(
            self.sqs.send_message, QueueUrl=standard, MessageBody="x", MessageGroupId="g"))

    def test_set_queue_attributes_changes_the_visibility_timeout_and_the_redrive_policy_and_keeps_the_messages(self):
        dlq = new_name("dead")
        url = self.sqs.create_queue(QueueName=new_name("tuned"))["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody="kept")
        self.sqs.create_queue(QueueName=dlq)
        redrive = '{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:%s","maxReceiveCount":"4"}' % dlq
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "45", "RedrivePolicy": redrive})
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        self.assertEqual("45", attributes["VisibilityTimeout"])
        self.assertIn('"maxReceiveCount":4', attributes["RedrivePolicy"].replace(" ", ""))
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": ""})
        self.assertNotIn("RedrivePolicy", self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])
        self.assertEqual(["kept"], [m["Body"] for m in self.receive(url, 1)])
        self.assertEqual("InvalidAttributeName", self.error_code(
            self.sqs.set_queue_attributes, QueueUrl=url, Attributes={"FifoQueue": "true"}))

    def test_tags_over_the_query_protocol_are_created_added_listed_and_removed(self):
        url = self.sqs.create_queue(QueueName=new_name("tagged"), tags={"team": "crawl"})["QueueUrl"]
        self.assertEqual({"team": "crawl"}, self.sqs.list_queue_tags(QueueUrl=url)["Tags"])
        self.sqs.tag_queue(QueueUrl=url, Tags={"env": "prod", "note": "a <b> & 'c'"})
        self.sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
        self.assertEqual({"env": "prod", "note": "a <b> & 'c'"}, self.sqs.list_queue_tags(QueueUrl=url)["Tags"])
        self.assertEqual("InvalidParameterValue", self.error_code(self.sqs.tag_queue, QueueUrl=url, Tags={"aws:x": "y"}))
        self.sqs.untag_queue(QueueUrl=url, TagKeys=["env", "note"])
        self.assertNotIn("Tags", self.sqs.list_queue_tags(QueueUrl=url))

    def test_queue_attributes_over_the_query_protocol_and_content_based_deduplication(self):
        url = self.sqs.create_queue(QueueName=new_name("dedup") + ".fifo", Attributes={
            "FifoQueue": "true", "ContentBasedDeduplication": "true", "ReceiveMessageWaitTimeSeconds": "2"})["QueueUrl"]
        first = self.sqs.send_message(QueueUrl=url, MessageBody="item 1", MessageGroupId="spider")
        again = self.sqs.send_message(QueueUrl=url, MessageBody="item 1", MessageGroupId="spider")
        self.assertEqual(first["MessageId"], again["MessageId"])
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        self.assertEqual(("true", "2", "1"), (attributes["ContentBasedDeduplication"],
                                              attributes["ReceiveMessageWaitTimeSeconds"],
                                              attributes["ApproximateNumberOfMessages"]))
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "0", "MessageRetentionPeriod": "600"})
        self.assertEqual("600", self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])["Attributes"]["MessageRetentionPeriod"])

    def test_a_long_poll_answers_when_a_message_arrives(self):
        url = self.sqs.create_queue(QueueName=new_name("poll"))["QueueUrl"]
        answer = []
        poller = threading.Thread(target=lambda: answer.append(
            self.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)))
        poller.start()
        self.sqs.send_message(QueueUrl=url, MessageBody="wake up")
        poller.join(DEADLINE)
        self.assertFalse(poller.is_alive())
        self.assertEqual(["wake up"], [m["Body"] for m in answer[0]["Messages"]])

    def test_visibility_changes_and_the_redrive_policy_dead_letters_after_max_receives(self):
        dead_name = new_name("dead")
        dead = self.sqs.create_queue(QueueName=dead_name)["QueueUrl"]
        url = self.sqs.create_queue(QueueName=new_name("work"), Attributes={
            "RedrivePolicy": '{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:%s", "maxReceiveCount": 3}'
                             % dead_name})["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody="poison")
        for receive in range(1, 4):
            message, = self.receive(url, 1)
            self.assertEqual(str(receive), message["Attributes"]["ApproximateReceiveCount"])
            if receive == 1:
                # A longer lease, then give it up: the old handle still works for the holder until then.
                self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=600)
            self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        letter, = self.receive(dead, 1)
        self.assertEqual("poison", letter["Body"])
        self.assertEqual("3", letter["MessageAttributes"]["broker-dlq-delivery-count"]["StringValue"])
        self.assertEqual(url.rsplit("/", 1)[1], letter["MessageAttributes"]["broker-dlq-original-topic"]["StringValue"])

    def test_sqs_and_grpc_see_the_same_messages(self):
        name = new_name("bridge")
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        with Producer([self.broker.address]) as producer:
            producer.send(name, {"from": "grpc"}, headers={"origin": "python-grpc"})
        message, = self.receive(url, 1)
        self.assertEqual('{"from": "grpc"}', message["Body"])
        self.assertEqual("python-grpc", message["MessageAttributes"]["origin"]["StringValue"])
        self.sqs.send_message(QueueUrl=url, MessageBody='{"from": "sqs"}')
        with Consumer(name, "grpc-group", [self.broker.address]) as consumer:
            values = sorted(consumer.poll(DEADLINE).value["from"] for _ in range(2))
        self.assertEqual(["grpc", "sqs"], values)

    def test_errors_have_the_codes_botocore_and_kombu_expect(self):
        url = self.sqs.create_queue(QueueName=new_name("errors"))["QueueUrl"]
        self.assertEqual("AWS.SimpleQueueService.NonExistentQueue",
                         self.error_code(self.sqs.send_message, QueueUrl=url + "-missing", MessageBody="x"))
        self.assertEqual("ReceiptHandleIsInvalid", self.error_code(self.sqs.delete_message, QueueUrl=url, ReceiptHandle="junk"))
        self.assertEqual("AWS.SimpleQueueService.BatchEntryIdsNotDistinct", self.error_code(
            self.sqs.send_message_batch, QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "1"}, {"Id": "x", "MessageBody": "2"}]))
        self.assertEqual("InvalidParameterValue", self.error_code(self.sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=11))
        self.assertEqual("InvalidAttributeName", self.error_code(
            self.sqs.create_queue, QueueName=new_name("bad"), Attributes={"NoSuchAttribute": "1"}))
        self.assertEqual("QueueAlreadyExists", self.error_code(
            self.sqs.create_queue, QueueName=url.rsplit("/", 1)[1], Attributes={"VisibilityTimeout": "99"}))
        # A batch with one bad entry: the others are stored, the bad one is reported by id.
        # Allowed characters outside U+0020..U+D7FF (tab, line breaks, private use, a surrogate pair) do not end the
        # check: a disallowed one after them is still found.
        answer = self.sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "good", "MessageBody": "fine"}, {"Id": "bad", "MessageBody": "not a character: \uffff"},
            {"Id": "mixed", "MessageBody": "tab\tline\r\n\ue000 🕷 end"},
            {"Id": "late", "MessageBody": "tab\tline\n🕷 then a control \x01"}])
        self.assertEqual(["good", "mixed"], sorted(e["Id"] for e in answer["Successful"]))
        self.assertEqual([("bad", "InvalidMessageContents", True), ("late", "InvalidMessageContents", True)],
                         sorted((e["Id"], e["Code"], e["SenderFault"]) for e in answer["Failed"]))

    def test_listing_no_queue_and_reading_no_attribute_are_well_formed_answers(self):
        self.assertNotIn("QueueUrls", self.sqs.list_queues(QueueNamePrefix=new_name("none")))
        url = self.sqs.create_queue(QueueName=new_name("empty"))["QueueUrl"]
        self.assertNotIn("Attributes", self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]))
        self.assertNotIn("Messages", self.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0))

    def test_large_bodies_line_breaks_and_characters_xml_cannot_carry_reach_a_query_protocol_receiver(self):
        name = new_name("bodies")
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        big = "x" * (200 * 1024)
        self.sqs.send_message(QueueUrl=url, MessageBody=big)
        self.sqs.send_message(QueueUrl=url, MessageBody="line one\r\nline two\n")
        with Producer([self.broker.address]) as producer:
            producer.send(name, b"bell \x07 and nul \x00 from grpc", headers={"note": "tab\there"})
        # botocore checks each MD5OfBody against the body it parsed: a rewritten line break would fail it.
        bodies = {m["Body"]: m for m in self.receive(url, 3)}
        self.assertIn(big, bodies)
        self.assertIn("line one\r\nline two\n", bodies)
        self.assertIn("bell \ufffd and nul \ufffd from grpc", bodies)
        self.assertEqual("tab\there", bodies["bell \ufffd and nul \ufffd from grpc"]["MessageAttributes"]["note"]["StringValue"])
