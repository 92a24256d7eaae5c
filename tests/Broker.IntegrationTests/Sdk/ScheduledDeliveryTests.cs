using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Google.Protobuf;
using Grpc.Core;

namespace Broker.IntegrationTests.Sdk;

/// <summary>
/// Scheduled delivery end to end: the SDK's delay and delivery time over gRPC, the message durable and counted as
/// scheduled at once, delivered at its time (not before) with the offset its publish got, and bad schedules refused.
/// Restarts and crashes during a delay: the storage tests (ScheduledDeliveryTests) and the Python client's SIGKILL test.
/// </summary>
public sealed class ScheduledDeliveryTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_delayed_message_is_durable_at_once_and_arrives_at_its_time_with_the_offset_its_publish_got()
    {
        string topic = await shared.NewTopicAsync("scheduled");
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address), null, null);
        var sentAt = DateTimeOffset.UtcNow;
        var delayed = await producer.SendAsync(topic, new { job = "later" }, new SendOptions { Delay = TimeSpan.FromSeconds(1.5), Key = "j-1" });
        var atTime = await producer.SendAsync(topic, OutgoingMessage.FromText("at time") with { DeliverAt = sentAt.AddSeconds(1) });
        var now = await producer.SendAsync(topic, new { job = "now" });
        var published = await Task.WhenAll(delayed, atTime, now).WaitAsync(Deadline);
        Assert.Equal(2UL, (await shared.Client.DescribeTopicAsync(topic)).Scheduled);

        await using var reader = await shared.Client.SubscribeAsync(topic, "workers");
        using var timeout = new CancellationTokenSource(Deadline);
        var arrivals = new List<(ReceivedMessage Message, DateTimeOffset At)>();
        for (int i = 0; i < 3; i++)
            arrivals.Add((await reader.ReceiveAsync(timeout.Token), DateTimeOffset.UtcNow));

        Assert.Equal(["""{"job":"now"}""", "at time", """{"job":"later"}"""], arrivals.Select(a => a.Message.PayloadText));
        Assert.Null(arrivals[0].Message.Scheduled);
        Assert.Equal([published[1].Offset, published[0].Offset], arrivals.Skip(1).Select(a => a.Message.Scheduled!.PublishedOffset));
        Assert.Equal(sentAt.AddSeconds(1).ToUnixTimeMilliseconds(), arrivals[1].Message.Scheduled!.DeliverAt.ToUnixTimeMilliseconds());
        Assert.True(arrivals[2].Message.Scheduled!.DeliverAt >= sentAt.AddSeconds(1.5));
        Assert.Equal("j-1", System.Text.Encoding.UTF8.GetString(arrivals[2].Message.Key.Span));
        foreach (var (message, at) in arrivals.Skip(1))
        {
            // Not before its time (one clock: the broker runs in this process), under an offset of its own.
            Assert.True(at >= message.Scheduled!.DeliverAt, $"arrived at {at:O}, due at {message.Scheduled.DeliverAt:O}");
            Assert.True(message.Offset > published[2].Offset);
            Assert.True(message.PublishTime < message.Scheduled.DeliverAt);
        }
        Assert.Equal(0UL, (await shared.Client.DescribeTopicAsync(topic)).Scheduled);
    }

    [Fact]
    public async Task A_batch_with_a_delay_and_a_delivery_time_on_one_message_or_one_too_far_ahead_is_refused_whole()
    {
        string topic = await shared.NewTopicAsync("bad-schedule");
        var publisher = new Publisher.PublisherClient(shared.Client.Channel);
        var fine = new Message { Payload = ByteString.CopyFromUtf8("fine"), DelayMs = 1000 };
        var both = new Message { Payload = ByteString.CopyFromUtf8("both"), DelayMs = 1000, DeliverAtUnixMs = DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeMilliseconds() };
        var tooFar = new Message { Payload = ByteString.CopyFromUtf8("far"), DelayMs = (ulong)TimeSpan.FromDays(3651).TotalMilliseconds };
        var forever = new Message { Payload = ByteString.CopyFromUtf8("forever"), DelayMs = ulong.MaxValue };
        foreach (var bad in new[] { both, tooFar, forever })
        {
            var error = await Assert.ThrowsAsync<RpcException>(() =>
                publisher.PublishAsync(new PublishRequest { Topic = topic, Messages = { fine, bad } }).ResponseAsync);
            Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
            Assert.Contains("message 1", error.Status.Detail);
        }
        var description = await shared.Client.DescribeTopicAsync(topic);
        Assert.Equal((0UL, 0UL), (description.NextOffset, description.Scheduled));
    }
}
