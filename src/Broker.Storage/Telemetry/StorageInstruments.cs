using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Broker.Storage.Telemetry;

/// <summary>
/// The storage's measurements taken on the hot path: how long a publish waited for its commit (fsync), and an ack
/// frame for its group-state commit. One static meter, as libraries do without a container: recording costs a check
/// while nothing listens, and the host's OpenTelemetry (or any MeterListener) subscribes by the meter's name. One
/// record per batch or ack frame, never per message.
/// </summary>
public static class StorageInstruments
{
    /// <summary>The meter name every storage instrument is published under (the host subscribes to it).</summary>
    public const string MeterName = "Broker.Storage";

    private static readonly Meter Meter = new(MeterName);

    private static readonly Histogram<double> PublishCommit = Meter.CreateHistogram<double>(
        "broker.publish.commit.duration", unit: "s",
        description: "From a publish batch's append until it is durable (the commit covering it has completed)",
        advice: CommitBuckets);

    private static readonly Histogram<double> AckCommit = Meter.CreateHistogram<double>(
        "broker.ack.commit.duration", unit: "s",
        description: "From an ack frame's append to the group-state log until it is durable",
        advice: CommitBuckets);

    // Commits take 0.5–50 ms here; the default buckets (0–10,000) would put them all in the first two.
    private static InstrumentAdvice<double> CommitBuckets => new()
    {
        HistogramBucketBoundaries = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
    };

    internal static void RecordPublishCommit(string topic, long startedTimestamp)
    {
        if (PublishCommit.Enabled)
            PublishCommit.Record(Stopwatch.GetElapsedTime(startedTimestamp).TotalSeconds, new KeyValuePair<string, object?>("topic", topic));
    }

    internal static void RecordAckCommit(string topic, string group, long startedTimestamp)
    {
        if (AckCommit.Enabled)
            AckCommit.Record(Stopwatch.GetElapsedTime(startedTimestamp).TotalSeconds,
                new KeyValuePair<string, object?>("topic", topic), new KeyValuePair<string, object?>("group", group));
    }
}
