using System.Diagnostics;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>Group semantics end to end: competing consumers, leases, extend, nack, release, start positions.</summary>
public sealed class ConsumerGroupTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private BrokerClient Client => shared.Client;

    private static SubscribeOptions WithLease(TimeSpan visibility, int maxDeliveries = 5, int maxInFlight = 0) => new()
    {
        MaxInFlight = maxInFlight,
        Group = new GroupOptions { VisibilityTimeout = visibility, MaxDeliveries = maxDeliveries },
    };

    [Fact]
    public async Task Four_consumers_of_one_group_split_the_messages_and_never_hold_one_together()
    {
        const int count = 400;
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, Enumerable.Range(0, count).Select(i => OutgoingMessage.FromText($"job {i}")));
        var holders = new HolderLog();
        var acked = new System.Collections.Concurrent.ConcurrentDictionary<long, bool>();
        var allAcked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumers = new List<BrokerSubscription>();
        for (int i = 0; i < 4; i++)
            consumers.Add(await Client.SubscribeAsync(topic, "workers", new SubscribeOptions { MaxInFlight = 10 }));

        using var done = new CancellationTokenSource();
        var loops = consumers.Select((subscription, index) => Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    var message = await subscription.ReceiveAsync(done.Token);
                    holders.Received(message.Offset, $"consumer {index}");
                    holders.Settled(message.Offset);
                    Assert.Equal(1, (await subscription.AckAsync(message)).Accepted);
                    acked[message.Offset] = true;
                    if (acked.Count == count)
                        allAcked.TrySetResult();
                }
            }
            catch (OperationCanceledException) when (done.IsCancellationRequested)
            {
            }
        })).ToList();
        await Task.WhenAny(allAcked.Task, Task.WhenAll(loops)).WaitAsync(Receive.Deadline);
        done.Cancel();
        await Task.WhenAll(loops);   // rethrows any assertion a consumer loop failed
        foreach (var subscription in consumers)
            await subscription.DisposeAsync();

        Assert.Equal(count, holders.Deliveries.Count);
        Assert.Equal(Enumerable.Range(0, count).Select(i => (long)i), holders.Deliveries.Select(d => d.Offset).Order());
        Assert.True(holders.Deliveries.Select(d => d.Consumer).Distinct().Count() > 1, "one consumer took every message");
    }

    [Fact]
    public async Task An_unacked_message_comes_back_after_the_visibility_timeout_and_the_old_token_is_refused()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("slow job")]);
        await using var consumer = await Client.SubscribeAsync(topic, "g", WithLease(TimeSpan.FromMilliseconds(300)));
        Assert.Equal(300U, consumer.Subscribed.VisibilityTimeoutMs);

        var first = (await Receive.ExactlyAsync(consumer, 1))[0];
        var second = (await Receive.ExactlyAsync(consumer, 1))[0];

        Assert.Equal(first.Offset, second.Offset);
        Assert.Equal(1, first.Attempt);
        Assert.Equal(2, second.Attempt);
        var stale = await consumer.AckAsync(first);
        Assert.Equal(0, stale.Accepted);
        Assert.Equal(StatusCode.FailedPrecondition, Assert.Single(stale.Refused).Reason.Status);
        Assert.Equal(1, (await consumer.AckAsync(second)).Accepted);
    }

    [Fact]
    public async Task Extend_keeps_a_lease_past_the_visibility_timeout()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("long job")]);
        await using var worker = await Client.SubscribeAsync(topic, "g", WithLease(TimeSpan.FromMilliseconds(300)));
        await using var other = await Client.SubscribeAsync(topic, "g");
        var job = (await Receive.ExactlyAsync(worker, 1))[0];

        Assert.Equal(1, (await worker.ExtendAsync([job], TimeSpan.FromSeconds(30))).Accepted);

        // Well past the 300 ms lease, nobody else gets the job and the original token still acks it.
        await Receive.NothingMoreAsync(other, TimeSpan.FromMilliseconds(1500));
        await Receive.NothingMoreAsync(worker, TimeSpan.FromMilliseconds(10));
        Assert.Equal(1, (await worker.AckAsync(job)).Accepted);
    }

    [Fact]
    public async Task A_nack_redelivers_at_once_and_a_nack_with_delay_not_before_the_delay()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("flaky")]);
        await using var consumer = await Client.SubscribeAsync(topic, "g");

        var first = (await Receive.ExactlyAsync(consumer, 1))[0];
        Assert.Equal(1, (await consumer.NackAsync([first], lastError: "timeout talking to the database")).Accepted);
        var second = (await Receive.ExactlyAsync(consumer, 1))[0];
        Assert.Equal(2, second.Attempt);

        var delay = TimeSpan.FromMilliseconds(700);
        var clock = Stopwatch.StartNew();
        Assert.Equal(1, (await consumer.NackAsync([second], delay)).Accepted);
        var third = (await Receive.ExactlyAsync(consumer, 1))[0];
        Assert.True(clock.Elapsed >= delay - TimeSpan.FromMilliseconds(20), $"redelivered after {clock.Elapsed}, before the {delay} delay");
        Assert.Equal(3, third.Attempt);
        Assert.Equal(1, (await consumer.AckAsync(third)).Accepted);
    }

    [Fact]
    public async Task A_released_message_comes_back_without_counting_a_delivery()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("prefetched")]);
        await using var consumer = await Client.SubscribeAsync(topic, "g", WithLease(TimeSpan.FromSeconds(30), maxDeliveries: 1));

        var first = (await Receive.ExactlyAsync(consumer, 1))[0];
        Assert.Equal(1, (await consumer.ReleaseAsync([first])).Accepted);
        var again = (await Receive.ExactlyAsync(consumer, 1))[0];

        Assert.Equal(1, again.Attempt);
        Assert.Equal(1, (await consumer.AckAsync(again)).Accepted);
        Assert.Equal(0UL, (await Client.DescribeTopicAsync(topic + ".dlq")).NextOffset);
    }

    [Fact]
    public async Task Groups_can_start_at_an_offset_or_a_time()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, Enumerable.Range(0, 5).Select(i => OutgoingMessage.FromText($"old {i}")));
        var old = (await TopicReader.ReadAllAsync(Client, topic, 5)).Last().PublishTime;
        var boundary = DateTimeOffset.FromUnixTimeMilliseconds(old.ToUnixTimeMilliseconds() + 1);
        await EventuallyLaterThanAsync(boundary);
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("new")]);

        await using var fromOffset = await Client.SubscribeAsync(topic, "from-3", new SubscribeOptions { Start = StartAt.AtOffset(3) });
        Assert.Equal([3L, 4, 5], (await Receive.ExactlyAsync(fromOffset, 3)).Select(m => m.Offset));

        await using var fromTime = await Client.SubscribeAsync(topic, "from-time", new SubscribeOptions { Start = StartAt.AtTime(boundary) });
        Assert.Equal("new", (await Receive.ExactlyAsync(fromTime, 1))[0].PayloadText);
        await Receive.NothingMoreAsync(fromTime);
    }

    [Fact]
    public async Task Creating_a_group_twice_without_if_not_exists_is_already_exists_and_reserved_names_are_refused()
    {
        string topic = await shared.NewTopicAsync();
        Assert.True(await Client.CreateGroupAsync(topic, "g"));
        Assert.False(await Client.CreateGroupAsync(topic, "g"));
        var twice = await Assert.ThrowsAsync<BrokerClientException>(() => Client.CreateGroupAsync(topic, "g", ifNotExists: false));
        Assert.Equal(StatusCode.AlreadyExists, twice.Status);
        Assert.Equal(1007, twice.ErrorCode);
        var reserved = await Assert.ThrowsAsync<BrokerClientException>(() => Client.SubscribeAsync(topic, "__mine"));
        Assert.Equal(1002, reserved.ErrorCode);
        var badSettings = await Assert.ThrowsAsync<BrokerClientException>(() =>
            Client.CreateGroupAsync(topic, "h", options: new GroupOptions { MaxDeliveries = 5000 }));
        Assert.Equal(StatusCode.InvalidArgument, badSettings.Status);
    }

    private static async Task EventuallyLaterThanAsync(DateTimeOffset moment)
    {
        // The broker stamps publishes with its wall clock; make sure it has moved past the boundary.
        while (DateTimeOffset.UtcNow <= moment)
            await Task.Yield();
    }
}
