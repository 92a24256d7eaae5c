"""TLS: a child broker serving a certificate from a CA made here; clients trusting that CA get through, others do not."""
import datetime
import ipaddress
import os
import shutil
import tempfile
import unittest
import uuid
from unittest import mock

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker_client import Consumer, Producer, estela
from broker_client._connection import Listeners, channel_credentials
from broker_client._generated import broker_pb2, broker_pb2_grpc

from .broker_process import DEADLINE, BrokerProcess


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(folder, name):
    """A self-signed CA: (certificate, key), its PEM written to ``<name>.crt``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(_name("test CA " + name)).issuer_name(_name("test CA " + name))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA256()))
    path = os.path.join(folder, name + ".crt")
    with open(path, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate, key, path


def write_server(folder, ca, ca_key):
    """A certificate for 127.0.0.1 and localhost signed by the CA: (server.crt, server.key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=12))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    certificate_file, key_file = os.path.join(folder, "server.crt"), os.path.join(folder, "server.key")
    with open(certificate_file, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return certificate_file, key_file


def new_topic():
    return "tls-%s" % uuid.uuid4().hex


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.mkdtemp(prefix="broker-py-tls-")
        ca, ca_key, cls.ca_file = new_ca(cls.folder, "main")
        _, _, cls.other_ca_file = new_ca(cls.folder, "other")
        certificate_file, key_file = write_server(cls.folder, ca, ca_key)
        cls.broker = BrokerProcess(extra_args=["--TlsCertificateFile", certificate_file, "--TlsKeyFile", key_file]).start()

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()
        shutil.rmtree(cls.folder, ignore_errors=True)

    def test_the_broker_says_it_serves_tls(self):
        self.assertTrue(any("broker listening on https://" in line for line in self.broker.output), self.broker.output)
        self.assertTrue(self.broker.http_address.startswith("https://"), self.broker.http_address)

    def test_producer_and_consumer_with_the_ca_file_publish_and_consume(self):
        topic = new_topic()
        producer = Producer([self.broker.address], ca_file=self.ca_file)
        producer.send(topic, {"n": 1})
        producer.close(DEADLINE)
        consumer = Consumer(topic, "g", ["https://" + self.broker.address], ca_file=self.ca_file)
        try:
            message = consumer.poll(DEADLINE)
            self.assertIsNotNone(message, "nothing arrived over TLS")
            self.assertEqual({"n": 1}, message.value)
        finally:
            consumer.close()

    def test_estela_reads_tls_and_ca_file_from_the_environment(self):
        topic = new_topic()
        host, port = self.broker.address.rsplit(":", 1)
        environment = {"QUEUE_PLATFORM": "broker", "QUEUE_PLATFORM_LISTENERS": "localhost", "QUEUE_PLATFORM_PORT": port,
                       "QUEUE_PLATFORM_TOPIC": topic, "QUEUE_PLATFORM_TLS": "true", "QUEUE_PLATFORM_CA_FILE": self.ca_file}
        with mock.patch.dict(os.environ, environment, clear=True):
            producer = estela.get_producer_interface()
            producer.send(topic, {"n": 2})
            self.assertEqual([], producer.close())
            consumer = estela.get_consumer_interface()
            try:
                self.assertEqual({"n": 2}, next(iter(consumer)).value)
            finally:
                consumer.close()

    def test_boto3_uses_the_sqs_endpoint_over_https_with_the_ca_file_as_verify(self):
        import boto3
        import botocore.config
        import botocore.exceptions

        def client(verify):
            return boto3.client("sqs", endpoint_url=self.broker.http_address, region_name="us-east-1",
                                aws_access_key_id="any", aws_secret_access_key="credentials", verify=verify,
                                config=botocore.config.Config(retries={"max_attempts": 0}))
        sqs = client(self.ca_file)
        url = sqs.create_queue(QueueName=new_topic())["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="over https")
        received = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
        self.assertEqual(["over https"], [m["Body"] for m in received])
        sqs.close()
        untrusting = client(self.other_ca_file)
        with self.assertRaises(botocore.exceptions.SSLError):
            untrusting.list_queues()
        untrusting.close()

    def list_topics(self, credentials):
        listeners = Listeners([self.broker.address], credentials=credentials)
        try:
            return broker_pb2_grpc.AdminStub(listeners.channel).ListTopics(broker_pb2.ListTopicsRequest(), timeout=DEADLINE)
        finally:
            listeners.close()

    def test_a_client_trusting_another_ca_is_refused(self):
        self.list_topics(channel_credentials(True, self.ca_file))  # the right CA gets through on this same path
        with self.assertRaises(grpc.RpcError) as refused:
            self.list_topics(channel_credentials(True, self.other_ca_file))
        self.assertEqual(grpc.StatusCode.UNAVAILABLE, refused.exception.code(), refused.exception.details())
        self.assertIn("certificate verify failed", refused.exception.details())

    def test_a_cleartext_client_is_refused(self):
        with self.assertRaises(grpc.RpcError) as refused:
            self.list_topics(None)
        self.assertEqual(grpc.StatusCode.UNAVAILABLE, refused.exception.code(), refused.exception.details())


if __name__ == "__main__":
    unittest.main()
