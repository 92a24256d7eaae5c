using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Google.Protobuf;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>How streams end: a half-close is answered in full, a deleted topic is UNAVAILABLE, never INTERNAL.</summary>
public sealed class StreamEndTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    [Fact]
    public async Task A_client_that_half_closes_gets_every_settle_answer_and_an_ok_end()
    {
        string topic = await shared.NewTopicAsync();
        await shared.Client.PublishAsync(topic, Enumerable.Range(0, 200).Select(i => OutgoingMessage.FromText($"m{i}")));
        var consumer = new Protocol.V1.Consumer.ConsumerClient(shared.Client.Channel);
        using var call = consumer.Consume();
        await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = new Subscribe { Topic = topic, Group = "g", MaxInFlight = 1000 } });
        var deliveries = new List<Delivery>();
        while (deliveries.Count < 200 && await call.ResponseStream.MoveNext(CancellationToken.None))
        {
            if (call.ResponseStream.Current.Deliveries is { } frame)
                deliveries.AddRange(frame.Items);
        }

        // One ack frame per delivery, then half-close at once.
        ulong requestId = 0;
        foreach (var delivery in deliveries)
        {
            var ack = new Ack { RequestId = ++requestId };
            ack.Deliveries.Add(new DeliveryRef { Offset = delivery.Offset, Token = delivery.Token });
            await call.RequestStream.WriteAsync(new ConsumeRequest { Ack = ack });
        }
        await call.RequestStream.CompleteAsync();
        var answered = new List<SettleResponse>();
        while (await call.ResponseStream.MoveNext(CancellationToken.None))
        {
            if (call.ResponseStream.Current.Settled is { } settled)
                answered.Add(settled);
        }

        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
        Assert.Equal(Enumerable.Range(1, 200).Select(i => (ulong)i), answered.Select(a => a.RequestId));
        Assert.All(answered, a => Assert.Equal(1U, a.Accepted));
        Assert.Equal(200UL, (await shared.Client.DescribeTopicAsync(topic)).Groups.Single(g => g.Name == "g").AckFloor);
    }

    [Fact]
    public async Task Deleting_a_topic_ends_its_consumers_with_unavailable_and_racing_publishes_fail_cleanly()
    {
        string topic = await shared.NewTopicAsync();
        var subscriptions = new List<BrokerSubscription>();
        for (int i = 0; i < 8; i++)
            subscriptions.Add(await shared.Client.SubscribeAsync(topic, $"g{i % 2}"));
        using var stopPublishing = new CancellationTokenSource();
        var publishers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            var failures = new List<BrokerClientException>();
            while (!stopPublishing.IsCancellationRequested)
            {
                try
                {
                    await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("x")]);
                }
                catch (BrokerClientException error)
                {
                    failures.Add(error);
                    if (error.Status == StatusCode.NotFound)
                        break;
                }
            }
            return failures;
        })).ToList();

        await shared.Client.DeleteTopicAsync(topic);
        var publishFailures = (await Task.WhenAll(publishers).WaitAsync(Receive.Deadline)).SelectMany(f => f).ToList();
        stopPublishing.Cancel();

        Assert.All(publishFailures, f => Assert.Contains(f.Status, new[] { StatusCode.NotFound, StatusCode.Unavailable }));
        foreach (var subscription in subscriptions)
        {
            using var timeout = new CancellationTokenSource(Receive.Deadline);
            var ended = await Assert.ThrowsAsync<BrokerClientException>(async () =>
            {
                while (true)
                    await subscription.ReceiveAsync(timeout.Token);
            });
            Assert.Equal(StatusCode.Unavailable, ended.Status);
            await subscription.DisposeAsync();
        }
    }
}
