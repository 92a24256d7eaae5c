using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Google.Protobuf;
using Grpc.Core;

namespace Broker.IntegrationTests.Sdk;

/// <summary>
/// Publish deduplication end to end over gRPC: the SDK producer's and the unary publish's message ids, a repeat answered
/// with the first offset and marked as a duplicate, the id delivered as a header, the window kept across a broker
/// restart, bad ids refused. Expiry, capacity, races and crashes: the storage tests (DeduplicationTests).
/// </summary>
public sealed class DeduplicationTests
{
    [Fact]
    public async Task A_repeated_message_id_is_stored_once_answered_with_its_offset_and_remembered_across_a_restart()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("jobs");
        await using (var producer = new BrokerProducer(SdkTesting.Settings(broker.Host.Address), null, null))
        {
            var first = await await producer.SendAsync("jobs", new { job = 1 }, new SendOptions { MessageId = "job-1" });
            var other = await await producer.SendAsync("jobs", new { job = 2 }, new SendOptions { MessageId = "job-2" });
            var repeat = await await producer.SendAsync("jobs", new { job = 1, retried = true }, new SendOptions { MessageId = "job-1" });
            Assert.Equal((0L, false), (first.Offset, first.Duplicate));
            Assert.Equal((1L, false), (other.Offset, other.Duplicate));
            Assert.Equal((0L, true), (repeat.Offset, repeat.Duplicate));
        }
        Assert.Equal(2UL, (await broker.Client.DescribeTopicAsync("jobs")).NextOffset);

        await broker.RestartAsync();
        var batch = await broker.Client.PublishAsync("jobs",
            [OutgoingMessage.FromText("new") with { MessageId = "job-3" }, OutgoingMessage.FromText("again") with { MessageId = "job-2" }]);
        Assert.Equal((2L, 1), (batch.FirstOffset, batch.Count));
        Assert.Equal([(1, 1L)], batch.Duplicates);
        Assert.Equal([2L, 1], [batch.OffsetOf(0), batch.OffsetOf(1)]);

        await using var subscription = await broker.Client.SubscribeAsync("jobs", "workers");
        var delivered = await Receive.ExactlyAsync(subscription, 3);
        await Receive.NothingMoreAsync(subscription);
        Assert.Equal(["job-1", "job-2", "job-3"], delivered.Select(m => m.Headers["broker-message-id"]));
        Assert.Equal("""{"job":1}""", delivered[0].PayloadText);
    }

    [Fact]
    public async Task A_message_id_too_long_or_with_a_control_character_refuses_the_batch()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("jobs");
        var publisher = new Publisher.PublisherClient(broker.Client.Channel);
        foreach (string bad in new[] { new string('x', 129), "tab\there" })
        {
            var request = new PublishRequest
            {
                Topic = "jobs",
                Messages = { new Message { Payload = ByteString.CopyFromUtf8("fine"), MessageId = "ok" }, new Message { Payload = ByteString.CopyFromUtf8("bad"), MessageId = bad } },
            };
            var error = await Assert.ThrowsAsync<RpcException>(() => publisher.PublishAsync(request).ResponseAsync);
            Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
            Assert.Contains("message 1", error.Status.Detail);
        }
        Assert.Equal(0UL, (await broker.Client.DescribeTopicAsync("jobs")).NextOffset);
    }
}
