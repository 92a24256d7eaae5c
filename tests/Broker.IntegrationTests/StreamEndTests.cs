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
    public async Task After_a_stop_frame_no_delivery_follows_and_released_prefetch_comes_back_as_a_first_attempt()
    {
        string topic = await shared.NewTopicAsync();
        await shared.Client.PublishAsync(topic, Enumerable.Range(0, 50).Select(i => OutgoingMessage.FromText($"m{i}")));
        var consumer = new Protocol.V1.Consumer.ConsumerClient(shared.Client.Channel);
        using var call = consumer.Consume();
        await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = new Subscribe { Topic = topic, Group = "g", MaxInFlight = 10 } });
        var received = new List<Delivery>();
        while (received.Count < 10 && await call.ResponseStream.MoveNext(CancellationToken.None))
        {
            if (call.ResponseStream.Current.Deliveries is { } frame)
                received.AddRange(frame.Items);
        }

        // Ack three (their credit would bring three more), stop, and read up to the stopped answer.
        var ack = new Ack { RequestId = 1 };
        ack.Deliveries.AddRange(received.Take(3).Select(d => new DeliveryRef { Offset = d.Offset, Token = d.Token }));
        await call.RequestStream.WriteAsync(new ConsumeRequest { Ack = ack });
        await call.RequestStream.WriteAsync(new ConsumeRequest { Stop = new Stop() });
        bool stopped = false;
        var settled = new List<SettleResponse>();  // the ack's answer may come before or after the stopped answer
        while (!stopped && await call.ResponseStream.MoveNext(CancellationToken.None))
        {
            var response = call.ResponseStream.Current;
            if (response.Deliveries is { } frame)
                received.AddRange(frame.Items);
            if (response.Settled is { } answer)
                settled.Add(answer);
            stopped = response.KindCase == ConsumeResponse.KindOneofCase.Stopped;
        }
        Assert.True(stopped);

        // Everything not acked goes back unstarted; more credit must bring nothing more on this stream.
        var held = received.Skip(3).ToList();
        var release = new Release { RequestId = 2 };
        release.Deliveries.AddRange(held.Select(d => new DeliveryRef { Offset = d.Offset, Token = d.Token }));
        await call.RequestStream.WriteAsync(new ConsumeRequest { Release = release });
        await call.RequestStream.CompleteAsync();
        var after = new List<ConsumeResponse>();
        while (await call.ResponseStream.MoveNext(CancellationToken.None))
            after.Add(call.ResponseStream.Current);

        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
        settled.AddRange(after.Where(r => r.Settled is not null).Select(r => r.Settled));
        Assert.Equal([(1UL, 3U), (2UL, (uint)held.Count)], settled.Select(s => (s.RequestId, s.Accepted)));
        Assert.DoesNotContain(after, r => r.Deliveries is not null);
        // Released, not failed: the next consumer gets each of them as attempt 1.
        await using var next = await shared.Client.SubscribeAsync(topic, "g", new SubscribeOptions { MaxInFlight = 100 });
        var again = await Receive.ExactlyAsync(next, 47);
        Assert.Equal(Enumerable.Range(3, 47).Select(i => (long)i), again.Select(m => m.Offset).Order());
        Assert.All(again, m => Assert.Equal(1, m.Attempt));
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
