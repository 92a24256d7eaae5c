using System.Diagnostics;
using Broker.Client;
using Broker.Protocol.V1;
using Google.Protobuf;
using Grpc.Core;
using HdrHistogram;

namespace Broker.Perf;

/// <summary>The outcome of one load run, before the broker's CPU and memory are added.</summary>
internal sealed record LoadResult(
    TimeSpan PublishElapsed,
    TimeSpan TotalElapsed,
    long Published,
    long PublishErrors,
    IReadOnlyList<GroupTracker> Groups,
    LongConcurrentHistogram PublishLatency,
    LongConcurrentHistogram SenderLateness,
    long StartTimestamp);

/// <summary>
/// Drives one workload against a broker: producers on pipelined PublishStream calls (or the SDK's BrokerProducer and
/// BrokerConsumer), consumers on
/// Consume streams that ack (or nack) each delivery frame in one settle frame. Every message carries its index and
/// send time, so the run checks that each group acknowledged every message and measures publish→deliver latency.
/// </summary>
internal sealed class LoadRun(PerfSettings settings, Uri address, Action<string> progress, Func<Task>? beforeDrain = null)
{
    private readonly LongConcurrentHistogram _publishLatency = Histograms.Create();
    private readonly LongConcurrentHistogram _senderLateness = Histograms.Create();
    private long _nextIndex;
    private long _published;
    private long _publishErrors;

    public async Task<LoadResult> RunAsync(CancellationToken cancellationToken)
    {
        using var client = new BrokerClient(address);
        var topics = TopicNames(settings);
        var groups = Enumerable.Range(0, settings.Groups).Select(g => $"group-{g}").ToArray();
        foreach (string topic in topics)
        {
            await client.CreateTopicAsync(topic, ifNotExists: true, cancellationToken);
            foreach (string group in groups)
                await client.CreateGroupAsync(topic, group, options: settings.PriorityLevels > 1 ? new GroupOptions { PriorityLevels = settings.PriorityLevels } : null,
                    cancellationToken: cancellationToken);
        }
        var trackers = groups.Select(_ => new GroupTracker(settings.Messages)).ToArray();
        using var stopConsumers = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var clock = Stopwatch.StartNew();
        long startTimestamp = Stopwatch.GetTimestamp();

        var consumers = new List<Task>();
        void StartConsumers()
        {
            for (int g = 0; g < groups.Length; g++)
            {
                foreach (string topic in topics)
                {
                    for (int c = 0; c < settings.ConsumersPerGroup; c++)
                    {
                        var tracker = trackers[g];
                        string group = groups[g];
                        consumers.Add(Task.Run(() => settings.ViaSdk
                            ? ConsumeViaSdkAsync(topic, group, tracker, stopConsumers.Token)
                            : ConsumeAsync(client, topic, group, tracker, stopConsumers.Token)));
                    }
                }
            }
        }

        if (!settings.PublishThenDrain)
            StartConsumers();
        var producers = Enumerable.Range(0, settings.Producers)
            .Select(p => Task.Run(() => settings.ViaSdk ? ProduceViaSdkAsync(topics, cancellationToken) : ProduceAsync(client, topics, p, cancellationToken)))
            .ToArray();
        var publishing = Task.WhenAll(producers);
        while (!publishing.IsCompleted)
        {
            await Task.WhenAny(publishing, Task.Delay(1000, cancellationToken));
            progress($"published {Interlocked.Read(ref _published):N0}, acked {trackers.Min(t => t.AckConfirmed):N0} of {settings.Messages:N0}");
        }
        await publishing;
        var publishElapsed = clock.Elapsed;
        if (beforeDrain is not null)
            await beforeDrain();
        if (settings.PublishThenDrain)
            StartConsumers();

        var deadline = Stopwatch.StartNew();
        while (trackers.Any(t => t.AckConfirmed < settings.Messages) && deadline.Elapsed < settings.Timeout && !consumers.Any(c => c.IsFaulted))
        {
            await Task.Delay(200, cancellationToken);
            progress($"published {Interlocked.Read(ref _published):N0}, acked {trackers.Min(t => t.AckConfirmed):N0} of {settings.Messages:N0}");
        }
        var totalElapsed = clock.Elapsed;
        stopConsumers.Cancel();
        await Task.WhenAll(consumers).ContinueWith(static _ => { }, TaskScheduler.Default);
        if (consumers.FirstOrDefault(c => c.IsFaulted) is { } failed && failed.Exception!.InnerException is not OperationCanceledException)
            throw failed.Exception.InnerException!;
        return new LoadResult(publishElapsed, totalElapsed, Interlocked.Read(ref _published), Interlocked.Read(ref _publishErrors), trackers, _publishLatency, _senderLateness, startTimestamp);
    }

    /// <summary>The topics a run publishes to: <c>perf-&lt;workload&gt;</c>, or <c>perf-&lt;workload&gt;-&lt;i&gt;</c> for several.</summary>
    public static string[] TopicNames(PerfSettings settings) => Enumerable.Range(0, settings.Topics)
        .Select(i => settings.Topics == 1 ? $"perf-{settings.Workload.ToLowerInvariant()}" : $"perf-{settings.Workload.ToLowerInvariant()}-{i}")
        .ToArray();

    // Spread evenly: every message whose index falls in the first DelayFraction of each hundred.
    private bool IsDelayed(long index) => settings.DelayFraction > 0 && index % 100 < settings.DelayFraction * 100;

    private bool TryClaimBatch(out long first, out int count)
    {
        first = Interlocked.Add(ref _nextIndex, settings.BatchSize) - settings.BatchSize;
        count = (int)Math.Clamp(settings.Messages - first, 0, settings.BatchSize);
        return count > 0;
    }

    /// <summary>Open-loop pacing: when this producer's k-th batch is due (null when running flat out).</summary>
    private long? DueTimestamp(long start, long batchNumber)
    {
        if (settings.Rate is not double rate)
            return null;
        double perProducer = rate / settings.Producers;
        return start + (long)(batchNumber * settings.BatchSize / perProducer * Stopwatch.Frequency);
    }

    /// <summary>
    /// Claims batches until every message is taken, paces them (open loop) when a rate is set, takes a window slot
    /// for each (released by whoever sees it confirmed), and hands each to <paramref name="send"/> with its send time.
    /// </summary>
    private async Task ForEachBatchAsync(SemaphoreSlim window, Func<long, int, long, Task> send, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        for (long batchNumber = 0; TryClaimBatch(out long first, out int count); batchNumber++)
        {
            long? due = DueTimestamp(start, batchNumber);
            if (due is long at)
            {
                await WaitUntilAsync(at, cancellationToken);
                _senderLateness.RecordValue(Histograms.MicrosecondsSince(at));
            }
            await window.WaitAsync(cancellationToken);
            // Latency counts from when the batch was due (a late send is the system's delay too), or from now when
            // it goes out early: a batch within a millisecond of its due time is not held back.
            long now = Payloads.Now();
            await send(first, count, due is long dueAt ? Math.Min(dueAt, now) : now);
        }
    }

    private static async Task WaitUntilAsync(long timestamp, CancellationToken cancellationToken)
    {
        var remaining = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), timestamp);
        if (remaining > TimeSpan.FromMilliseconds(1))
            await PreciseTimer.Delay(remaining).WaitAsync(cancellationToken);
    }

    private async Task ProduceAsync(BrokerClient client, string[] topics, int producer, CancellationToken cancellationToken)
    {
        var publisher = new Publisher.PublisherClient(client.Channel);
        using var call = publisher.PublishStream(cancellationToken: cancellationToken);
        using var window = new SemaphoreSlim(settings.PublishWindow);
        var sent = new System.Collections.Concurrent.ConcurrentQueue<(long Timestamp, int Count)>();
        var responses = Task.Run(async () =>
        {
            await foreach (var response in call.ResponseStream.ReadAllAsync(cancellationToken))
            {
                sent.TryDequeue(out var batch);
                if (response.Error is not null)
                    Interlocked.Add(ref _publishErrors, batch.Count);
                else
                {
                    _publishLatency.RecordValueWithCount(Histograms.MicrosecondsSince(batch.Timestamp), batch.Count);
                    Interlocked.Add(ref _published, batch.Count);
                }
                window.Release();
            }
        }, cancellationToken);

        await ForEachBatchAsync(window, async (first, count, timestamp) =>
        {
            var request = new PublishRequest { Topic = topics[(first / settings.BatchSize) % topics.Length], RequestId = (ulong)first };
            for (int i = 0; i < count; i++)
            {
                request.Messages.Add(new Message
                {
                    Payload = UnsafeByteOperations.UnsafeWrap(Payloads.Create(first + i, settings.PayloadBytes, timestamp)),
                    DelayMs = IsDelayed(first + i) ? settings.DelayMs : 0,
                    Priority = settings.PriorityLevels > 1 ? (uint)((first + i) % settings.PriorityLevels) : 0,
                    MessageId = settings.MessageIds ? $"m-{first + i}" : "",
                });
            }
            sent.Enqueue((timestamp, count));
            await call.RequestStream.WriteAsync(request, cancellationToken);
        }, cancellationToken);
        await call.RequestStream.CompleteAsync();
        await responses;
    }

    /// <summary>
    /// W7's producer: one <see cref="BrokerProducer"/> with its defaults (its own linger and batching over one
    /// PublishStream); the runner's batches only pace it and bound what it has in flight, as W2's window does.
    /// </summary>
    private async Task ProduceViaSdkAsync(string[] topics, CancellationToken cancellationToken)
    {
        await using var producer = new BrokerProducer(new BrokerClientOptions { Listeners = address.ToString() });
        using var window = new SemaphoreSlim(settings.PublishWindow);
        var inFlight = new List<Task>();
        await ForEachBatchAsync(window, async (first, count, timestamp) =>
        {
            string topic = topics[(first / settings.BatchSize) % topics.Length];
            var durable = new Task<PublishedMessage>[count];
            for (int i = 0; i < count; i++)
                durable[i] = await producer.SendAsync(topic, new OutgoingMessage(Payloads.Create(first + i, settings.PayloadBytes, timestamp)), cancellationToken);
            inFlight.Add(Task.WhenAll(durable).ContinueWith(done =>
            {
                if (done.IsCompletedSuccessfully)
                {
                    _publishLatency.RecordValueWithCount(Histograms.MicrosecondsSince(timestamp), count);
                    Interlocked.Add(ref _published, count);
                }
                else
                {
                    Interlocked.Add(ref _publishErrors, count);
                }
                window.Release();
            }, TaskScheduler.Default));
            inFlight.RemoveAll(t => t.IsCompleted);
        }, cancellationToken);
        await Task.WhenAll(inFlight);
    }

    private async Task ConsumeAsync(BrokerClient client, string topic, string group, GroupTracker tracker, CancellationToken stop)
    {
        var consumer = new Protocol.V1.Consumer.ConsumerClient(client.Channel);
        using var call = consumer.Consume(cancellationToken: stop);
        await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = new Subscribe { Topic = topic, Group = group, MaxInFlight = (uint)settings.MaxInFlight } }, stop);
        var random = new Random();
        ulong nextRequest = 0;
        var ackRequests = new HashSet<ulong>();
        try
        {
            await foreach (var response in call.ResponseStream.ReadAllAsync(stop))
            {
                if (response.KindCase == ConsumeResponse.KindOneofCase.Settled)
                {
                    if (ackRequests.Remove(response.Settled.RequestId))
                        tracker.CountAckConfirmed((int)response.Settled.Accepted);
                    continue;
                }
                if (response.KindCase != ConsumeResponse.KindOneofCase.Deliveries)
                    continue;
                var ack = new Ack { RequestId = ++nextRequest };
                var nack = new Nack { RequestId = ++nextRequest, Action = NackAction.Retry };
                tracker.NoteFirstDelivery();
                long now = Stopwatch.GetTimestamp();
                long lastLessWait = 0;
                foreach (var delivery in response.Deliveries.Items)
                {
                    lastLessWait = Math.Max(lastLessWait, delivery.Scheduled is null ? now : now - settings.DelayMs * Stopwatch.Frequency / 1000);
                    var (sendTimestamp, index) = Payloads.Read(delivery.Payload.Span);
                    tracker.CountDelivered(1);
                    // A scheduled message's wait is its delay, not the broker's latency: left out of the histogram.
                    if (delivery.Attempt == 1 && delivery.Scheduled is null)
                        tracker.DeliverLatency.RecordValue(Histograms.MicrosecondsSince(sendTimestamp));
                    var reference = new DeliveryRef { Offset = delivery.Offset, Token = delivery.Token };
                    if (delivery.Attempt == 1 && settings.NackFraction > 0 && random.NextDouble() < settings.NackFraction)
                    {
                        nack.Deliveries.Add(reference);
                        continue;
                    }
                    if (!tracker.Acked.TrySet(index))
                        tracker.CountDuplicate();
                    ack.Deliveries.Add(reference);
                }
                tracker.NoteDelivery(lastLessWait);
                if (ack.Deliveries.Count > 0)
                {
                    ackRequests.Add(ack.RequestId);
                    await call.RequestStream.WriteAsync(new ConsumeRequest { Ack = ack }, stop);
                }
                if (nack.Deliveries.Count > 0)
                {
                    tracker.CountNacked(nack.Deliveries.Count);
                    await call.RequestStream.WriteAsync(new ConsumeRequest { Nack = nack }, stop);
                }
            }
        }
        catch (Exception error) when (stop.IsCancellationRequested && error is OperationCanceledException or RpcException)
        {
        }
    }

    /// <summary>W7's consumer: a <see cref="BrokerConsumer"/> read in chunks, each chunk acked in one frame without waiting (as W2 does).</summary>
    private async Task ConsumeViaSdkAsync(string topic, string group, GroupTracker tracker, CancellationToken stop)
    {
        await using var consumer = new BrokerConsumer(new BrokerClientOptions
        {
            Listeners = address.ToString(),
            Topic = topic,
            Group = group,
            MaxInFlight = settings.MaxInFlight,
        });
        try
        {
            while (!stop.IsCancellationRequested)
            {
                var batch = await consumer.ReceiveBatchAsync(1_000, TimeSpan.FromMilliseconds(1), stop);
                if (batch.Count == 0)
                    continue;
                foreach (var message in batch)
                {
                    var (sendTimestamp, index) = Payloads.Read(message.Payload.Span);
                    tracker.CountDelivered(1);
                    if (message.Attempt == 1)
                        tracker.DeliverLatency.RecordValue(Histograms.MicrosecondsSince(sendTimestamp));
                    if (!tracker.Acked.TrySet(index))
                        tracker.CountDuplicate();
                }
                _ = consumer.AckAsync(batch, stop).ContinueWith(t =>
                {
                    if (t.IsCompletedSuccessfully)
                        tracker.CountAckConfirmed(t.Result.Accepted);
                }, TaskScheduler.Default);
            }
        }
        catch (Exception error) when (stop.IsCancellationRequested && error is OperationCanceledException or BrokerClientException)
        {
        }
    }
}
