using System.Text.Json;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests.Sdk;

/// <summary>BrokerConsumer against the real broker: iteration, the batch API, settling, lease extension.</summary>
public sealed class ConsumerTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private async Task<string> TopicWithAsync(int count)
    {
        string topic = await shared.NewTopicAsync("consume");
        await shared.Client.PublishAsync(topic, Enumerable.Range(0, count)
            .Select(i => new OutgoingMessage(JsonSerializer.SerializeToUtf8Bytes(new ScrapedItem($"https://e.com/{i}", 200, []), SdkJsonContext.Default.ScrapedItem))));
        return topic;
    }

    private BrokerConsumer Consumer(string topic, Action<BrokerClientOptions>? configure = null) =>
        new(SdkTesting.Settings(shared.Broker.Host.Address, o =>
        {
            o.Topic = topic;
            configure?.Invoke(o);
        }), null, null);

    private async Task<GroupBacklog> BacklogAsync(string topic, string group)
    {
        var description = await shared.Client.DescribeTopicAsync(topic);
        var state = description.Groups.Single(g => g.Name == group);
        return new GroupBacklog((long)state.Backlog, (long)state.InFlight);
    }

    private sealed record GroupBacklog(long Backlog, long InFlight);

    [Fact]
    public async Task Iteration_acks_each_message_when_the_next_is_requested_and_dispose_acks_the_last()
    {
        string topic = await TopicWithAsync(5);
        var urls = new List<string>();
        await using (var consumer = Consumer(topic))
        {
            await foreach (var message in consumer)
            {
                urls.Add(message.Value<ScrapedItem>(SdkJsonContext.Default.ScrapedItem)!.Url);
                Assert.Equal($"https://e.com/{message.Offset}", message.Value<ScrapedItem>()!.Url);   // the Web defaults read camelCase too
                if (urls.Count == 5)
                    break;
            }
            Assert.Equal("group_" + topic, consumer.Group);
        }
        Assert.Equal(Enumerable.Range(0, 5).Select(i => $"https://e.com/{i}"), urls);
        Assert.Equal(new GroupBacklog(0, 0), await BacklogAsync(topic, "group_" + topic));
    }

    [Fact]
    public async Task Strict_dispose_releases_the_last_message_so_it_comes_back()
    {
        string topic = await TopicWithAsync(2);
        await using (var consumer = Consumer(topic, o => o.Strict = true))
        {
            await foreach (var message in consumer)
            {
                if (message.Offset == 1)
                    break;
            }
        }
        Assert.Equal(new GroupBacklog(1, 0), await BacklogAsync(topic, "group_" + topic));
        await using var again = Consumer(topic);
        var redelivered = await again.ReceiveAsync().AsTask().WaitAsync(Deadline);
        Assert.Equal(1L, redelivered.Offset);
        await redelivered.AckAsync();
    }

    [Fact]
    public async Task Dispose_stops_deliveries_before_releasing_so_the_prefetched_and_the_last_come_back_as_first_attempts()
    {
        string topic = await TopicWithAsync(30);
        await using (var consumer = Consumer(topic, o => { o.Strict = true; o.MaxInFlight = 10; }))
        {
            var first = await consumer.ReceiveAsync().AsTask().WaitAsync(Deadline);
            Assert.Equal((0L, 1), (first.Offset, first.Attempt));
        }
        // Released after a stop, not left to the stream's end: nothing counts as a failed delivery.
        await using var again = Consumer(topic, o => o.MaxInFlight = 100);
        var all = new List<BrokerMessage>();
        while (all.Count < 30)
            all.Add(await again.ReceiveAsync().AsTask().WaitAsync(Deadline));
        Assert.Equal(Enumerable.Range(0, 30).Select(i => ((long)i, 1)), all.Select(m => (m.Offset, m.Attempt)).Order());
    }

    [Fact]
    public async Task Batches_fill_up_to_max_count_or_max_wait_and_one_ack_settles_a_chunk()
    {
        string topic = await TopicWithAsync(25);
        await using var consumer = Consumer(topic, o => o.MaxInFlight = 100);

        var first = await consumer.ReceiveBatchAsync(10, TimeSpan.FromSeconds(30));
        var second = await consumer.ReceiveBatchAsync(10, TimeSpan.FromSeconds(30));
        var rest = await consumer.ReceiveBatchAsync(10, TimeSpan.FromMilliseconds(500));
        var empty = await consumer.ReceiveBatchAsync(10, TimeSpan.FromMilliseconds(200));

        Assert.Equal([10, 10, 5, 0], new[] { first.Count, second.Count, rest.Count, empty.Count });
        Assert.Equal(Enumerable.Range(0, 25).Select(i => (long)i), first.Concat(second).Concat(rest).Select(m => m.Offset));
        var result = await consumer.AckAsync([.. first, .. second, .. rest]);
        Assert.Equal(25, result.Accepted);
        Assert.Empty(result.Refused);
        Assert.Equal(new GroupBacklog(0, 0), await BacklogAsync(topic, consumer.Group));
    }

    [Fact]
    public async Task A_batch_wait_of_timespan_max_value_waits_for_the_count_and_does_not_throw()
    {
        string topic = await TopicWithAsync(3);
        await using var consumer = Consumer(topic, o => o.MaxInFlight = 100);

        var batch = await consumer.ReceiveBatchAsync(3, TimeSpan.MaxValue).WaitAsync(Deadline);

        Assert.Equal([0L, 1L, 2L], batch.Select(m => m.Offset));
        Assert.Equal(3, (await consumer.AckAsync(batch)).Accepted);
    }

    [Fact]
    public async Task A_first_batch_with_a_short_wait_subscribes_first_and_then_waits_only_for_messages()
    {
        string topic = await shared.NewTopicAsync("short-wait");
        await using var consumer = Consumer(topic);

        var nothing = await consumer.ReceiveBatchAsync(10, TimeSpan.FromMilliseconds(1));

        Assert.Empty(nothing);
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("1"), OutgoingMessage.FromText("2")]);
        var two = await consumer.ReceiveBatchAsync(2, TimeSpan.FromSeconds(30));
        Assert.Equal([0L, 1L], two.Select(m => m.Offset));
        Assert.Equal(2, (await consumer.AckAsync(two)).Accepted);
    }

    [Fact]
    public async Task A_nack_with_a_delay_brings_the_message_back_and_repeated_failures_land_in_the_dead_letter_topic()
    {
        string topic = await TopicWithAsync(1);
        await using var consumer = Consumer(topic, o => o.MaxDeliveries = 2);

        var first = await consumer.ReceiveAsync().AsTask().WaitAsync(Deadline);
        long nackedAt = Environment.TickCount64;
        await first.NackAsync(TimeSpan.FromMilliseconds(300), "db locked");
        var second = await consumer.ReceiveAsync().AsTask().WaitAsync(Deadline);
        Assert.True(Environment.TickCount64 - nackedAt >= 290, "redelivered before its nack delay");
        Assert.Equal((0L, 2), (second.Offset, second.Attempt));
        await second.NackAsync(TimeSpan.Zero, "db locked again");

        await using var dead = await shared.Client.SubscribeAsync(topic + ".dlq", "inspect");
        var letter = Assert.Single(await Receive.ExactlyAsync(dead, 1));
        Assert.Equal("db locked again", letter.Headers["broker-dlq-last-error"]);
        await Assert.ThrowsAsync<InvalidOperationException>(() => second.AckAsync());
    }

    [Fact]
    public async Task A_handler_slower_than_the_visibility_timeout_keeps_its_message_and_acks_it()
    {
        string topic = await TopicWithAsync(1);
        await using var slow = Consumer(topic, o => o.MaxTimeout = TimeSpan.FromSeconds(1));
        await using var other = Consumer(topic, o => o.MaxTimeout = TimeSpan.FromSeconds(1));
        var message = await slow.ReceiveAsync().AsTask().WaitAsync(Deadline);

        // The slow work: three and a half visibility timeouts. Meanwhile the other consumer of the group must get nothing.
        using var work = new CancellationTokenSource(TimeSpan.FromSeconds(3.5));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await other.ReceiveAsync(work.Token));

        await message.AckAsync();   // not refused as stale: the lease was never lost
        Assert.Equal(1, message.Attempt);
        Assert.Equal(new GroupBacklog(0, 0), await BacklogAsync(topic, slow.Group));
    }

    [Fact]
    public async Task A_settle_refused_for_a_message_given_twice_stops_extending_the_leases_it_gave_up_so_they_come_back()
    {
        string topic = await TopicWithAsync(2);
        await using var consumer = Consumer(topic, o => { o.MaxTimeout = TimeSpan.FromSeconds(1); o.MaxHoldTime = TimeSpan.FromMinutes(10); });
        var batch = await consumer.ReceiveBatchAsync(2, Deadline);
        Assert.Equal(2, batch.Count);

        // The third item repeats the first: refused after both were marked settled, so neither is acked on the broker.
        await Assert.ThrowsAsync<InvalidOperationException>(() => consumer.AckAsync([batch[0], batch[1], batch[0]]));

        // Not held any longer, so not extended: both come back after one visibility timeout, not after max hold time.
        var again = await consumer.ReceiveBatchAsync(2, Deadline);
        Assert.Equal([(0L, 2), (1L, 2)], again.Select(m => (m.Offset, m.Attempt)).Order());
        Assert.Equal(2, (await consumer.AckAsync(again)).Accepted);
    }

    [Fact]
    public async Task A_settle_cut_off_by_a_restart_is_reported_as_not_confirmed_and_the_message_comes_back()
    {
        int port = SdkTesting.FreePort();
        await using var broker = await TestBroker.StartAsync(o => { o.Port = port; o.ShutdownGraceMs = 0; });
        await broker.Client.CreateTopicAsync("cut");
        await broker.Client.PublishAsync("cut", [OutgoingMessage.FromText("1")]);
        await using var consumer = new BrokerConsumer(SdkTesting.Settings(broker.Host.Address, o => o.Topic = "cut"), null, null);
        var held = await consumer.ReceiveAsync().AsTask().WaitAsync(Deadline);

        await broker.RestartAsync();

        var error = await Assert.ThrowsAsync<SettleNotConfirmedException>(() => held.AckAsync());
        Assert.Same(held, Assert.Single(error.Messages));
        var again = await consumer.ReceiveAsync().AsTask().WaitAsync(Deadline);
        Assert.Equal((0L, 2), (again.Offset, again.Attempt));
        await again.AckAsync();
        Assert.True(consumer.Reconnects >= 1);
    }

    [Fact]
    public async Task A_message_held_past_max_hold_time_goes_to_another_consumer_and_the_late_ack_is_refused()
    {
        string topic = await TopicWithAsync(1);
        await using var stuck = Consumer(topic, o => { o.MaxTimeout = TimeSpan.FromMilliseconds(300); o.MaxHoldTime = TimeSpan.FromMilliseconds(1); });
        await using var other = Consumer(topic);
        var message = await stuck.ReceiveAsync().AsTask().WaitAsync(Deadline);

        var taken = await other.ReceiveAsync().AsTask().WaitAsync(Deadline);

        // The stuck consumer may get it back once more (it competes too) before the other one does.
        Assert.Equal(0L, taken.Offset);
        Assert.True(taken.Attempt >= 2);
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => message.AckAsync());
        Assert.Equal((StatusCode.FailedPrecondition, 1101), (error.Status, error.ErrorCode));
        await taken.AckAsync();
    }
}
