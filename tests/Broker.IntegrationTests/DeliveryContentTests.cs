using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// Deliveries are read into pooled memory that serves the next reads once their frame is written: every delivered
/// byte must still be the published one, however often that memory was reused.
/// </summary>
public sealed class DeliveryContentTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private const int Messages = 2_000;

    [Fact]
    public async Task Competing_consumers_receive_every_message_byte_for_byte_through_many_reused_read_buffers()
    {
        string topic = await shared.NewTopicAsync();
        for (int batch = 0; batch < Messages; batch += 250)
        {
            await shared.Client.PublishAsync(topic, Enumerable.Range(batch, 250).Select(i =>
                new OutgoingMessage(PayloadOf(i), KeyOf(i), new Dictionary<string, string> { ["index"] = i.ToString() })));
        }

        // Small credit: many small fetches, so the pooled chunks are handed out and returned many times over.
        var options = new SubscribeOptions { MaxInFlight = 16 };
        await using var first = await shared.Client.SubscribeAsync(topic, "writers", options);
        await using var second = await shared.Client.SubscribeAsync(topic, "writers", options);
        var seen = new bool[Messages];
        int total = 0;
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        async Task ConsumeAsync(BrokerSubscription subscription)
        {
            while (Volatile.Read(ref total) < Messages)
            {
                ReceivedMessage message;
                try
                {
                    message = await subscription.ReceiveAsync(deadline.Token);
                }
                catch (OperationCanceledException) when (Volatile.Read(ref total) >= Messages)
                {
                    return;
                }
                int index = (int)message.Offset;
                Assert.Equal(PayloadOf(index), message.Payload.ToArray());
                Assert.Equal(KeyOf(index), message.Key.ToArray());
                Assert.Equal(index.ToString(), message.Headers["index"]);
                lock (seen)
                {
                    Assert.False(seen[index], $"offset {index} delivered twice");
                    seen[index] = true;
                }
                await subscription.AckAsync(message);
                if (Interlocked.Increment(ref total) == Messages)
                    await deadline.CancelAsync();
            }
        }

        await Task.WhenAll(ConsumeAsync(first), ConsumeAsync(second));
        Assert.All(seen, Assert.True);
    }

    /// <summary>Sizes from 1 byte to about 4 KiB, and every 97th message above one pooled chunk (16 KiB).</summary>
    private static byte[] PayloadOf(int index)
    {
        int length = index % 97 == 0 ? 100_000 + index : 1 + index * 7919 % 4_000;
        var payload = new byte[length];
        for (int i = 0; i < length; i++)
            payload[i] = (byte)(index * 31 + i * 7);
        BitConverter.TryWriteBytes(payload.AsSpan(0, Math.Min(4, length)), index);
        return payload;
    }

    private static byte[] KeyOf(int index) => BitConverter.GetBytes(index * 1_000_003L);
}
