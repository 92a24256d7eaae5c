using System.Collections.Concurrent;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Broker.IntegrationTests;

/// <summary>
/// SIGKILL of a child broker the moment maintenance deletes a segment file of a topic whose only group pins nothing
/// else: small segments, frequent maintenance and one commit at a time widen the window between the message log's
/// truncation and the group-state log's commit. Invariants after the restart: the group's ack floor is not below the
/// log's first message (nothing it did not durably acknowledge was truncated, and the broker reports no loss); every
/// message still stored that had no confirmed ack is delivered again, none with a confirmed ack is; every message
/// truncated away had been acked; and the group is not wedged: it drains, and later acks free disk again.
/// </summary>
public sealed class TruncationCrashTests(ITestOutputHelper output)
{
    private const string Topic = "trunc";
    private const int AckFrame = 20;
    private static readonly string[] SmallSegmentsArguments =
        ["--TopicSegmentSizeBits", "20", "--MaintenanceIntervalMs", "100", "--MaxConcurrentCommits", "1"];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Sigkill_when_a_segment_is_truncated_loses_nothing_and_wedges_nothing(int round)
    {
        string data = TestBroker.NewDataDirectory();
        var published = new ConcurrentDictionary<long, bool>();
        var sentForAck = new ConcurrentDictionary<long, bool>();
        var confirmedAcks = new ConcurrentDictionary<long, bool>();
        var random = new Random(round);
        try
        {
            // 1. Producers and an acking consumer run until the round's chosen segment deletion, then SIGKILL.
            using (var broker = await StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
            {
                await client.CreateTopicAsync(Topic);
                await using var subscription = await client.SubscribeAsync(Topic, "workers", new SubscribeOptions { MaxInFlight = 400 });
                var killed = KillOnSegmentDeletion(broker, Path.Combine(data, "topics", Topic, "log"), random.Next(1, 4), out var watcher);
                using (watcher)
                using (var stop = new CancellationTokenSource())
                {
                    var producers = Enumerable.Range(0, 2).Select(p => Task.Run(() => ProduceAsync(client, p + 10 * round, published, stop.Token))).ToArray();
                    var consumer = Task.Run(() => AckInFramesAsync(subscription, sentForAck, confirmedAcks, stop.Token));
                    await killed.WaitAsync(TimeSpan.FromSeconds(120));
                    broker.Kill();
                    stop.Cancel();
                    await Task.WhenAll(producers.Append(consumer)).WaitAsync(TimeSpan.FromSeconds(60));
                }
            }

            // 2. Restart: the floor is inside the log, and the broker repaired nothing (a repair means a loss).
            using (var broker = await StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
            {
                var description = await client.DescribeTopicAsync(Topic);
                long first = (long)description.FirstOffset, next = (long)description.NextOffset;
                var group = description.Groups.Single(g => g.Name == "workers");
                output.WriteLine($"round {round}: {published.Count} published, {sentForAck.Count} acks sent, {confirmedAcks.Count} confirmed; " +
                    $"after restart first {first}, next {next}, floor {group.AckFloor}, backlog {group.Backlog}");
                Assert.True(first > 0, "the run never truncated the log");
                Assert.True((long)group.AckFloor >= first, $"the group's floor {group.AckFloor} lies below the log's first message {first}");
                Assert.DoesNotContain(broker.Output, line => line.Contains("were truncated and are gone", StringComparison.Ordinal));
                Assert.All(published.Keys, offset => Assert.True(offset < next, $"published offset {offset} is missing (next {next})"));
                for (long offset = 0; offset < first; offset++)
                    Assert.True(sentForAck.ContainsKey(offset), $"offset {offset} was truncated although it was never acked");

                // 3. Everything stored and not confirmed comes again; nothing confirmed does.
                await using var workers = await client.SubscribeAsync(Topic, "workers", new SubscribeOptions { MaxInFlight = 100_000 });
                var redelivered = await Receive.ExactlyAsync(workers, (int)group.Backlog);
                await Receive.NothingMoreAsync(workers);
                var again = redelivered.Select(m => m.Offset).ToHashSet();
                Assert.DoesNotContain(again, confirmedAcks.ContainsKey);
                for (long offset = first; offset < next; offset++)
                    Assert.True(again.Contains(offset) || sentForAck.ContainsKey(offset), $"offset {offset} was neither acked nor delivered again");

                // 4. Not wedged: the group drains, and acks of a further segment's worth free disk again.
                Assert.Empty((await workers.AckAsync(redelivered, CancellationToken.None)).Refused);
                await PublishAndAckAsync(client, workers, count: 1_500);
                Assert.Equal(0ul, (await client.DescribeTopicAsync(Topic)).Groups.Single().Backlog);
                await WaitForFirstOffsetAboveAsync(client, first);
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

    private static Task<BrokerProcess> StartAsync(string data) =>
        BrokerProcess.StartAsync(["--port", "0", "--data", data, .. SmallSegmentsArguments], new Dictionary<string, string>());

    /// <summary>
    /// SIGKILLs the broker from the watcher's own thread the moment the <paramref name="nth"/> segment file of the log
    /// is deleted (maintenance truncated it), the closest an outside observer gets to the truncation's commit.
    /// </summary>
    private static Task KillOnSegmentDeletion(BrokerProcess broker, string logDirectory, int nth, out FileSystemWatcher watcher)
    {
        Directory.CreateDirectory(logDirectory);
        var killed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int seen = 0;
        watcher = new FileSystemWatcher(logDirectory);
        watcher.Deleted += (_, _) =>
        {
            if (Interlocked.Increment(ref seen) != nth)
                return;
            broker.KillNow();
            killed.TrySetResult();
        };
        watcher.EnableRaisingEvents = true;
        return killed.Task;
    }

    private static async Task ProduceAsync(BrokerClient client, int seed, ConcurrentDictionary<long, bool> published, CancellationToken stop)
    {
        var random = new Random(seed);
        while (!stop.IsCancellationRequested)
        {
            var batch = Enumerable.Range(0, random.Next(1, 11))
                .Select(_ => new OutgoingMessage(new byte[random.Next(512, 2048)]))
                .ToList();
            try
            {
                var result = await client.PublishAsync(Topic, batch, stop);
                for (int i = 0; i < batch.Count; i++)
                    published[result.FirstOffset + i] = true;
            }
            catch (Exception error) when (error is BrokerClientException or OperationCanceledException)
            {
                return;
            }
        }
    }

    private static async Task AckInFramesAsync(BrokerSubscription subscription, ConcurrentDictionary<long, bool> sentForAck,
        ConcurrentDictionary<long, bool> confirmedAcks, CancellationToken stop)
    {
        try
        {
            while (!stop.IsCancellationRequested)
            {
                var frame = new List<ReceivedMessage>(AckFrame);
                while (frame.Count < AckFrame)
                    frame.Add(await subscription.ReceiveAsync(stop));
                foreach (var message in frame)
                    sentForAck[message.Offset] = true;
                var result = await subscription.AckAsync(frame, stop);
                Assert.Empty(result.Refused);
                foreach (var message in frame)
                    confirmedAcks[message.Offset] = true;
            }
        }
        catch (Exception error) when (error is BrokerClientException or OperationCanceledException)
        {
        }
    }

    private static async Task PublishAndAckAsync(BrokerClient client, BrokerSubscription subscription, int count)
    {
        for (int i = 0; i < count; i += 100)
            await client.PublishAsync(Topic, Enumerable.Range(0, 100).Select(_ => new OutgoingMessage(new byte[1024])));
        var received = await Receive.ExactlyAsync(subscription, count);
        Assert.Empty((await subscription.AckAsync(received, CancellationToken.None)).Refused);
    }

    /// <summary>Maintenance runs every 100 ms: polls Describe until it truncated past <paramref name="offset"/>.</summary>
    private static async Task WaitForFirstOffsetAboveAsync(BrokerClient client, long offset)
    {
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while ((long)(await client.DescribeTopicAsync(Topic, deadline.Token)).FirstOffset <= offset)
            await Task.Delay(50, deadline.Token);
    }
}
