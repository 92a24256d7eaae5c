using System.Buffers.Binary;
using System.Diagnostics;
using HdrHistogram;

namespace Broker.Perf.Peers;

/// <summary>The shape of a run, the same for every system.</summary>
internal sealed record WorkloadSettings(string Name, int Producers, int Consumers, long Messages, int PayloadBytes, int BatchSize, int Window,
    double? Rate)
{
    public static WorkloadSettings Preset(string name, long messages, int payloadBytes, double? rate) => name.ToUpperInvariant() switch
    {
        // As Broker.Perf's W1 and W2: closed loop, batches of 100 with 16 in flight per producer.
        "W1" => new("W1", 1, 1, messages, payloadBytes, 100, 16, null),
        "W2" => new("W2", 4, 4, messages, payloadBytes, 100, 16, null),
        // Open loop at a fixed rate (batches of 10, as Broker.Perf's --rate runs): latency from each message's due time.
        "RATE" => new($"W2@{rate:N0}/s", 4, 4, messages, payloadBytes, 10, int.MaxValue, rate ?? throw new ArgumentException("the rate workload needs --rate")),
        _ => throw new ArgumentException($"unknown workload '{name}' (W1, W2, RATE)"),
    };

    public string Label => Rate is null ? Name : $"W2@{Rate:N0}/s";
}

/// <summary>One run's numbers for one system.</summary>
internal sealed record RunResult(string System, string Workload, double PublishPerSecond, double EndToEndPerSecond, double P50Ms, double P99Ms,
    double P999Ms, double MaxMs, double ServerCpuSecondsPerMillion, double ClientCpuSecondsPerMillion, long Missing, long Duplicates);

/// <summary>
/// Runs the workload against one started system: producers publish batches (a message carries its index and its
/// due time), waiting for the server's confirmation of each batch with a window of batches in flight (closed loop) or at
/// the due times of a fixed rate (open loop); consumers compete in one group and acknowledge everything. The run ends
/// when every index was handled once; latency is from a message's due time (open loop) or send time to its handling.
/// </summary>
internal sealed class Workload(IPeerSystem system, WorkloadSettings settings)
{
    private static readonly TimeSpan CompletionTimeout = TimeSpan.FromMinutes(5);
    private const int MaxOutstandingOpenLoop = 20_000;

    private Tracker _tracker = new(0);

    /// <summary>A warm-up of <paramref name="warmupMessages"/> (not reported), then the measured run, on the same clients.</summary>
    public async Task<RunResult> RunAsync(long warmupMessages, CancellationToken cancellationToken)
    {
        var producers = new List<IPeerProducer>();
        var consumers = new List<IPeerConsumer>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var consuming = new List<Task>();
        try
        {
            for (int i = 0; i < settings.Producers; i++)
                producers.Add(await system.CreateProducerAsync(i, cancellationToken));
            for (int i = 0; i < settings.Consumers; i++)
            {
                var consumer = await system.CreateConsumerAsync(i, cancellationToken);
                consumers.Add(consumer);
                consuming.Add(Task.Run(() => consumer.RunAsync(payload => Volatile.Read(ref _tracker).Handle(payload), stop.Token), stop.Token));
            }
            if (warmupMessages > 0)
            {
                await RunOnceAsync(producers, settings with { Messages = warmupMessages, Rate = null, BatchSize = 100, Window = 16 }, consuming, cancellationToken);
                // Then 3 s at the measured rate: the paths of small batches at low load warm up too.
                if (settings.Rate is double rate)
                    await RunOnceAsync(producers, settings with { Messages = (long)(rate * 3) }, consuming, cancellationToken);
                await system.AfterWarmupAsync(cancellationToken);
            }
            return await RunOnceAsync(producers, settings, consuming, cancellationToken);
        }
        finally
        {
            stop.Cancel();
            try
            {
                await Task.WhenAll(consuming).WaitAsync(TimeSpan.FromSeconds(10));
            }
            catch (Exception)
            {
                // Consumers end by cancellation (or with their connection); the run's numbers are taken already.
            }
            foreach (var consumer in consumers)
                await consumer.DisposeAsync();
            foreach (var producer in producers)
                await producer.DisposeAsync();
        }
    }

    private async Task<RunResult> RunOnceAsync(List<IPeerProducer> producers, WorkloadSettings run, List<Task> consuming, CancellationToken cancellationToken)
    {
        var tracker = new Tracker(run.Messages);
        Volatile.Write(ref _tracker, tracker);
        var cpuBefore = system.ServerCpuTime();
        // The load generator's own CPU (this process: the system's client library and the runner), the other share of
        // the two cores: what a system's client costs limits its throughput here as much as its server does.
        var clientCpuBefore = Environment.CpuUsage.TotalTime;
        long next = 0;
        long start = Stopwatch.GetTimestamp();
        var publishing = producers.Select((producer, index) => Task.Run(() => run.Rate is { } rate
            ? PublishOpenLoopAsync(producer, run, rate / run.Producers, () => Interlocked.Add(ref next, run.BatchSize) - run.BatchSize, start, cancellationToken)
            : PublishClosedLoopAsync(producer, run, () => Interlocked.Add(ref next, run.BatchSize) - run.BatchSize, cancellationToken), cancellationToken)).ToList();
        await Task.WhenAll(publishing);
        long published = Stopwatch.GetTimestamp();
        var finished = await Task.WhenAny(tracker.Completed, Task.Delay(CompletionTimeout, cancellationToken), Task.WhenAny(consuming));
        if (finished != tracker.Completed && consuming.FirstOrDefault(task => task.IsFaulted) is { } failed)
            await failed;   // a consumer failed: its error is the run's
        long end = tracker.LastHandled;
        var cpu = system.ServerCpuTime() - cpuBefore;
        var clientCpu = Environment.CpuUsage.TotalTime - clientCpuBefore;
        var latency = tracker.Latency;
        return new RunResult(system.Name, run.Label,
            run.Messages / Stopwatch.GetElapsedTime(start, published).TotalSeconds,
            tracker.Unique / Stopwatch.GetElapsedTime(start, Math.Max(end, start + 1)).TotalSeconds,
            Ms(latency.GetValueAtPercentile(50)), Ms(latency.GetValueAtPercentile(99)), Ms(latency.GetValueAtPercentile(99.9)), Ms(latency.GetMaxValue()),
            cpu.TotalSeconds / run.Messages * 1_000_000, clientCpu.TotalSeconds / run.Messages * 1_000_000, run.Messages - tracker.Unique, tracker.Duplicates);
    }

    private static double Ms(long microseconds) => Math.Round(microseconds / 1000.0, 2);

    private static async Task PublishClosedLoopAsync(IPeerProducer producer, WorkloadSettings run, Func<long> take, CancellationToken cancellationToken)
    {
        using var window = new SemaphoreSlim(run.Window);
        var inFlight = new List<Task>();
        while (true)
        {
            await window.WaitAsync(cancellationToken);
            long first = take();
            if (first >= run.Messages)
                break;
            var batch = Batch(first, (int)Math.Min(run.BatchSize, run.Messages - first), run.PayloadBytes, Stopwatch.GetTimestamp());
            inFlight.Add(PublishAndReleaseAsync(producer, batch, window, cancellationToken));
            inFlight.RemoveAll(task => task.IsCompletedSuccessfully);
        }
        await Task.WhenAll(inFlight);
    }

    private static async Task PublishAndReleaseAsync(IPeerProducer producer, IReadOnlyList<byte[]> batch, SemaphoreSlim window, CancellationToken cancellationToken)
    {
        try
        {
            await producer.PublishAsync(batch, cancellationToken);
        }
        finally
        {
            window.Release();
        }
    }

    /// <summary>Batches sent at their due times, whatever is still unconfirmed (up to a bound, so a stalled server does not take all memory).</summary>
    private static async Task PublishOpenLoopAsync(IPeerProducer producer, WorkloadSettings run, double perSecond, Func<long> take, long start,
        CancellationToken cancellationToken)
    {
        long ticksPerBatch = (long)(Stopwatch.Frequency * run.BatchSize / perSecond);
        var inFlight = new List<Task>();
        using var outstanding = new SemaphoreSlim(MaxOutstandingOpenLoop / run.BatchSize);
        for (long k = 0; ; k++)
        {
            long due = start + k * ticksPerBatch;
            var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), due);
            if (wait > TimeSpan.FromMilliseconds(1))
                await Broker.Client.PreciseTimer.Delay(wait).WaitAsync(cancellationToken);
            long first = take();
            if (first >= run.Messages)
                break;
            await outstanding.WaitAsync(cancellationToken);
            var batch = Batch(first, (int)Math.Min(run.BatchSize, run.Messages - first), run.PayloadBytes, due);
            inFlight.Add(PublishAndReleaseAsync(producer, batch, outstanding, cancellationToken));
            if (k % 64 == 0)
                inFlight.RemoveAll(task => task.IsCompletedSuccessfully);
        }
        await Task.WhenAll(inFlight);
    }

    private static byte[][] Batch(long first, int count, int payloadBytes, long timestamp)
    {
        var batch = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            var payload = new byte[Math.Max(payloadBytes, 16)];
            BinaryPrimitives.WriteInt64LittleEndian(payload, first + i);
            BinaryPrimitives.WriteInt64LittleEndian(payload.AsSpan(8), timestamp);
            payload.AsSpan(16).Fill((byte)'x');
            batch[i] = payload;
        }
        return batch;
    }

    /// <summary>Which indexes were handled (a bit each), how often twice, and the latency of first handlings.</summary>
    private sealed class Tracker(long messages)
    {
        private readonly long[] _seen = new long[(messages + 63) / 64];
        private readonly LongHistogram _latency = new(TimeSpan.FromMinutes(10).Ticks / 10, 3);
        private readonly Lock _latencyLock = new();
        private readonly TaskCompletionSource _completed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private long _unique;
        private long _duplicates;
        private long _lastHandled;

        public Task Completed => messages == 0 ? Task.CompletedTask : _completed.Task;
        public long Unique => Interlocked.Read(ref _unique);
        public long Duplicates => Interlocked.Read(ref _duplicates);
        public long LastHandled => Interlocked.Read(ref _lastHandled);

        public LongHistogram Latency
        {
            get
            {
                lock (_latencyLock)
                    return (LongHistogram)_latency.Copy();
            }
        }

        public void Handle(ReadOnlySpan<byte> payload)
        {
            if (payload.Length < 16)
                return;
            long index = BinaryPrimitives.ReadInt64LittleEndian(payload);
            if (index < 0 || index >= messages)
                return;   // a warm-up message handled late
            long bit = 1L << (int)(index % 64);
            long before = Interlocked.Or(ref _seen[index / 64], bit);
            if ((before & bit) != 0)
            {
                Interlocked.Increment(ref _duplicates);
                return;
            }
            long now = Stopwatch.GetTimestamp();
            long micros = (long)Stopwatch.GetElapsedTime(BinaryPrimitives.ReadInt64LittleEndian(payload[8..]), now).TotalMicroseconds;
            lock (_latencyLock)
                _latency.RecordValue(Math.Clamp(micros, 0, _latency.HighestTrackableValue));
            long last = Interlocked.Read(ref _lastHandled);
            while (now > last && Interlocked.CompareExchange(ref _lastHandled, now, last) is var seen && seen != last)
                last = seen;
            if (Interlocked.Increment(ref _unique) == messages)
                _completed.TrySetResult();
        }
    }
}
