using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Broker.Perf;

/// <summary>Runs a workload end to end and assembles its report.</summary>
internal static class PerfRunner
{
    public static async Task<PerfReport> RunAsync(PerfSettings settings, Uri? address, bool storageOnly, string? brokerArguments, CancellationToken cancellationToken)
    {
        if (address is not null && !address.IsLoopback)
            throw new ArgumentException("load is only ever sent to a loopback address (127.0.0.0/8 or [::1])");
        // The load generator keeps the thread pool's own minimum: all of its work is asynchronous, and 32 ready workers
        // on two shared cores made its open-loop timer p99 9-40 ms late instead of 6-17 (six interleaved pairs at
        // 20k msg/s, docs/perf.md). Only the in-process storage-only run raises it, for FasterLog's blocking commits.

        double? ceiling = null;
        if (storageOnly)
        {
            var (elapsed, appended, _) = await StorageOnlyRun.RunAsync(settings);
            ceiling = appended / elapsed.TotalSeconds;
            Console.WriteLine($"storage-only ceiling: {ceiling:N0} msg/s durable ({appended:N0} in {elapsed.TotalSeconds:N1} s)");
        }

        await using var broker = address is null ? await BrokerUnderTest.StartAsync(brokerArguments) : BrokerUnderTest.Remote(address);
        var lastProgress = DateTime.MinValue;
        void Progress(string line)
        {
            if (DateTime.UtcNow - lastProgress < TimeSpan.FromSeconds(1))
                return;
            lastProgress = DateTime.UtcNow;
            Console.Error.WriteLine($"  {DateTime.Now:HH:mm:ss} {line}");
        }
        if (settings.WarmupMessages > 0)
            await WarmUpAsync(broker.Address, settings, Progress, cancellationToken);
        var cpuBefore = broker.CpuTime();
        using var statsClient = new Broker.Client.BrokerClient(broker.Address);
        var statsBefore = await statsClient.GetServerStatsAsync(cancellationToken);
        TimeSpan? restartToListening = null;
        long killTimestamp = 0;
        Func<Task>? killAndRestart = null;
        if (settings.KillBeforeDrain)
        {
            if (!broker.IsLocalProcess)
                throw new ArgumentException("a recovery run needs a broker this runner starts (no --address)");
            killAndRestart = async () =>
            {
                if (settings.InFlightAtKill > 0)
                    await HoldUnackedAsync(broker.Address, settings, cancellationToken);
                Console.Error.WriteLine("SIGKILL, restarting on the same data");
                killTimestamp = Stopwatch.GetTimestamp();
                restartToListening = await broker.KillAndRestartAsync();
                // CPU is counted for the restarted process only: recovery and drain.
                cpuBefore = TimeSpan.Zero;
            };
        }
        var run = new LoadRun(settings, broker.Address, Progress, killAndRestart);
        long loadStart = Stopwatch.GetTimestamp();
        var generatorBefore = LoadGeneratorCosts.Snapshot.Take();
        var result = await run.RunAsync(cancellationToken);
        var generator = LoadGeneratorCosts.Between(generatorBefore, LoadGeneratorCosts.Snapshot.Take(), result.Published);
        // A recovery run's broker is a new process: its counters do not continue the killed one's.
        var statsAfter = settings.KillBeforeDrain ? null : await statsClient.GetServerStatsAsync(cancellationToken);
        var runtimeCosts = statsAfter is null ? null : BrokerRuntimeCosts.Between(statsBefore, statsAfter, result.Published, result.TotalElapsed);
        // A server at --address is not the runner's child: its CPU comes from its own stats, a child's from /proc.
        var cpu = broker.IsLocalProcess || statsAfter is null
            ? broker.CpuTime() - cpuBefore
            : TimeSpan.FromMilliseconds(statsAfter.CpuTimeMs - (double)statsBefore.CpuTimeMs);
        double? firstDelivery = settings.KillBeforeDrain && result.Groups.Min(g => g.FirstDeliveryTimestamp) is > 0 and var first
            ? Stopwatch.GetElapsedTime(killTimestamp, first).TotalSeconds
            : null;
        var rss = broker.RssSamples;

        long delivered = result.Groups.Sum(g => g.Delivered);
        long acked = result.Groups.Sum(g => g.AckConfirmed);
        long expected = settings.Messages * settings.Groups;
        long lastLessWait = result.Groups.Max(g => g.LastDeliveryLessWaitTimestamp);
        var deliverLatency = HdrHistogramMerge(result.Groups.Select(g => g.DeliverLatency));
        return new PerfReport
        {
            Workload = settings.Workload,
            Settings = settings,
            Machine = $"{Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, .NET {Environment.Version}",
            PublishMessagesPerSecond = result.Published / result.PublishElapsed.TotalSeconds,
            EndToEndMessagesPerSecond = Math.Min(acked, expected) / settings.Groups / result.TotalElapsed.TotalSeconds,
            DrainMessagesPerSecond = settings.PublishThenDrain
                ? Math.Min(acked, expected) / settings.Groups / (result.TotalElapsed - result.PublishElapsed).TotalSeconds
                : null,
            DeliveredLessScheduleWaitMessagesPerSecond = lastLessWait > result.StartTimestamp && !settings.PublishThenDrain
                ? Math.Min(delivered, expected) / settings.Groups / Stopwatch.GetElapsedTime(result.StartTimestamp, lastLessWait).TotalSeconds
                : null,
            PublishMegabytesPerSecond = result.Published * (double)settings.PayloadBytes / (1 << 20) / result.PublishElapsed.TotalSeconds,
            PublishToAckMs = PerfReport.Percentiles.From(result.PublishLatency),
            PublishToDeliverMs = PerfReport.Percentiles.From(deliverLatency),
            SenderLatenessMs = settings.Rate is null ? null : PerfReport.Percentiles.From(result.SenderLateness),
            BrokerCpuSecondsPerMillion = cpu.TotalSeconds / Math.Max(1, result.Published) * 1_000_000,
            BrokerPerMessage = runtimeCosts,
            LoadGenerator = generator,
            BrokerPeakRssMiB = broker.PeakRssBytes() / 1048576.0,
            BrokerRssMinMiB = rss.Count == 0 ? 0 : rss.Min(r => r.Bytes) / 1048576.0,
            BrokerRssMaxMiB = rss.Count == 0 ? 0 : rss.Max(r => r.Bytes) / 1048576.0,
            BrokerRssUnderLoadMiB = RssUnderLoad(rss, loadStart, result.TotalElapsed),
            Published = result.Published,
            PublishErrors = result.PublishErrors,
            Delivered = delivered,
            Acked = acked,
            Nacked = result.Groups.Sum(g => g.Nacked),
            Duplicates = result.Groups.Sum(g => g.Duplicates),
            Missing = Math.Max(0, expected - acked),
            StorageCeilingMessagesPerSecond = ceiling,
            RecoveryToListeningSeconds = restartToListening?.TotalSeconds,
            RecoveryToFirstDeliverySeconds = firstDelivery,
        };
    }

    /// <summary>
    /// A W2-shaped run on its own topic, then the topic (and its dead-letter topic) deleted. Through the SDK when the
    /// measured run is (W7), with its features when it has them (W6, W9): the broker then has compiled what that
    /// traffic needs before the measurement starts.
    /// </summary>
    private static async Task WarmUpAsync(Uri address, PerfSettings measured, Action<string> progress, CancellationToken cancellationToken)
    {
        var settings = PerfSettings.Preset("warmup") with
        {
            Messages = measured.WarmupMessages, PayloadBytes = measured.PayloadBytes, ViaSdk = measured.ViaSdk,
            // The measured run's features too (W6's nacks, W9's schedule, priorities and ids): their code is then
            // compiled, and recompiled by the JIT's optimizing tier, before the measurement instead of during it.
            NackFraction = measured.NackFraction, DelayFraction = measured.DelayFraction, DelayMs = measured.DelayMs,
            PriorityLevels = measured.PriorityLevels, MessageIds = measured.MessageIds,
        };
        Console.Error.WriteLine($"warm-up: {settings.Messages:N0} messages, not measured");
        var result = await new LoadRun(settings, address, line => progress($"warm-up: {line}")).RunAsync(cancellationToken);
        if (result.Groups.Any(g => g.AckConfirmed < settings.Messages))
            throw new InvalidOperationException("the warm-up run did not complete");
        using var client = new Broker.Client.BrokerClient(address);
        foreach (string topic in LoadRun.TopicNames(settings))
        {
            await client.DeleteTopicAsync(topic, cancellationToken);
            await client.DeleteTopicAsync(topic + ".dlq", cancellationToken);
        }
    }

    /// <summary>
    /// Min and max RSS over the measured run, leaving out its first tenth (the broker filling its pages and pools):
    /// whether memory grows with the load or the backlog.
    /// </summary>
    private static PerfReport.Range? RssUnderLoad(IReadOnlyList<(long Timestamp, long Bytes)> samples, long loadStart, TimeSpan elapsed)
    {
        long from = loadStart + (long)(elapsed.TotalSeconds / 10 * Stopwatch.Frequency);
        var underLoad = samples.Where(s => s.Timestamp >= from).Select(s => s.Bytes / 1048576.0).ToList();
        return underLoad.Count == 0 ? null : new PerfReport.Range(underLoad.Min(), underLoad.Max());
    }

    private static HdrHistogram.LongHistogram HdrHistogramMerge(IEnumerable<HdrHistogram.HistogramBase> histograms)
    {
        var merged = new HdrHistogram.LongHistogram(1, 600_000_000, 3);
        foreach (var histogram in histograms)
            merged.Add(histogram);
        return merged;
    }

    /// <summary>
    /// A consumer of the run's first group that takes <see cref="PerfSettings.InFlightAtKill"/> deliveries and acks none:
    /// they are leased (5 s) when the broker dies, so its recovery also restores that many leases. The stream dies with
    /// the broker.
    /// </summary>
    private static async Task HoldUnackedAsync(Uri address, PerfSettings settings, CancellationToken cancellationToken)
    {
        var holder = new Broker.Client.BrokerClient(address);
        var subscription = await holder.SubscribeAsync(LoadRun.TopicNames(settings)[0], "group-0",
            new Broker.Client.SubscribeOptions { MaxInFlight = settings.InFlightAtKill, VisibilityTimeout = TimeSpan.FromSeconds(5) }, cancellationToken);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(60));
        for (int held = 0; held < settings.InFlightAtKill; held++)
            await subscription.ReceiveAsync(deadline.Token);
        Console.Error.WriteLine($"{settings.InFlightAtKill:N0} deliveries held unacked");
    }
}
