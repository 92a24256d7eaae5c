using Broker.Client;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>Awaiting deliveries with a generous deadline instead of sleeping: a hang fails the test, not the run.</summary>
public static class Receive
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    public static async Task<List<ReceivedMessage>> ExactlyAsync(BrokerSubscription subscription, int count)
    {
        using var timeout = new CancellationTokenSource(Deadline);
        var received = new List<ReceivedMessage>(count);
        while (received.Count < count)
            received.Add(await subscription.ReceiveAsync(timeout.Token));
        return received;
    }

    /// <summary>Asserts nothing more arrives within a short window (used after every expected message was received).</summary>
    public static async Task NothingMoreAsync(BrokerSubscription subscription, TimeSpan? window = null)
    {
        using var timeout = new CancellationTokenSource(window ?? TimeSpan.FromMilliseconds(300));
        try
        {
            var extra = await subscription.ReceiveAsync(timeout.Token);
            Assert.Fail($"unexpected delivery of offset {extra.Offset} (attempt {extra.Attempt})");
        }
        catch (OperationCanceledException)
        {
        }
    }
}
