using System.Text;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using Microsoft.Extensions.Time.Testing;

namespace Broker.Storage.Tests;

/// <summary>
/// Scheduled delivery on real files, under a clock the tests move (the fake clock runs due timers inside Advance). A
/// scheduled message is durable at once, reaches every group at its time and not before, survives restarts and crashes
/// during its delay, fires exactly once, holds retention back and goes with a purge.
/// </summary>
public sealed class ScheduledDeliveryTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly TempDirectory _data = new();
    private readonly FakeTimeProvider _time = new(Start);

    private StorageOptions Options => new()
    {
        DataDirectory = _data.Path, MaxMessageBytes = 4096, TopicSegmentSizeBits = 20, TopicPageSizeBits = 12,
        MaintenanceInterval = TimeSpan.FromDays(40), RetentionIdleGrace = TimeSpan.FromMinutes(1),
    };

    public void Dispose() => _data.Dispose();

    private async Task<TopicStore> OpenAsync()
    {
        var store = await TopicStore.OpenAsync(Options, _time);
        await store.CreateTopicAsync("jobs", ifNotExists: true, default);
        return store;
    }

    private static AppendMessage Later(string payload, TimeSpan delay) =>
        AppendMessage.FromPayload(Encoding.UTF8.GetBytes(payload)) with { Delay = delay };

    private static string Text(GroupDelivery delivery) => Encoding.UTF8.GetString(delivery.Message.Payload.Span);

    // A record leaves the count when its firing run ends, just after its copy is durable (and so readable): a reader
    // that fetched the copy can be a moment ahead of that bookkeeping.
    private static async Task NothingScheduledAsync(Topic topic)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (topic.ScheduledCount != 0)
            await Task.Delay(1, deadline.Token);
    }

    [Fact]
    public async Task A_scheduled_message_reaches_every_group_at_its_time_and_not_before()
    {
        await using var store = await OpenAsync();
        var topic = await store.GetTopicAsync("jobs");
        var (first, _) = await topic.GetOrCreateGroupAsync("first", GroupStart.Earliest, null, default);
        var (second, _) = await topic.GetOrCreateGroupAsync("second", GroupStart.Earliest, null, default);

        var published = await topic.AppendAsync([Later("later", TimeSpan.FromMinutes(10)), .. TopicStoreTests.Messages("now")]);
        Assert.Equal(new AppendResult(0, 2), published);
        Assert.Equal(1, topic.ScheduledCount);

        var firstWorker = first.Join(10, TimeSpan.FromDays(7));
        var now = await TopicStoreTests.FetchExactlyAsync(first, firstWorker, 1);
        Assert.Equal(("now", 1L), (Text(now[0]), now[0].Offset));
        Assert.Empty(await first.FetchAvailableAsync(firstWorker, 10, default));

        // A minute early: the timer has not run (a due run takes the record out of the index before anything else).
        _time.Advance(TimeSpan.FromMinutes(9));
        Assert.Equal(1, topic.ScheduledCount);
        Assert.Empty(await first.FetchAvailableAsync(firstWorker, 10, default));

        _time.Advance(TimeSpan.FromMinutes(1));
        var due = await TopicStoreTests.FetchExactlyAsync(first, firstWorker, 1);
        var secondDue = await TopicStoreTests.FetchExactlyAsync(second, second.Join(10, TimeSpan.FromDays(7)), 2);
        Assert.Equal(["now", "later"], secondDue.Select(Text));
        foreach (var delivery in new[] { due[0], secondDue[1] })
        {
            Assert.Equal(("later", 2L), (Text(delivery), delivery.Offset));
            Assert.Equal(new MessageSchedule(Start.AddMinutes(10).ToUnixTimeMilliseconds(), 0), delivery.Message.Schedule);
            Assert.Equal(Start.ToUnixTimeMilliseconds(), delivery.Message.PublishTimeUnixMs);
        }
        await NothingScheduledAsync(topic);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(60)]
    public async Task A_record_that_comes_due_before_its_publish_is_durable_is_still_delivered(int delaySeconds)
    {
        // 1 s: kept in memory when appended (due soon); 60 s: past the horizon, so read from the log when it fires.
        await using var store = await OpenAsync();
        var topic = await store.GetTopicAsync("jobs");
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);

        // The clock moves past the delivery time while the commit may still be in flight: the timer fires at once.
        var publishes = Enumerable.Range(0, 20).Select(i => topic.AppendAsync([Later($"m{i}", TimeSpan.FromSeconds(delaySeconds))])).ToList();
        _time.Advance(TimeSpan.FromSeconds(delaySeconds));
        await Task.WhenAll(publishes);

        var delivered = await TopicStoreTests.FetchExactlyAsync(group, group.Join(100, TimeSpan.FromDays(7)), 20);
        Assert.Equal(Enumerable.Range(0, 20).Select(i => $"m{i}").Order(), delivered.Select(Text).Order());
        await NothingScheduledAsync(topic);
    }

    [Fact]
    public async Task A_restart_during_the_delay_keeps_the_message_and_a_restart_after_it_fired_does_not_fire_it_again()
    {
        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync([Later("in an hour", TimeSpan.FromHours(1)), Later("in a day", TimeSpan.FromDays(1))]);
        }
        _time.Advance(TimeSpan.FromMinutes(30));
        await using (var store = await TopicStore.OpenAsync(Options, _time))
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Equal(2, topic.ScheduledCount);
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var worker = group.Join(10);
            Assert.Empty(await group.FetchAvailableAsync(worker, 10, default));

            _time.Advance(TimeSpan.FromMinutes(30));
            var due = await TopicStoreTests.FetchExactlyAsync(group, worker, 1);
            Assert.Equal("in an hour", Text(due[0]));
            await group.SettleAsync(new SettleAction.Ack(), [new DeliveryRef(due[0].Offset, due[0].Token)]);
            Assert.Equal(1, topic.ScheduledCount);
            // Crash right after the copy became durable: nothing is committed beyond it.
            await store.CrashAsync();
        }
        await using (var store = await TopicStore.OpenAsync(Options, _time))
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Equal(1, topic.ScheduledCount);
            // A group reading everything from the oldest sees the due copy once and never the records.
            var (replay, _) = await topic.GetOrCreateGroupAsync("replay", GroupStart.Earliest, null, default);
            var worker = replay.Join(10, TimeSpan.FromDays(7));
            var all = await TopicStoreTests.FetchExactlyAsync(replay, worker, 1);
            Assert.Equal(["in an hour"], all.Select(Text));
            Assert.Empty(await replay.FetchAvailableAsync(worker, 10, default));

            _time.Advance(TimeSpan.FromDays(1));
            var last = await TopicStoreTests.FetchExactlyAsync(replay, worker, 1);
            Assert.Equal("in a day", Text(last[0]));
            await NothingScheduledAsync(topic);
        }
    }

    [Fact]
    public async Task Records_already_due_at_a_restart_fire_at_once()
    {
        await using (var store = await OpenAsync())
            await (await store.GetTopicAsync("jobs")).AppendAsync([Later("due while down", TimeSpan.FromMinutes(5))]);
        _time.Advance(TimeSpan.FromHours(1));
        await using (var store = await TopicStore.OpenAsync(Options, _time))
        {
            var topic = await store.GetTopicAsync("jobs");
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var due = await TopicStoreTests.FetchExactlyAsync(group, group.Join(10), 1);
            Assert.Equal("due while down", Text(due[0]));
        }
    }

    [Fact]
    public async Task Retention_keeps_a_record_until_its_time_and_a_purge_drops_it_for_good()
    {
        await using (var store = await TopicStore.OpenAsync(Options, _time))
        {
            await store.CreateTopicAsync("jobs", false, default, new TopicRetention(MaxAgeMs: 3_600_000));
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync([Later("tomorrow", TimeSpan.FromDays(1)), .. TopicStoreTests.Messages("old")]);
            _time.Advance(TimeSpan.FromHours(2));
            await store.MaintainAllAsync(default);
            // "old" is past its age, but it lies above the pending record, which holds the log from there.
            Assert.Equal(0, (await topic.DescribeAsync(default)).FirstOffset);

            _time.Advance(TimeSpan.FromHours(22));
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var due = await TopicStoreTests.FetchExactlyAsync(group, group.Join(10), 2);
            Assert.Equal(["old", "tomorrow"], due.Select(Text));

            await topic.AppendAsync([Later("never", TimeSpan.FromDays(2))]);
            var purged = await topic.PurgeAsync(default);
            Assert.Equal(0, topic.ScheduledCount);
            Assert.Equal(4, purged.NextOffset);
        }
        _time.Advance(TimeSpan.FromDays(3));
        await using (var store = await TopicStore.OpenAsync(Options, _time))
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Equal(0, topic.ScheduledCount);
            Assert.Equal(4, topic.NextOffset);
        }
    }

    [Fact]
    public async Task A_delivery_time_in_the_past_delivers_at_once_and_bad_schedules_are_refused_whole()
    {
        await using var store = await OpenAsync();
        var topic = await store.GetTopicAsync("jobs");
        var past = AppendMessage.FromPayload("past"u8.ToArray()) with { DeliverAtUnixMs = Start.AddMinutes(-1).ToUnixTimeMilliseconds() };
        await topic.AppendAsync([past]);
        Assert.Equal(0, topic.ScheduledCount);

        var both = Later("both", TimeSpan.FromMinutes(1)) with { DeliverAtUnixMs = Start.AddHours(1).ToUnixTimeMilliseconds() };
        var tooFar = Later("too far", TimeSpan.FromDays(3651));
        foreach (var bad in new[] { both, tooFar })
        {
            var error = await Assert.ThrowsAsync<BrokerException>(() => topic.AppendAsync([Later("fine", TimeSpan.FromMinutes(1)), bad]));
            Assert.Equal(BrokerErrorCode.InvalidRequest, error.Code);
        }
        Assert.Equal((1L, 0), (topic.NextOffset, topic.ScheduledCount));

        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
        var delivered = await TopicStoreTests.FetchExactlyAsync(group, group.Join(10), 1);
        Assert.Equal(("past", (MessageSchedule?)null), (Text(delivered[0]), delivered[0].Message.Schedule));
    }

    [Fact]
    public async Task Under_concurrent_publishing_and_consuming_every_scheduled_message_is_delivered_once()
    {
        // The real clock: records come due while batches are appended, copies fire, and the group acknowledges, so its
        // floor passes pending records and the log is truncated behind it (1 MiB segments: several are freed).
        await using var store = await TopicStore.OpenAsync(Options, TimeProvider.System);
        await store.CreateTopicAsync("jobs", false, default);
        var topic = await store.GetTopicAsync("jobs");
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
        const int Batches = 400, PerBatch = 50, Total = Batches * PerBatch;
        string padding = new('x', 400);
        var publishing = Task.WhenAll(Enumerable.Range(0, 8).Select(writer => Task.Run(async () =>
        {
            for (int b = writer; b < Batches; b += 8)
            {
                await topic.AppendAsync([.. Enumerable.Range(b * PerBatch, PerBatch).Select(i => i % 10 == 0
                    ? Later($"{i} {padding}", TimeSpan.FromMilliseconds(1_500 + i % 1_000))
                    : AppendMessage.FromPayload(Encoding.UTF8.GetBytes($"{i} {padding}")))]);
            }
        })));
        var worker = group.Join(1_000, TimeSpan.FromHours(1));
        var received = new List<int>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        // What the periodic maintenance does, about every millisecond instead of every second: free the segments below
        // the group's durable floor, also while due copies are being fired (their records must stay until the copies
        // are durable).
        using var consumed = new CancellationTokenSource();
        var maintaining = Task.Run(async () =>
        {
            while (!consumed.IsCancellationRequested)
            {
                await topic.MaintainAsync();
                await Task.Delay(1);
            }
        });
        while (received.Count < Total)
        {
            DeliveryBatch batch;
            try
            {
                batch = await group.FetchAsync(worker, 1_000, timeout.Token);
            }
            catch (OperationCanceledException)
            {
                var missing = Enumerable.Range(0, Total).Except(received).ToList();
                Assert.Fail($"{missing.Count} messages never arrived (first: {string.Join(", ", missing.Take(10))}); scheduled pending "
                    + $"{topic.ScheduledCount}, next offset {topic.NextOffset}, log begins at {topic.Log.BeginAddress}");
                throw;
            }
            received.AddRange(batch.Select(d => int.Parse(Text(d).Split(' ')[0])));
            await group.SettleAsync(new SettleAction.Ack(), [.. batch.Select(d => new DeliveryRef(d.Offset, d.Token))]);
            await topic.MaintainAsync();
        }
        await consumed.CancelAsync();
        await maintaining;
        await publishing;
        Assert.Equal(Enumerable.Range(0, Total), received.Order());
        await NothingScheduledAsync(topic);
        Assert.True(topic.Log.BeginAddress > 0, "the test meant the log to be truncated while records were pending");
    }
}
