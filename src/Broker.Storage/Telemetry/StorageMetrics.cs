using System.Diagnostics.Metrics;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Storage.Telemetry;

/// <summary>
/// The state of one store as observable instruments, read when a collector asks (a Prometheus scrape), never on the
/// hot path: per topic the messages stored and disk bytes; per group the deliveries, redeliveries, acks, nacks,
/// expired leases and dead letters so far (counters since the process started, except published: the topic's next
/// offset), and its backlog, in-flight, delayed, consumers and the age of its oldest unacknowledged message. One
/// description of every open topic serves the collections (each instrument asks in turn); it is refreshed in the
/// background, all topics at once within a time budget, once it is a second old (<see cref="Snapshot"/>).
/// Topics not opened since the start (never used) are not reported. Disposing removes the instruments.
/// </summary>
public sealed class StorageMetrics : IDisposable
{
    private static readonly TimeSpan SnapshotLifetime = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan OldestLifetime = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan CollectionBudget = TimeSpan.FromSeconds(2);

    private readonly TopicStore _store;
    private readonly TimeProvider _time;
    private static int _stores;
    // The first store of a process publishes as "Broker.Storage"; any further one (in-process test brokers) under a name
    // of its own, "Broker.Storage.2" and so on: instruments of the same meter and instrument name would be one stream
    // to an exporter, which keeps the first and drops the others (the host subscribes to "Broker.Storage" and
    // "Broker.Storage.*").
    private readonly Meter _meter = new(Interlocked.Increment(ref _stores) is var n && n == 1 ? StorageInstruments.MeterName : $"{StorageInstruments.MeterName}.{n}");
    private readonly Lock _gate = new();
    private (long TakenAt, IReadOnlyList<TopicInfo> Topics) _snapshot = (long.MinValue, []);
    private (long TakenAt, Dictionary<(string Topic, string Group), long> PublishTimes) _oldest = (long.MinValue, []);
    private Task? _refresh;

    /// <summary>Registers the instruments of <paramref name="store"/>.</summary>
    public StorageMetrics(TopicStore store, TimeProvider? time = null)
    {
        _store = store;
        _time = time ?? TimeProvider.System;
        _meter.CreateObservableCounter("broker.messages.published", () => PerTopic(t => t.NextOffset), "{message}",
            "Messages the topic has stored (its next offset)");
        _meter.CreateObservableGauge("broker.topic.disk.bytes", () => PerTopic(t => t.LogBytes), "By",
            "Bytes of the topic's message log on disk");
        Counter("broker.messages.delivered", g => g.DeliveredTotal, "Deliveries handed to consumers, redeliveries included");
        Counter("broker.messages.redelivered", g => g.RedeliveredTotal, "Deliveries after the first of a message");
        Counter("broker.messages.acked", g => g.AcknowledgedTotal, "Messages acknowledged");
        Counter("broker.messages.nacked", g => g.NackedTotal, "Retry nacks accepted");
        Counter("broker.messages.dead_lettered", g => g.DeadLetteredTotal, "Messages moved to the dead-letter topic");
        Counter("broker.leases.expired", g => g.LeasesExpiredTotal, "Deliveries whose visibility timeout ran out");
        Gauge("broker.group.backlog", g => g.Backlog, "{message}", "Messages not yet acknowledged by the group");
        Gauge("broker.group.in_flight", g => g.InFlight, "{message}", "Deliveries leased to consumers, not settled");
        Gauge("broker.group.delayed", g => g.Delayed, "{message}", "Messages waiting out a nack's delay");
        Gauge("broker.group.consumers", g => g.Consumers, "{consumer}", "Consumers subscribed");
        _meter.CreateObservableGauge("broker.group.oldest_unacked.age", OldestUnackedAges, "s",
            "Age of the oldest message the group has not acknowledged (0 when none)");
    }

    private void Counter(string name, Func<GroupInfo, long> value, string description) =>
        _meter.CreateObservableCounter(name, () => PerGroup(value), "{message}", description);

    private void Gauge(string name, Func<GroupInfo, long> value, string unit, string description) =>
        _meter.CreateObservableGauge(name, () => PerGroup(value), unit, description);

    private IEnumerable<Measurement<long>> PerTopic(Func<TopicInfo, long> value) =>
        Snapshot().Select(topic => new Measurement<long>(value(topic), new KeyValuePair<string, object?>("topic", topic.Name)));

    private IEnumerable<Measurement<long>> PerGroup(Func<GroupInfo, long> value) =>
        from topic in Snapshot()
        from g in topic.Groups
        select new Measurement<long>(value(g), new KeyValuePair<string, object?>("topic", topic.Name), new KeyValuePair<string, object?>("group", g.Name));

    private IEnumerable<Measurement<double>> OldestUnackedAges()
    {
        long now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var oldest = OldestUnacked();
        return from topic in Snapshot()
               from g in topic.Groups
               select new Measurement<double>(
                   oldest.TryGetValue((topic.Name, g.Name), out long published) && g.Backlog > 0 ? Math.Max(0, now - published) / 1000.0 : 0,
                   new KeyValuePair<string, object?>("topic", topic.Name), new KeyValuePair<string, object?>("group", g.Name));
    }

    /// <summary>
    /// Every open topic's in-memory numbers (no I/O, so always current and never slow), taken once for the instruments
    /// of one collection (each asks in turn): kept for a tenth of a second.
    /// </summary>
    private IReadOnlyList<TopicInfo> Snapshot()
    {
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            if (_snapshot.TakenAt == long.MinValue || _time.GetElapsedTime(_snapshot.TakenAt, now) >= SnapshotLifetime)
                _snapshot = (now, _store.OpenTopics().Select(topic => topic.DescribeInMemory()).ToList());
            return _snapshot.Topics;
        }
    }

    /// <summary>
    /// The publish time of each group's oldest unacknowledged message: that takes a read of the log per group, so it is
    /// refreshed in the background (all topics at once, within a time budget) when over a second old, and a collection
    /// never waits for it: the gauge shows the age as of the previous refresh's finding, which no slow disk, closing
    /// topic or other in-process store (every exporter in a process sees every store's instruments) can hold up.
    /// </summary>
    private Dictionary<(string Topic, string Group), long> OldestUnacked()
    {
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            bool stale = _oldest.TakenAt == long.MinValue || _time.GetElapsedTime(_oldest.TakenAt, now) >= OldestLifetime;
            if (stale && (_refresh is null || _refresh.IsCompleted))
                _refresh = Task.Run(RefreshOldestAsync);
            return _oldest.PublishTimes;
        }
    }

    private async Task RefreshOldestAsync()
    {
        long takenAt = _time.GetTimestamp();
        using var budget = new CancellationTokenSource(CollectionBudget);
        var described = await Task.WhenAll(_store.OpenTopics().Select(topic => DescribeOrNullAsync(topic, budget.Token))).ConfigureAwait(false);
        var publishTimes = new Dictionary<(string Topic, string Group), long>();
        foreach (var topic in described.OfType<TopicInfo>())
        {
            foreach (var group in topic.Groups)
            {
                if (group.OldestUnackedPublishUnixMs is { } published)
                    publishTimes[(topic.Name, group.Name)] = published;
            }
        }
        lock (_gate)
            _oldest = (takenAt, publishTimes);
    }

    private static async Task<TopicInfo?> DescribeOrNullAsync(Topic topic, CancellationToken cancellationToken)
    {
        try
        {
            return await topic.DescribeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception error) when (error is Errors.BrokerException or ObjectDisposedException or OperationCanceledException)
        {
            return null;  // deleted, closing, failed or slow meanwhile: not reported this time
        }
    }

    /// <summary>Removes the instruments.</summary>
    public void Dispose() => _meter.Dispose();
}
