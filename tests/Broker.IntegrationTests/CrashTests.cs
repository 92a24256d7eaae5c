using System.Collections.Concurrent;
using System.Security.Cryptography;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Broker.IntegrationTests;

/// <summary>
/// SIGKILL of a child broker while producers publish and a consumer acks, then a restart on the same folder.
/// Invariants: every publish that was acknowledged is read back intact at its offsets; every batch is all or
/// nothing; no message whose ack was confirmed is delivered again; every other message is delivered again.
/// </summary>
public sealed class CrashTests(ITestOutputHelper output)
{
    private const int Producers = 4;
    private const int AcknowledgedBeforeKill = 3_000;

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Sigkill_while_publishing_and_acking_loses_nothing_acknowledged(int round)
    {
        string data = TestBroker.NewDataDirectory();
        var acknowledged = new ConcurrentDictionary<long, string>();   // offset → payload hash, for confirmed publishes
        var confirmedAcks = new ConcurrentDictionary<long, bool>();
        var sentForAck = new ConcurrentDictionary<long, bool>();
        var enoughPublished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            // 1. A child broker; producers publish checksummed batches, a consumer acks what it receives.
            using (var broker = await BrokerProcess.StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
            {
                await client.CreateTopicAsync("crash");
                // Created now, so the log is kept for it: a topic is truncated below its groups' lowest ack floor.
                await client.CreateGroupAsync("crash", "auditor");
                await using var subscription = await client.SubscribeAsync("crash", "workers", new SubscribeOptions { MaxInFlight = 500 });
                using var stop = new CancellationTokenSource();
                var producers = Enumerable.Range(0, Producers)
                    .Select(p => Task.Run(() => ProduceAsync(client, p, round, acknowledged, enoughPublished, stop.Token)))
                    .ToArray();
                var consumer = Task.Run(() => ConsumeAndAckAsync(subscription, sentForAck, confirmedAcks, stop.Token));

                // 2. Kill once enough publishes were acknowledged.
                await enoughPublished.Task.WaitAsync(TimeSpan.FromSeconds(120));
                broker.Kill();
                stop.Cancel();
                await Task.WhenAll(producers.Append(consumer)).WaitAsync(TimeSpan.FromSeconds(60));
            }
            Assert.True(acknowledged.Count >= AcknowledgedBeforeKill);

            // 3. Restart on the same folder and read everything back.
            using (var broker = await BrokerProcess.StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
            {
                var description = await client.DescribeTopicAsync("crash");
                long next = (long)description.NextOffset;
                Assert.True(next > acknowledged.Keys.Max(), $"next offset {next} is below an acknowledged offset {acknowledged.Keys.Max()}");

                await using (var auditor = await client.SubscribeAsync("crash", "auditor", new SubscribeOptions { MaxInFlight = 100_000 }))
                {
                    Assert.False(auditor.Subscribed.GroupCreated);
                    var all = await Receive.ExactlyAsync(auditor, (int)next);
                    Assert.Equal(Enumerable.Range(0, (int)next).Select(i => (long)i), all.Select(m => m.Offset));
                    foreach (var message in all)
                    {
                        string hash = Hash(message.Payload.Span);
                        Assert.Equal(message.Headers["sha256"], hash);
                        if (acknowledged.TryGetValue(message.Offset, out string? expected))
                            Assert.Equal(expected, hash);
                    }
                    foreach (var batch in all.GroupBy(m => m.Headers["batch"]))
                        Assert.Equal(int.Parse(batch.First().Headers["count"]), batch.Count());
                }

                long backlog = (long)description.Groups.Single(g => g.Name == "workers").Backlog;
                await using var workers = await client.SubscribeAsync("crash", "workers", new SubscribeOptions { MaxInFlight = 100_000 });
                var redelivered = await Receive.ExactlyAsync(workers, (int)backlog);
                await Receive.NothingMoreAsync(workers);
                var redeliveredOffsets = redelivered.Select(m => m.Offset).ToHashSet();
                output.WriteLine($"round {round}: {acknowledged.Count} publishes acknowledged, {next} messages after restart, " +
                    $"{confirmedAcks.Count} acks confirmed, {sentForAck.Count} sent, {redelivered.Count} redelivered");
                Assert.DoesNotContain(redeliveredOffsets, confirmedAcks.ContainsKey);
                for (long offset = 0; offset < next; offset++)
                {
                    Assert.True(redeliveredOffsets.Contains(offset) || sentForAck.ContainsKey(offset),
                        $"offset {offset} was neither redelivered nor ever acked");
                }
            }
        }
        finally
        {
            try
            {
                Directory.Delete(data, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static async Task ProduceAsync(BrokerClient client, int producer, int round, ConcurrentDictionary<long, string> acknowledged,
        TaskCompletionSource enoughPublished, CancellationToken stop)
    {
        var random = new Random(HashCode.Combine(producer, round));
        for (int sequence = 0; !stop.IsCancellationRequested; sequence++)
        {
            int count = random.Next(1, 21);
            var batch = new List<OutgoingMessage>(count);
            var hashes = new string[count];
            for (int i = 0; i < count; i++)
            {
                var payload = new byte[random.Next(16, 2048)];
                random.NextBytes(payload);
                hashes[i] = Hash(payload);
                batch.Add(new OutgoingMessage(payload, Headers: new Dictionary<string, string>
                {
                    ["sha256"] = hashes[i],
                    ["batch"] = $"{producer}-{sequence}",
                    ["count"] = count.ToString(System.Globalization.CultureInfo.InvariantCulture),
                }));
            }
            PublishResult result;
            try
            {
                result = await client.PublishAsync("crash", batch, stop);
            }
            catch (Exception error) when (error is BrokerClientException or OperationCanceledException)
            {
                return;   // the broker died: this batch was never acknowledged
            }
            for (int i = 0; i < count; i++)
                acknowledged[result.FirstOffset + i] = hashes[i];
            if (acknowledged.Count >= AcknowledgedBeforeKill)
                enoughPublished.TrySetResult();
        }
    }

    private static async Task ConsumeAndAckAsync(BrokerSubscription subscription, ConcurrentDictionary<long, bool> sentForAck,
        ConcurrentDictionary<long, bool> confirmedAcks, CancellationToken stop)
    {
        try
        {
            while (!stop.IsCancellationRequested)
            {
                var batch = new List<ReceivedMessage> { await subscription.ReceiveAsync(stop) };
                while (batch.Count < 100 && subscription.TryReceive(out var more))
                    batch.Add(more);
                foreach (var message in batch)
                    sentForAck[message.Offset] = true;
                var result = await subscription.AckAsync(batch, stop);
                Assert.Empty(result.Refused);
                foreach (var message in batch)
                    confirmedAcks[message.Offset] = true;
            }
        }
        catch (Exception error) when (error is BrokerClientException or OperationCanceledException)
        {
        }
    }

    private static string Hash(ReadOnlySpan<byte> payload) => Convert.ToHexString(SHA256.HashData(payload));
}
