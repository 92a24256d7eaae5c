using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Text;
using Broker.Storage.Groups;
using Broker.Storage.Telemetry;
using Broker.Storage.Topics;
using Microsoft.Extensions.Time.Testing;

namespace Broker.Storage.Tests;

/// <summary>
/// A redrive moves dead letters in batches: one durable append per destination topic and one durable ack per batch,
/// not one of each per letter. Durable writes are counted through the storage's commit-latency histograms, which are
/// recorded once per append and once per ack frame. Topic names are unique to this class, because those histograms
/// are process-wide and other test classes run alongside.
/// </summary>
public sealed class RedriveTests : IDisposable
{
    private const string Jobs = "redrive-jobs", Other = "redrive-other", DeadLetters = "redrive-jobs.dlq";
    private readonly TempDirectory _data = new();
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
    private readonly ConcurrentBag<(string Instrument, string Topic)> _commits = [];
    private readonly MeterListener _listener = new();

    public RedriveTests()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == StorageInstruments.MeterName)
                listener.EnableMeasurementEvents(instrument);
        };
        _listener.SetMeasurementEventCallback<double>((instrument, _, tags, _) =>
        {
            foreach (var tag in tags)
                if (tag is { Key: "topic", Value: string topic } && topic.StartsWith("redrive-", StringComparison.Ordinal))
                    _commits.Add((instrument.Name, topic));
        });
        _listener.Start();
    }

    public void Dispose()
    {
        _listener.Dispose();
        _data.Dispose();
    }

    [Fact]
    public async Task Letters_move_in_batches_with_one_append_per_topic_and_one_ack_and_stay_moved_after_a_crash()
    {
        await using (var store = await OpenAsync())
        {
            // 1203 letters: 1000 from Jobs, 200 from Other (every sixth), 3 from a topic that no longer exists.
            var letters = Enumerable.Range(0, 1200).Select(i => Letter(i % 6 == 5 ? Other : Jobs, i))
                .Concat(Enumerable.Range(1200, 3).Select(i => Letter("redrive-gone", i))).ToList();
            await (await store.GetTopicAsync(DeadLetters)).AppendAsync(letters, trusted: true);
            _commits.Clear();

            // A limit of 700: two fetches (500 + 200), each appended once to each of the two topics and acked once.
            var limited = await DeadLetterRedrive.RedriveAsync(store, DeadLetters, 700, default);
            Assert.Equal(new RedriveResult(700, 0), limited);
            Assert.Equal(2, Count("broker.publish.commit.duration", Jobs));
            Assert.Equal(2, Count("broker.publish.commit.duration", Other));
            Assert.Equal(2, Count("broker.ack.commit.duration", DeadLetters));
            _commits.Clear();

            // The rest: 500 routable in one batch, the 3 whose topic is gone skipped and left in place.
            Assert.Equal(new RedriveResult(500, 3), await DeadLetterRedrive.RedriveAsync(store, DeadLetters, 0, default));
            Assert.Equal(1, Count("broker.ack.commit.duration", DeadLetters));
            var jobs = await store.GetTopicAsync(Jobs);
            var moved = await jobs.PeekAsync(0, 2000, default);
            Assert.Equal(1000, moved.Count);
            Assert.Equal(Enumerable.Range(0, 1200).Where(i => i % 6 != 5).Select(i => $"job {i}"),
                moved.Select(m => Encoding.UTF8.GetString(m.Payload.Span)));
            // The producer's header goes back with the letter; the broker's dead-letter headers do not.
            Assert.All(moved, m => Assert.Equal([new("producer", "kept")], m.Headers));

            // A target takes the skipped ones too.
            Assert.Equal(new RedriveResult(3, 0), await DeadLetterRedrive.RedriveAsync(store, DeadLetters, 0, default, targetTopic: Other));
            Assert.Equal(203, (await (await store.GetTopicAsync(Other)).PeekAsync(0, 1000, default)).Count);
            await store.CrashAsync();
        }

        // The acks were durable before each redrive returned: nothing is moved a second time.
        await using (var store = await OpenAsync())
        {
            Assert.Equal(new RedriveResult(0, 0), await DeadLetterRedrive.RedriveAsync(store, DeadLetters, 0, default));
            Assert.Equal(1000, (await (await store.GetTopicAsync(Jobs)).PeekAsync(0, 2000, default)).Count);
        }
    }

    private int Count(string instrument, string topic) => _commits.Count(c => c.Instrument == instrument && c.Topic == topic);

    private static AppendMessage Letter(string originalTopic, int i) => new(default,
        [new("producer", "kept"), new(DeadLetterRouter.Headers.OriginalTopic, originalTopic), new(DeadLetterRouter.Headers.Reason, "max deliveries")],
        Encoding.UTF8.GetBytes($"job {i}"));

    private async Task<TopicStore> OpenAsync()
    {
        var store = await TopicStore.OpenAsync(new StorageOptions { DataDirectory = _data.Path, MaintenanceInterval = TimeSpan.FromDays(1) }, _time);
        foreach (string name in new[] { Jobs, Other, DeadLetters })
            await store.CreateTopicAsync(name, ifNotExists: true, default);
        return store;
    }
}
