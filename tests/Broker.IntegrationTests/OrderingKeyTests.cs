using System.Collections.Concurrent;
using System.Text;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// Ordering keys on the real broker, over gRPC with the SDK: in a group ordered by key, competing consumers get the
/// messages of one key one at a time and in publish order, also when one of them fails in the middle and is delivered
/// again, while different keys proceed in parallel; the setting survives a restart.
/// </summary>
public sealed class OrderingKeyTests
{
    private const int Keys = 10, PerKey = 30, Unkeyed = 30;

    [Fact]
    public async Task Competing_consumers_get_each_keys_messages_one_at_a_time_in_publish_order_across_a_redelivery()
    {
        await using var broker = await TestBroker.StartAsync();
        var client = broker.Client;
        await client.CreateTopicAsync("orders");
        await client.CreateGroupAsync("orders", "billing", options: new GroupOptions { OrderedByKey = true });
        // Interleaved keys: k0 #0, k1 #0, ..., k9 #0, k0 #1, ...; and messages without a key among them.
        var messages = new List<OutgoingMessage>();
        for (int seq = 0; seq < PerKey; seq++)
        {
            for (int k = 0; k < Keys; k++)
                messages.Add(new OutgoingMessage(Encoding.UTF8.GetBytes($"k{k}:{seq}"), Encoding.UTF8.GetBytes($"k{k}")));
            messages.Add(OutgoingMessage.FromText($"free:{seq}"));
        }
        await client.PublishAsync("orders", messages);

        var outstanding = new ConcurrentDictionary<string, int>();
        var processed = new ConcurrentDictionary<string, ConcurrentQueue<int>>();
        int overlaps = 0, mostKeysAtOnce = 0, done = 0, failedOnce = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var allDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        async Task ConsumeAsync(int consumer)
        {
            await using var subscription = await client.SubscribeAsync("orders", "billing", new SubscribeOptions { MaxInFlight = 8 });
            while (!allDone.Task.IsCompleted)
            {
                ReceivedMessage message;
                try
                {
                    message = await subscription.ReceiveAsync(timeout.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                string[] parts = message.PayloadText.Split(':');
                string key = parts[0];
                if (key != "free")
                {
                    if (outstanding.AddOrUpdate(key, 1, (_, n) => n + 1) > 1)
                        Interlocked.Increment(ref overlaps);
                    InterlockedMax(ref mostKeysAtOnce, outstanding.Count(p => p.Value > 0));
                }
                // Work takes a moment, so keys overlap in time across consumers.
                await Task.Delay(Random.Shared.Next(0, 3));
                if (message.PayloadText == "k3:5" && Interlocked.Exchange(ref failedOnce, 1) == 0)
                {
                    // Fails once: redelivered, and k3's later messages must wait for it.
                    outstanding.AddOrUpdate(key, 0, (_, n) => n - 1);
                    await subscription.NackAsync([message], TimeSpan.Zero, "flaky");
                    continue;
                }
                processed.GetOrAdd(key, _ => new ConcurrentQueue<int>()).Enqueue(int.Parse(parts[1]));
                if (key != "free")
                    outstanding.AddOrUpdate(key, 0, (_, n) => n - 1);
                Assert.Equal(1, (await subscription.AckAsync(message)).Accepted);
                if (Interlocked.Increment(ref done) == messages.Count)
                    allDone.TrySetResult();
            }
        }

        var consumers = Enumerable.Range(0, 3).Select(c => Task.Run(() => ConsumeAsync(c))).ToList();
        await allDone.Task.WaitAsync(TimeSpan.FromSeconds(60));
        await timeout.CancelAsync();
        await Task.WhenAll(consumers);

        Assert.Equal(0, overlaps);
        Assert.Equal(1, failedOnce);
        for (int k = 0; k < Keys; k++)
            Assert.Equal(Enumerable.Range(0, PerKey), processed[$"k{k}"]);
        Assert.Equal(Unkeyed, processed["free"].Count);
        Assert.True(mostKeysAtOnce > 1, "different keys were meant to be out at the same time");

        await broker.RestartAsync();
        Assert.True((await broker.Client.DescribeTopicAsync("orders")).Groups.Single().Settings.OrderedByKey);
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int current;
        while (value > (current = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, current) != current)
        {
        }
    }
}
