using System.Text;
using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// The SQS-compatible API through the AWS SDK for .NET (its JSON protocol) against the real broker: queues, sends,
/// long-polled receives, visibility, deletes, dead letters by redrive policy, errors, and a message crossing between
/// SQS and gRPC both ways. (boto3 drives the query protocol in clients/python/tests/test_sqs.py.)
/// </summary>
public sealed class SqsApiTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private AmazonSQSClient NewClient() => new(new BasicAWSCredentials("any", "credentials"), new AmazonSQSConfig
    {
        ServiceURL = shared.Broker.Host.HttpAddress!.ToString(),
        AuthenticationRegion = "us-east-1",
        MaxErrorRetry = 0,
    });

    private static string NewName(string prefix) => $"{prefix}-{Guid.NewGuid():N}";

    [Fact]
    public async Task Send_receive_with_attributes_then_delete_empties_the_queue()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(NewName("orders"))).QueueUrl;
        var sent = await sqs.SendMessageAsync(new SendMessageRequest
        {
            QueueUrl = url,
            MessageBody = "{\"order\": 1, \"city\": \"Zürich\"}",
            MessageAttributes = new()
            {
                ["kind"] = new MessageAttributeValue { DataType = "String", StringValue = "order" },
                ["priority"] = new MessageAttributeValue { DataType = "Number", StringValue = "5" },
                ["blob"] = new MessageAttributeValue { DataType = "Binary", BinaryValue = new MemoryStream([0, 1, 2]) },
            },
        });
        var batch = await sqs.SendMessageBatchAsync(url, [new("a", "second"), new("b", "third")]);
        Assert.Equal(["a", "b"], batch.Successful.Select(s => s.Id).Order());
        Assert.True(batch.Failed is null || batch.Failed.Count == 0);

        var received = await ReceiveAsync(sqs, url, 3);
        var first = received.Single(m => m.MessageId == sent.MessageId);
        Assert.Equal("{\"order\": 1, \"city\": \"Zürich\"}", first.Body);
        Assert.Equal("order", first.MessageAttributes["kind"].StringValue);
        Assert.Equal("5", first.MessageAttributes["priority"].StringValue);
        Assert.Equal([0, 1, 2], first.MessageAttributes["blob"].BinaryValue.ToArray());
        Assert.Equal("1", first.Attributes["ApproximateReceiveCount"]);
        Assert.Equal(["second", "third"], received.Where(m => m != first).Select(m => m.Body).Order());

        var deleted = await sqs.DeleteMessageBatchAsync(url, received.Select((m, i) => new DeleteMessageBatchRequestEntry($"e{i}", m.ReceiptHandle)).ToList());
        Assert.Equal(3, deleted.Successful.Count);
        var attributes = await sqs.GetQueueAttributesAsync(url, ["All"]);
        Assert.Equal(0, attributes.ApproximateNumberOfMessages);
        Assert.Equal(0, attributes.ApproximateNumberOfMessagesNotVisible);
        Assert.Empty((await sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 0 })).Messages ?? []);
    }

    [Fact]
    public async Task Purge_drops_what_is_stored_and_in_flight_and_the_queue_goes_on()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(NewName("purge"))).QueueUrl;
        await sqs.SendMessageBatchAsync(url, [new("a", "1"), new("b", "2"), new("c", "3")]);
        var held = Assert.Single(await ReceiveAsync(sqs, url, 1));
        await sqs.PurgeQueueAsync(url);
        var attributes = await sqs.GetQueueAttributesAsync(url, ["All"]);
        Assert.Equal((0, 0), (attributes.ApproximateNumberOfMessages, attributes.ApproximateNumberOfMessagesNotVisible));
        await Assert.ThrowsAsync<ReceiptHandleIsInvalidException>(() => sqs.DeleteMessageAsync(url, held.ReceiptHandle));
        await sqs.SendMessageAsync(url, "after");
        Assert.Equal("after", Assert.Single(await ReceiveAsync(sqs, url, 1)).Body);
    }

    [Fact]
    public async Task A_fifo_queue_over_the_json_protocol_orders_a_message_group_and_deduplicates_a_retried_send()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = NewName("fifo") + ".fifo", Attributes = new Dictionary<string, string> { ["FifoQueue"] = "true" },
        })).QueueUrl;
        var first = await sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "1", MessageGroupId = "g", MessageDeduplicationId = "d1" });
        var second = await sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "2", MessageGroupId = "g", MessageDeduplicationId = "d2" });
        var retried = await sqs.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = "1", MessageGroupId = "g", MessageDeduplicationId = "d1" });
        Assert.Equal((first.MessageId, first.SequenceNumber), (retried.MessageId, retried.SequenceNumber));
        Assert.True(string.CompareOrdinal(first.SequenceNumber, second.SequenceNumber) < 0);

        // One message of the group at a time: the second only once the first is deleted.
        var head = Assert.Single((await sqs.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = url, MaxNumberOfMessages = 10, WaitTimeSeconds = 1, MessageSystemAttributeNames = ["All"],
        })).Messages);
        Assert.Equal(("1", "g", "d1"), (head.Body, head.Attributes["MessageGroupId"], head.Attributes["MessageDeduplicationId"]));
        Assert.Empty((await sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 0 })).Messages ?? []);
        await sqs.DeleteMessageAsync(url, head.ReceiptHandle);
        Assert.Equal("2", Assert.Single(await ReceiveAsync(sqs, url, 1)).Body);
        Assert.Equal("true", (await sqs.GetQueueAttributesAsync(url, ["FifoQueue"])).Attributes["FifoQueue"]);
    }

    [Fact]
    public async Task A_long_poll_returns_as_soon_as_a_message_arrives()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(NewName("poll"))).QueueUrl;
        var polling = sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, WaitTimeSeconds = 20 });
        await sqs.SendMessageAsync(url, "wake up");
        var answer = await polling.WaitAsync(Receive.Deadline);
        Assert.Equal("wake up", Assert.Single(answer.Messages).Body);
    }

    [Fact]
    public async Task Visibility_zero_brings_a_message_back_and_a_stale_receipt_handle_is_refused()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(NewName("vis"))).QueueUrl;
        await sqs.SendMessageAsync(url, "again");
        var first = Assert.Single(await ReceiveAsync(sqs, url, 1));
        await sqs.ChangeMessageVisibilityAsync(url, first.ReceiptHandle, 0);
        var second = Assert.Single(await ReceiveAsync(sqs, url, 1));
        Assert.Equal((first.MessageId, "2"), (second.MessageId, second.Attributes["ApproximateReceiveCount"]));

        var stale = await Assert.ThrowsAsync<ReceiptHandleIsInvalidException>(() => sqs.DeleteMessageAsync(url, first.ReceiptHandle));
        Assert.Contains("received again", stale.Message);
        await sqs.DeleteMessageAsync(url, second.ReceiptHandle);
    }

    [Fact]
    public async Task A_redrive_policy_moves_a_message_to_the_dead_letter_queue_after_max_receives()
    {
        using var sqs = NewClient();
        string dlqName = NewName("dead");
        string dlq = (await sqs.CreateQueueAsync(dlqName)).QueueUrl;
        string url = (await sqs.CreateQueueAsync(new CreateQueueRequest
        {
            QueueName = NewName("work"),
            Attributes = new()
            {
                ["RedrivePolicy"] = $"{{\"deadLetterTargetArn\":\"arn:aws:sqs:us-east-1:000000000000:{dlqName}\",\"maxReceiveCount\":\"2\"}}",
            },
        })).QueueUrl;
        await sqs.SendMessageAsync(url, "poison");
        for (int receive = 1; receive <= 2; receive++)
        {
            var message = Assert.Single(await ReceiveAsync(sqs, url, 1));
            Assert.Equal(receive.ToString(System.Globalization.CultureInfo.InvariantCulture), message.Attributes["ApproximateReceiveCount"]);
            await sqs.ChangeMessageVisibilityAsync(url, message.ReceiptHandle, 0);  // failed: back at once
        }
        var dead = Assert.Single(await ReceiveAsync(sqs, dlq, 1));
        Assert.Equal("poison", dead.Body);
        Assert.StartsWith("max deliveries (2) reached", dead.MessageAttributes["broker-dlq-reason"].StringValue);
        Assert.Contains("maxReceiveCount", (await sqs.GetQueueAttributesAsync(url, ["RedrivePolicy"])).Attributes["RedrivePolicy"]);

        // The dead-letter queue knows its source queue, and a message move task sends the letter back to it.
        Assert.Equal([url], (await sqs.ListDeadLetterSourceQueuesAsync(new ListDeadLetterSourceQueuesRequest { QueueUrl = dlq })).QueueUrls);
        string dlqArn = $"arn:aws:sqs:us-east-1:000000000000:{dlqName}";
        var started = await sqs.StartMessageMoveTaskAsync(new StartMessageMoveTaskRequest { SourceArn = dlqArn });
        var task = Assert.Single((await sqs.ListMessageMoveTasksAsync(new ListMessageMoveTasksRequest { SourceArn = dlqArn, MaxResults = 10 })).Results);
        Assert.Equal((started.TaskHandle, "COMPLETED", 1L), (task.TaskHandle, task.Status, task.ApproximateNumberOfMessagesMoved ?? -1));
        var back = Assert.Single(await ReceiveAsync(sqs, url, 1));
        Assert.Equal(("poison", "1"), (back.Body, back.Attributes["ApproximateReceiveCount"]));
        await Assert.ThrowsAsync<ResourceNotFoundException>(() => sqs.CancelMessageMoveTaskAsync(new CancelMessageMoveTaskRequest { TaskHandle = started.TaskHandle }));
    }

    [Fact]
    public async Task A_message_crosses_between_sqs_and_grpc_both_ways()
    {
        using var sqs = NewClient();
        string name = NewName("bridge");
        string url = (await sqs.CreateQueueAsync(name)).QueueUrl;
        await sqs.SendMessageAsync(new SendMessageRequest
        {
            QueueUrl = url,
            MessageBody = "from sqs",
            MessageAttributes = new() { ["origin"] = new MessageAttributeValue { DataType = "String", StringValue = "sqs" } },
        });
        await using (var subscription = await shared.Client.SubscribeAsync(name, "grpc-readers"))
        {
            var viaGrpc = (await Receive.ExactlyAsync(subscription, 1))[0];
            Assert.Equal("from sqs", viaGrpc.PayloadText);
            Assert.Equal("sqs", viaGrpc.Headers["origin"]);
            await subscription.AckAsync(viaGrpc);
        }

        await shared.Client.PublishAsync(name, [new OutgoingMessage(Encoding.UTF8.GetBytes("from grpc"), Headers: new Dictionary<string, string> { ["origin"] = "grpc" })]);
        var viaSqs = (await ReceiveAsync(sqs, url, 2)).Single(m => m.Body == "from grpc");
        Assert.Equal("grpc", viaSqs.MessageAttributes["origin"].StringValue);
    }

    [Fact]
    public async Task Errors_carry_the_codes_the_sdk_maps_to_its_exceptions()
    {
        using var sqs = NewClient();
        await Assert.ThrowsAsync<QueueDoesNotExistException>(() => sqs.GetQueueUrlAsync(NewName("missing")));
        string url = (await sqs.CreateQueueAsync(NewName("errors"))).QueueUrl;
        await Assert.ThrowsAsync<ReceiptHandleIsInvalidException>(() => sqs.DeleteMessageAsync(url, "not-a-handle"));
        await Assert.ThrowsAsync<EmptyBatchRequestException>(() => sqs.SendMessageBatchAsync(url, []));
        await Assert.ThrowsAsync<BatchEntryIdsNotDistinctException>(() => sqs.SendMessageBatchAsync(url, [new("x", "1"), new("x", "2")]));
        await Assert.ThrowsAsync<TooManyEntriesInBatchRequestException>(() =>
            sqs.SendMessageBatchAsync(url, Enumerable.Range(0, 11).Select(i => new SendMessageBatchRequestEntry($"m{i}", "b")).ToList()));
        var badCount = await Assert.ThrowsAsync<AmazonSQSException>(() =>
            sqs.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MaxNumberOfMessages = 11 }));
        Assert.Equal("InvalidParameterValue", badCount.ErrorCode);
        // Another queue's receipt handle is refused: the handle is signed for its queue.
        string other = (await sqs.CreateQueueAsync(NewName("other"))).QueueUrl;
        await sqs.SendMessageAsync(other, "x");
        var foreign = Assert.Single(await ReceiveAsync(sqs, other, 1));
        await Assert.ThrowsAsync<ReceiptHandleIsInvalidException>(() => sqs.DeleteMessageAsync(url, foreign.ReceiptHandle));
    }

    [Fact]
    public async Task An_unsigned_or_cross_site_request_is_refused_so_no_web_page_can_delete_a_queue()
    {
        using var sqs = NewClient();
        string name = NewName("guarded");
        string url = (await sqs.CreateQueueAsync(name)).QueueUrl;
        using var http = new HttpClient();
        var form = new FormUrlEncodedContent(new Dictionary<string, string> { ["Action"] = "DeleteQueue", ["QueueUrl"] = url });
        var unsigned = await http.PostAsync(url, form);
        Assert.Equal(System.Net.HttpStatusCode.Forbidden, unsigned.StatusCode);
        Assert.Contains("<Code>MissingAuthenticationToken</Code>", await unsigned.Content.ReadAsStringAsync());
        using var crossSite = new HttpRequestMessage(HttpMethod.Get, $"{url}?Action=DeleteQueue&QueueUrl={Uri.EscapeDataString(url)}");
        crossSite.Headers.TryAddWithoutValidation("Authorization", "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/sqs/aws4_request");
        crossSite.Headers.TryAddWithoutValidation("Sec-Fetch-Site", "cross-site");
        Assert.Equal(System.Net.HttpStatusCode.Forbidden, (await http.SendAsync(crossSite)).StatusCode);
        Assert.Equal(url, (await sqs.GetQueueUrlAsync(name)).QueueUrl);  // still there
    }

    [Fact]
    public async Task A_body_larger_than_any_sqs_request_is_refused_before_it_is_read_and_the_api_goes_on()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(NewName("big-body"))).QueueUrl;
        long limit = new Broker.Server.Hosting.BrokerOptions().MaxSqsRequestBytes;
        // A body that announces more than the limit and then stalls after its first bytes: refused on its length, the
        // answer comes without the broker waiting to read it (a broker reading it would wait here until the deadline).
        using var stalled = new StalledStream();
        using var http = new HttpClient { Timeout = Receive.Deadline };
        using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new StreamContent(stalled) };
        request.Content.Headers.ContentLength = limit + 1;
        request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/x-www-form-urlencoded");
        request.Headers.TryAddWithoutValidation("Authorization", "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/sqs/aws4_request");
        // The client waits for the broker's go-ahead before sending the body: a broker that reads it would ask for it.
        request.Headers.ExpectContinue = true;
        var refused = await http.SendAsync(request);
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Contains("InvalidParameterValue", await refused.Content.ReadAsStringAsync());
        await sqs.SendMessageAsync(url, "still serving");
        Assert.Equal("still serving", Assert.Single(await ReceiveAsync(sqs, url, 1)).Body);
    }

    /// <summary>Gives a few bytes, then never more (until disposed).</summary>
    private sealed class StalledStream : Stream
    {
        private readonly TaskCompletionSource _disposed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private bool _gaveFirst;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (!_gaveFirst)
            {
                _gaveFirst = true;
                "Action=SendMessage&"u8.CopyTo(buffer.Span);
                return "Action=SendMessage&"u8.Length;
            }
            await _disposed.Task.WaitAsync(cancellationToken);
            return 0;
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            _disposed.TrySetResult();
            base.Dispose(disposing);
        }
    }

    [Fact]
    public async Task A_delete_batch_naming_one_message_twice_answers_each_entry()
    {
        using var sqs = NewClient();
        string url = (await sqs.CreateQueueAsync(NewName("twice"))).QueueUrl;
        await sqs.SendMessageAsync(url, "once");
        var message = Assert.Single(await ReceiveAsync(sqs, url, 1));
        await sqs.ChangeMessageVisibilityAsync(url, message.ReceiptHandle, 0);
        var again = Assert.Single(await ReceiveAsync(sqs, url, 1));
        // The stale handle twice, the current one once: two refusals and one success, no server error.
        var answer = await sqs.DeleteMessageBatchAsync(url, [new("a", message.ReceiptHandle), new("b", message.ReceiptHandle), new("c", again.ReceiptHandle)]);
        Assert.Equal(["c"], answer.Successful.Select(s => s.Id));
        Assert.Equal(["a", "b"], answer.Failed.Select(f => f.Id).Order());
        Assert.All(answer.Failed, f => Assert.Equal("ReceiptHandleIsInvalid", f.Code));
    }

    private static async Task<List<Message>> ReceiveAsync(AmazonSQSClient sqs, string url, int count)
    {
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        var messages = new List<Message>();
        while (messages.Count < count)
        {
            var answer = await sqs.ReceiveMessageAsync(new ReceiveMessageRequest
            {
                QueueUrl = url,
                MaxNumberOfMessages = count - messages.Count,
                WaitTimeSeconds = 5,
                MessageSystemAttributeNames = ["All"],
                MessageAttributeNames = ["All"],
            }, deadline.Token);
            messages.AddRange(answer.Messages ?? []);
        }
        return messages;
    }
}
