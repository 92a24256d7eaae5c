using System.Text;
using System.Text.Json;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests.Sdk;

/// <summary>BrokerProducer against the real broker: batching, per-message durable tasks, flush, backpressure, retries.</summary>
public sealed class ProducerTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Messages_sent_without_waiting_are_published_in_batches_each_task_completing_with_its_durable_offset()
    {
        string topic = await shared.NewTopicAsync("produce");
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address, o =>
        {
            o.MaxBatchMessages = 500;
            o.Linger = TimeSpan.FromMilliseconds(50);
        }), null, null);

        var durable = new List<Task<PublishedMessage>>();
        for (int i = 0; i < 2_000; i++)
            durable.Add(await producer.SendAsync(topic, new { n = i }));
        var published = await Task.WhenAll(durable).WaitAsync(Deadline);

        // Offsets are unique, contiguous, and every one below the topic's next offset, which only counts durable messages.
        Assert.Equal(Enumerable.Range(0, 2_000).Select(i => (long)i), published.Select(p => p.Offset).Order());
        Assert.Equal(2_000UL, (await shared.Client.DescribeTopicAsync(topic)).NextOffset);
        Assert.InRange(producer.BatchesPublished, 4, 40);

        await using var reader = await shared.Client.SubscribeAsync(topic, "check", new SubscribeOptions { MaxInFlight = 5_000 });
        var messages = await Receive.ExactlyAsync(reader, 2_000);
        var byOffset = messages.ToDictionary(m => m.Offset);
        for (int i = 0; i < 2_000; i++)
            Assert.Equal(i, JsonDocument.Parse(byOffset[published[i].Offset].Payload).RootElement.GetProperty("n").GetInt32());
    }

    [Fact]
    public async Task Values_go_as_json_with_a_source_generated_context_and_bytes_go_as_they_are()
    {
        string topic = await shared.NewTopicAsync("json");
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address), null, null);
        var item = new ScrapedItem("https://example.com", 200, ["a", "b"]);

        var first = await producer.SendAsync(topic, item, SdkJsonContext.Default.ScrapedItem);
        var second = await producer.SendAsync(topic, "raw \u00e9"u8.ToArray());
        var third = await producer.SendAsync(topic, new OutgoingMessage("k-payload"u8.ToArray(), "key-1"u8.ToArray(),
            new Dictionary<string, string> { ["trace"] = "t1" }));
        await Task.WhenAll(first, second, third).WaitAsync(Deadline);

        await using var reader = await shared.Client.SubscribeAsync(topic, "check");
        var messages = await Receive.ExactlyAsync(reader, 3);
        Assert.Equal("""{"url":"https://example.com","status":200,"tags":["a","b"]}""", messages[0].PayloadText);
        Assert.Equal("raw \u00e9", messages[1].PayloadText);
        Assert.Equal("key-1", Encoding.UTF8.GetString(messages[2].Key.Span));
        Assert.Equal("t1", messages[2].Headers["trace"]);
    }

    [Fact]
    public async Task A_caller_may_reuse_its_payload_buffer_once_send_returns_even_when_the_send_waits_for_room()
    {
        string topic = await shared.NewTopicAsync("reuse");
        // Room for one message: the second send waits until the first is durable, holding the caller's bytes meanwhile.
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address, o =>
        {
            o.BufferMessages = 1;
            o.Linger = TimeSpan.Zero;
        }), null, null);
        var buffer = "first"u8.ToArray();

        var first = await producer.SendAsync(topic, buffer);
        "XXXXX"u8.CopyTo(buffer);
        var secondBuffer = "secnd"u8.ToArray();
        var second = producer.SendAsync(topic, new OutgoingMessage(secondBuffer, "key-2"u8.ToArray()));
        "YYYYY"u8.CopyTo(secondBuffer);
        await Task.WhenAll(first, await second).WaitAsync(Deadline);

        await using var reader = await shared.Client.SubscribeAsync(topic, "check");
        var messages = await Receive.ExactlyAsync(reader, 2);
        Assert.Equal(["first", "secnd"], messages.Select(m => m.PayloadText));
        Assert.Equal("key-2", Encoding.UTF8.GetString(messages[1].Key.Span));
    }

    [Fact]
    public async Task A_message_larger_than_the_batch_limit_goes_alone_and_batches_of_several_topics_keep_each_topics_order()
    {
        string big = await shared.NewTopicAsync("big");
        string small = await shared.NewTopicAsync("small");
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address, o =>
        {
            o.MaxBatchBytes = 4_096;
            o.Linger = TimeSpan.FromMilliseconds(20);
        }), null, null);

        // Three messages over the limit, sent within one linger: each is a batch of its own.
        var bigOnes = new List<Task<PublishedMessage>>();
        for (int i = 0; i < 3; i++)
            bigOnes.Add(await producer.SendAsync(big, new byte[10_000]));
        Assert.Equal([0L, 1L, 2L], (await Task.WhenAll(bigOnes).WaitAsync(Deadline)).Select(p => p.Offset));
        Assert.Equal(3, producer.BatchesPublished);

        var sent = new List<Task<PublishedMessage>>();
        for (int i = 0; i < 300; i++)
        {
            sent.Add(await producer.SendAsync(small, new { n = i }));
            if (i % 100 == 0)
                sent.Add(await producer.SendAsync(big, new byte[10_000]));
        }
        var published = await Task.WhenAll(sent).WaitAsync(Deadline);

        Assert.Equal([3L, 4L, 5L], published.Where(p => p.Topic == big).Select(p => p.Offset));
        // Offsets follow send order within a topic: the batches of one topic are published in the order they filled.
        Assert.Equal(Enumerable.Range(0, 300).Select(i => (long)i), published.Where(p => p.Topic == small).Select(p => p.Offset));
    }

    [Fact]
    public async Task Batches_open_on_many_topics_at_once_are_each_published_whether_filled_or_lingered_out()
    {
        var topics = new List<string>();
        for (int t = 0; t < 40; t++)
            topics.Add(await shared.NewTopicAsync($"many{t}"));
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address, o =>
        {
            o.Linger = TimeSpan.FromMilliseconds(50);
            o.MaxBatchMessages = 3;
        }), null, null);

        // Forty batches open together; the first and a middle one fill up and go at once, out of the order they opened
        // in; the rest go when their linger ends.
        var sent = new List<Task<PublishedMessage>>();
        foreach (string topic in topics)
            sent.Add(await producer.SendAsync(topic, 0));
        foreach (string full in new[] { topics[0], topics[20] })
        {
            for (int n = 1; n < 3; n++)
                sent.Add(await producer.SendAsync(full, n));
        }
        foreach (string topic in topics.Skip(30))
            sent.Add(await producer.SendAsync(topic, 1));
        var published = await Task.WhenAll(sent).WaitAsync(Deadline);

        foreach (var (topic, index) in topics.Select((t, i) => (t, i)))
        {
            long expected = index is 0 or 20 ? 3 : index >= 30 ? 2 : 1;
            Assert.Equal(Enumerable.Range(0, (int)expected).Select(i => (long)i), published.Where(p => p.Topic == topic).Select(p => p.Offset));
        }
    }

    [Fact]
    public async Task A_quiet_topics_batch_goes_when_its_linger_ends_while_a_busy_topic_keeps_batches_queued()
    {
        string busy = await shared.NewTopicAsync("busy");
        string quiet = await shared.NewTopicAsync("quiet");
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address, o =>
        {
            // Each busy message is larger than a batch may be, so it goes alone and at once; with a buffer far beyond
            // the batches in flight, the busy topic's sealed batches stay queued for as long as it keeps sending.
            o.MaxBatchBytes = 1_024;
            o.BufferMessages = 2_000;
            o.Linger = TimeSpan.FromMilliseconds(20);
        }), null, null);
        var large = new byte[2_000];
        for (int i = 0; i < 2_000; i++)
            _ = await producer.SendAsync(busy, large);

        // A small message opens the quiet topic's batch, which only its linger can seal.
        var quietSent = await producer.SendAsync(quiet, "q");
        int busySent = 0;
        while (!quietSent.IsCompleted && busySent < 100_000)
        {
            _ = await producer.SendAsync(busy, large);
            busySent++;
        }
        Assert.True(quietSent.IsCompleted, $"the quiet topic's message was still waiting after {busySent} busy sends");
        Assert.Equal(0, (await quietSent).Offset);
        await producer.FlushAsync().WaitAsync(Deadline);
    }

    [Fact]
    public async Task Flush_returns_once_everything_sent_before_it_is_durable()
    {
        string topic = await shared.NewTopicAsync("flush");
        // A linger far longer than the test: only the flush can make the producer publish early.
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address, o => o.Linger = TimeSpan.FromMinutes(5)), null, null);
        var sent = new List<Task<PublishedMessage>>();
        for (int i = 0; i < 10; i++)
            sent.Add(await producer.SendAsync(topic, i));

        await producer.FlushAsync().WaitAsync(Deadline);

        Assert.All(sent, task => Assert.True(task.IsCompletedSuccessfully));
        Assert.Equal(10UL, (await shared.Client.DescribeTopicAsync(topic)).NextOffset);
    }

    [Fact]
    public async Task A_linger_longer_than_a_timer_can_wait_leaves_the_producer_working_and_flush_publishes()
    {
        string topic = await shared.NewTopicAsync("longlinger");
        string other = await shared.NewTopicAsync("filled");
        // Sixty days: beyond the longest single timer wait (about 49.7 days), which a plain Task.Delay refuses.
        var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address, o =>
        {
            o.Linger = TimeSpan.FromDays(60);
            o.MaxBatchMessages = 2;
        }), null, null);
        // Disposed within the deadline: a producer whose loop stopped would never finish its last flush.
        await using var disposal = new DisposeWithin(producer, Deadline);
        var lingering = await producer.SendAsync(topic, 0);
        // A full batch behind it: once that one is durable, the producer's loop has passed the open batch and set its
        // timer for the linger's end.
        var full = new[] { await producer.SendAsync(other, 1), await producer.SendAsync(other, 2) };
        await Task.WhenAll(full).WaitAsync(Deadline);
        Assert.False(lingering.IsCompleted);

        await producer.FlushAsync().WaitAsync(Deadline);
        Assert.Equal(0, (await lingering).Offset);
    }

    [Fact]
    public async Task Application_code_blocking_in_a_durable_tasks_continuation_does_not_hold_the_room_of_the_sends_behind_it()
    {
        string topic = await shared.NewTopicAsync("inline");
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address, o =>
        {
            o.BufferMessages = 1;
            o.Linger = TimeSpan.Zero;
        }), null, null);
        using var gate = new ManualResetEventSlim();
        var first = await producer.SendAsync(topic, 0);
        // Runs on the thread that completes the task, and blocks it until the second message is durable: that needs
        // the room the first one held.
        var blocked = first.ContinueWith(_ => gate.Wait(Deadline * 2), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

        var second = await producer.SendAsync(topic, 1).AsTask().WaitAsync(Deadline);
        var published = await second.WaitAsync(Deadline);
        gate.Set();

        Assert.True(await blocked.WaitAsync(Deadline));
        Assert.Equal((0L, 1L), ((await first).Offset, published.Offset));
    }

    [Fact]
    public async Task A_refused_batch_fails_its_messages_at_once_and_flush_reports_them()
    {
        await using var producer = new BrokerProducer(SdkTesting.Settings(shared.Broker.Host.Address), null, null);
        var refused = await producer.SendAsync("no such topic!", 1);

        var error = await Assert.ThrowsAsync<BrokerClientException>(() => refused.WaitAsync(Deadline));
        Assert.Equal(StatusCode.InvalidArgument, error.Status);
        Assert.Equal(1002, error.ErrorCode);
        var failed = await Assert.ThrowsAsync<PublishFailedException>(() => producer.FlushAsync());
        Assert.Equal("no such topic!", Assert.Single(failed.Failures).Topic);
        await producer.FlushAsync();   // reported once
    }

    [Fact]
    public async Task A_full_buffer_makes_send_wait_until_the_broker_comes_up_and_a_listener_that_is_down_is_skipped()
    {
        int downPort = SdkTesting.FreePort();
        int laterPort = SdkTesting.FreePort();
        // Two listeners, neither up yet: sends are retried across both until one comes up.
        await using var producer = new BrokerProducer(SdkTesting.Settings($"127.0.0.1:{downPort},127.0.0.1:{laterPort}", o =>
        {
            o.BufferMessages = 10;
            o.Linger = TimeSpan.Zero;
        }), null, null);

        var accepted = new List<Task<PublishedMessage>>();
        for (int i = 0; i < 10; i++)
        {
            var send = producer.SendAsync("bp", i);
            Assert.True(send.IsCompleted, $"send {i} waited although the buffer had room");
            accepted.Add(await send);
        }
        var eleventh = producer.SendAsync("bp", 10).AsTask();
        Assert.False(eleventh.IsCompleted);
        Assert.All(accepted, task => Assert.False(task.IsCompleted));

        // Topics on first use, as the real server's default: the retried batches may arrive before anyone could create it.
        await using var broker = await TestBroker.StartAsync(o => { o.Port = laterPort; o.AutoCreateTopics = true; });

        var last = await eleventh.WaitAsync(Deadline);
        var offsets = await Task.WhenAll(accepted.Append(last)).WaitAsync(Deadline);
        Assert.Equal(Enumerable.Range(0, 11).Select(i => (long)i), offsets.Select(p => p.Offset).Order());
        Assert.Equal(11UL, (await broker.Client.DescribeTopicAsync("bp")).NextOffset);
    }

    private sealed class DisposeWithin(IAsyncDisposable inner, TimeSpan deadline) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await inner.DisposeAsync().AsTask().WaitAsync(deadline);
    }
}
