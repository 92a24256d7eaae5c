using System.Collections.Concurrent;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Xunit.Abstractions;

namespace Broker.IntegrationTests;

/// <summary>
/// SIGKILL of a child broker the moment retention deletes a segment file, on a topic with a size limit, a live group
/// (a subscribed consumer acking in frames, holding every 100th message back for a while) and an idle group (never subscribed) that only retention moves along: without
/// retention the idle group would pin every segment. Small segments, maintenance every 100 ms, one commit at a time.
/// Invariants after the restart: retention never deleted a message the live group had not acknowledged (its floor is
/// not below the first stored message, every message below it had been sent for ack, every message stored and not
/// confirmed is delivered again, none confirmed is); the idle group is not below the log either; the broker repaired
/// nothing (no 3001); and retention goes on: the idle group keeps being moved and disk is freed again.
/// </summary>
public sealed class RetentionCrashTests(ITestOutputHelper output)
{
    private const string Topic = "ret";
    private const int AckFrame = 20;
    private static readonly string[] Arguments =
        ["--TopicSegmentSizeBits", "20", "--MaintenanceIntervalMs", "100", "--MaxConcurrentCommits", "1"];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Sigkill_while_retention_deletes_never_loses_what_a_live_group_has_not_acknowledged(int round)
    {
        string data = TestBroker.NewDataDirectory();
        var published = new ConcurrentDictionary<long, bool>();
        var sentForAck = new ConcurrentDictionary<long, bool>();
        var confirmedAcks = new ConcurrentDictionary<long, bool>();
        try
        {
            // The idle group counts as idle 200 ms after it was created or moved.
            using (var broker = await StartAsync(data, idleGraceMs: 200))
            using (var client = new BrokerClient(broker.Address))
            {
                await client.CreateTopicAsync(Topic, new RetentionOptions { MaxBytes = 1_500_000 });
                await client.CreateGroupAsync(Topic, "idle");
                await using var subscription = await client.SubscribeAsync(Topic, "workers", new SubscribeOptions { MaxInFlight = 400 });
                var killed = KillOnSegmentDeletion(broker, Path.Combine(data, "topics", Topic, "log"), round + 2, out var watcher);
                using (watcher)
                using (var stop = new CancellationTokenSource())
                {
                    var producer = Task.Run(() => ProduceAsync(client, round, published, stop.Token));
                    var consumer = Task.Run(() => AckInFramesAsync(subscription, sentForAck, confirmedAcks, stop.Token));
                    await killed.WaitAsync(TimeSpan.FromSeconds(120));
                    broker.Kill();
                    stop.Cancel();
                    await Task.WhenAll(producer, consumer).WaitAsync(TimeSpan.FromSeconds(60));
                }
            }

            // After the restart every group is live for the grace: the workers subscribe again well within 5 s, so
            // retention must not pass what they have not acknowledged.
            using (var broker = await StartAsync(data, idleGraceMs: 5_000))
            using (var client = new BrokerClient(broker.Address))
            {
                var description = await client.DescribeTopicAsync(Topic);
                long first = (long)description.FirstOffset, next = (long)description.NextOffset;
                var workers = description.Groups.Single(g => g.Name == "workers");
                var idle = description.Groups.Single(g => g.Name == "idle");
                output.WriteLine($"round {round}: {published.Count} published, {sentForAck.Count} sent for ack, {confirmedAcks.Count} confirmed; " +
                    $"first {first}, next {next}, workers' floor {workers.AckFloor}, idle floor {idle.AckFloor}");
                Assert.True(first > 0, "nothing was deleted");
                Assert.True((long)workers.AckFloor >= first, $"the live group's floor {workers.AckFloor} lies below the first stored message {first}");
                Assert.True((long)idle.AckFloor >= first, $"the idle group's floor {idle.AckFloor} lies below the first stored message {first}");
                Assert.DoesNotContain(broker.Output, line => line.Contains("were truncated and are gone", StringComparison.Ordinal));
                for (long offset = 0; offset < first; offset++)
                    Assert.True(sentForAck.ContainsKey(offset), $"offset {offset} was deleted although the live group never acked it");

                await using var again = await client.SubscribeAsync(Topic, "workers", new SubscribeOptions { MaxInFlight = 100_000 });
                var redelivered = await Receive.ExactlyAsync(again, (int)workers.Backlog);
                await Receive.NothingMoreAsync(again);
                var offsets = redelivered.Select(m => m.Offset).ToHashSet();
                Assert.DoesNotContain(offsets, confirmedAcks.ContainsKey);
                for (long offset = first; offset < next; offset++)
                    Assert.True(offsets.Contains(offset) || sentForAck.ContainsKey(offset), $"offset {offset} was neither acked nor delivered again");
                Assert.Empty((await again.AckAsync(redelivered, CancellationToken.None)).Refused);

                // Retention goes on after the restart: more data, and once the grace is over the idle group is moved again.
                for (int i = 0; i < 20; i++)
                    await client.PublishAsync(Topic, Enumerable.Range(0, 100).Select(_ => new OutgoingMessage(new byte[1024])));
                Assert.Empty((await again.AckAsync(await Receive.ExactlyAsync(again, 2000), CancellationToken.None)).Refused);
                using var deadline = new CancellationTokenSource(Receive.Deadline);
                while ((long)(await client.DescribeTopicAsync(Topic, deadline.Token)).Groups.Single(g => g.Name == "idle").AckFloor <= next)
                    await Task.Delay(50, deadline.Token);
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

    private static Task<BrokerProcess> StartAsync(string data, int idleGraceMs) =>
        BrokerProcess.StartAsync(["--port", "0", "--data", data, .. Arguments, "--RetentionIdleGraceMs", idleGraceMs.ToString(System.Globalization.CultureInfo.InvariantCulture)],
            new Dictionary<string, string>());

    /// <summary>SIGKILLs the broker from the watcher's thread the moment the <paramref name="nth"/> segment file is deleted.</summary>
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
            var batch = Enumerable.Range(0, random.Next(1, 11)).Select(_ => new OutgoingMessage(new byte[random.Next(512, 2048)])).ToList();
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

    /// <summary>
    /// Acks in frames, but holds every 100th message back for 1,200 more received: the live group's floor then lags by
    /// about as much as the size limit, so retention's cut falls now at the size limit, now at the live group's floor.
    /// </summary>
    private static async Task AckInFramesAsync(BrokerSubscription subscription, ConcurrentDictionary<long, bool> sentForAck,
        ConcurrentDictionary<long, bool> confirmedAcks, CancellationToken stop)
    {
        var held = new Queue<(ReceivedMessage Message, int AckAfter)>();
        int received = 0;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                var frame = new List<ReceivedMessage>(AckFrame);
                while (frame.Count < AckFrame)
                {
                    var message = await subscription.ReceiveAsync(stop);
                    received++;
                    if (message.Offset % 100 == 0)
                        held.Enqueue((message, received + 1_200));
                    else
                        frame.Add(message);
                }
                while (held.TryPeek(out var straggler) && straggler.AckAfter <= received)
                    frame.Add(held.Dequeue().Message);
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
}
