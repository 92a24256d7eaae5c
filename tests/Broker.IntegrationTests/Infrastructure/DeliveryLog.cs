using System.Collections.Concurrent;
using Broker.Client;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>Helpers for reading a topic in a test: every message of a topic, through a throwaway group.</summary>
public static class TopicReader
{
    public static async Task<List<ReceivedMessage>> ReadAllAsync(BrokerClient client, string topic, int expected)
    {
        await using var reader = await client.SubscribeAsync(topic, $"reader-{Guid.NewGuid():N}", new SubscribeOptions { MaxInFlight = 10_000 });
        var messages = await Receive.ExactlyAsync(reader, expected);
        await Receive.NothingMoreAsync(reader);
        return messages;
    }
}

/// <summary>Who holds which offset right now, to prove no message is in flight at two consumers at once.</summary>
public sealed class HolderLog
{
    private readonly ConcurrentDictionary<long, string> _holders = new();

    public ConcurrentBag<(long Offset, string Consumer)> Deliveries { get; } = [];

    public void Received(long offset, string consumer)
    {
        Assert.True(_holders.TryAdd(offset, consumer), $"offset {offset} delivered to {consumer} while {_holders.GetValueOrDefault(offset)} holds it");
        Deliveries.Add((offset, consumer));
    }

    public void Settled(long offset) => _holders.TryRemove(offset, out _);
}
