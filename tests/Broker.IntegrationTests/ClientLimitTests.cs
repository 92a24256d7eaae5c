using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// Limits that keep one client from exhausting the broker (docs/security.md, "Limits"): streams per client, and a
/// key's publish rate, on the real broker.
/// </summary>
public sealed class ClientLimitTests
{
    private static string BootstrapToken(TestBroker broker) => File.ReadAllText(Path.Combine(broker.DataDirectory, "bootstrap.token")).Trim();

    [Fact]
    public async Task A_key_opening_streams_past_its_limit_is_refused_while_its_open_streams_and_other_keys_go_on()
    {
        await using var broker = await TestBroker.StartAsync(options =>
        {
            options.RequireApiKeys = true;
            options.MaxStreamsPerClient = 3;
        });
        using var admin = new BrokerClient(broker.Host.Address, BootstrapToken(broker));
        await admin.CreateTopicAsync("jobs");
        var greedy = await admin.CreateApiKeyAsync("greedy", ["consume:jobs", "publish:jobs"]);
        var polite = await admin.CreateApiKeyAsync("polite", ["consume:jobs"]);
        using var greedyClient = new BrokerClient(broker.Host.Address, greedy.Token);
        using var politeClient = new BrokerClient(broker.Host.Address, polite.Token);

        var held = new List<BrokerSubscription>();
        for (int i = 0; i < 3; i++)
            held.Add(await greedyClient.SubscribeAsync("jobs", "greedy-" + i));
        var refused = await Assert.ThrowsAsync<BrokerClientException>(() => greedyClient.SubscribeAsync("jobs", "greedy-3"));
        Assert.Equal((StatusCode.ResourceExhausted, 1303), (refused.Status, refused.ErrorCode));

        // Another key is its own client; the greedy key's streams still deliver, and its unary calls still work.
        await using var other = await politeClient.SubscribeAsync("jobs", "polite");
        await greedyClient.PublishAsync("jobs", [OutgoingMessage.FromText("m")]);
        Assert.Equal("m", (await Receive.ExactlyAsync(other, 1))[0].PayloadText);
        Assert.Equal("m", (await Receive.ExactlyAsync(held[0], 1))[0].PayloadText);

        // Closing a stream makes room again (the broker counts it closed once the call has ended on its side).
        await held[2].DisposeAsync();
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        BrokerSubscription? again = null;
        while (again is null)
        {
            try
            {
                again = await greedyClient.SubscribeAsync("jobs", "greedy-3", cancellationToken: deadline.Token);
            }
            catch (BrokerClientException error) when (error.ErrorCode == 1303 && !deadline.IsCancellationRequested)
            {
                await Task.Yield();
            }
        }
        await again.DisposeAsync();
        foreach (var subscription in held.Take(2))
            await subscription.DisposeAsync();
    }

    [Fact]
    public async Task Without_keys_the_client_is_its_address()
    {
        await using var broker = await TestBroker.StartAsync(options => options.MaxStreamsPerClient = 2);
        await broker.Client.CreateTopicAsync("t");
        await using var first = await broker.Client.SubscribeAsync("t", "a");
        await using var second = await broker.Client.SubscribeAsync("t", "b");
        var refused = await Assert.ThrowsAsync<BrokerClientException>(() => broker.Client.SubscribeAsync("t", "c"));
        Assert.Equal((StatusCode.ResourceExhausted, 1303), (refused.Status, refused.ErrorCode));
        Assert.Equal(0L, (await broker.Client.PublishAsync("t", [OutgoingMessage.FromText("unary calls are not streams")])).FirstOffset);
    }

    [Fact]
    public async Task A_batch_larger_than_the_keys_bucket_pays_for_every_message_and_a_revocation_ends_a_waiting_publish_cleanly()
    {
        await using var broker = await TestBroker.StartAsync(options => options.RequireApiKeys = true);
        using var admin = new BrokerClient(broker.Host.Address, BootstrapToken(broker));
        await admin.CreateTopicAsync("metered");
        var key = await admin.CreateApiKeyAsync("metered", ["publish:metered"], maxPublishRate: 2);
        using var client = new BrokerClient(broker.Host.Address, key.Token);

        // 2 messages a second, a bucket of 2: 8 messages need 6 refills after the full bucket, 3 s. The bound is a lower
        // one (the limiter cannot be faster than its rate), so a slow machine cannot fail it. Before, a batch larger
        // than the bucket paid for one bucket: 2 + 6 messages went through in about 1 s.
        var started = System.Diagnostics.Stopwatch.StartNew();
        await client.PublishAsync("metered", [OutgoingMessage.FromText("a"), OutgoingMessage.FromText("b")]);
        await client.PublishAsync("metered", Enumerable.Range(0, 6).Select(i => OutgoingMessage.FromText($"batch-{i}")).ToList());
        Assert.True(started.Elapsed >= TimeSpan.FromSeconds(2.5), $"8 messages at 2/s with a bucket of 2 went through in {started.Elapsed}");
        Assert.Equal(8UL, (await admin.DescribeTopicAsync("metered")).NextOffset);

        // Revoked while a publish waits for the bucket: the call ends, nothing of it is stored, and the broker logs no
        // error (the key's limiter is not disposed under the waiting publish).
        var waiting = client.PublishAsync("metered", Enumerable.Range(0, 4).Select(i => OutgoingMessage.FromText($"late-{i}")).ToList());
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (broker.Host.Keys.PublishesWaiting(key.Key.Id) == 0)  // permits queued: a part of the batch waits
            await Task.Delay(1, deadline.Token);
        await admin.RevokeApiKeyAsync(key.Key.Id);
        var ended = await Assert.ThrowsAsync<BrokerClientException>(() => waiting.WaitAsync(deadline.Token));
        Assert.NotEqual(Grpc.Core.StatusCode.Internal, ended.Status);
        Assert.Equal(8UL, (await admin.DescribeTopicAsync("metered")).NextOffset);
        Assert.Empty(broker.Logs.Errors);
    }

    [Fact]
    public async Task A_key_past_its_publish_rate_waits_for_the_bucket_to_refill_and_nothing_is_lost()
    {
        await using var broker = await TestBroker.StartAsync(options => options.RequireApiKeys = true);
        using var admin = new BrokerClient(broker.Host.Address, BootstrapToken(broker));
        await admin.CreateTopicAsync("metered");
        var key = await admin.CreateApiKeyAsync("metered", ["publish:metered"], maxPublishRate: 1);
        Assert.Equal(1u, (await admin.ListApiKeysAsync()).Single(listed => listed.Id == key.Key.Id).MaxPublishRate);
        using var client = new BrokerClient(broker.Host.Address, key.Token);

        // A full bucket (one second's worth) passes at once; the next message waits for the refill, about a second.
        await client.PublishAsync("metered", [OutgoingMessage.FromText("first")]);
        var waiting = client.PublishAsync("metered", [OutgoingMessage.FromText("second")]);
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (broker.Host.Keys.PublishesWaiting(key.Key.Id) != 1)
        {
            Assert.False(waiting.IsCompleted, $"the second publish did not wait for the rate: {waiting.Status}");
            await Task.Delay(1, deadline.Token);
        }
        // Nothing of a waiting batch is stored: read the topic, then check the batch was still waiting after the read.
        ulong nextOffset = (await admin.DescribeTopicAsync("metered")).NextOffset;
        if (broker.Host.Keys.PublishesWaiting(key.Key.Id) == 1)
            Assert.Equal(1UL, nextOffset);

        Assert.Equal(1L, (await waiting.WaitAsync(deadline.Token)).FirstOffset);
        Assert.Equal(2UL, (await admin.DescribeTopicAsync("metered")).NextOffset);
    }
}
