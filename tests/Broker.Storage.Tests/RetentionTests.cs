using Broker.Storage.Groups;
using Broker.Storage.Topics;
using Microsoft.Extensions.Time.Testing;

namespace Broker.Storage.Tests;

/// <summary>
/// Retention by age and size on real files, under a clock the tests move. The rule: retention deletes from the oldest
/// message, but never a message at or above the ack floor of a group with a consumer subscribed (a live group); a group
/// with no consumer is moved durably past what is deleted, so abandoned groups, dead-letter topics and topics without
/// groups give their disk back.
/// </summary>
public sealed class RetentionTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly TempDirectory _data = new();
    private readonly FakeTimeProvider _time = new(Start);

    private static readonly TimeSpan Grace = TimeSpan.FromMinutes(1);

    private StorageOptions Options => new()
    {
        DataDirectory = _data.Path, MaxMessageBytes = 4096, TopicSegmentSizeBits = 20, TopicPageSizeBits = 12,
        MaintenanceInterval = TimeSpan.FromDays(1), RetentionIdleGrace = Grace,
    };

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task Messages_older_than_max_age_are_deleted_from_a_topic_without_groups()
    {
        await using var store = await OpenAsync(new TopicRetention(MaxAgeMs: 3_600_000));
        var topic = await store.GetTopicAsync("jobs");
        await topic.AppendAsync(TopicStoreTests.Messages("a", "b", "c"));
        _time.Advance(TimeSpan.FromMinutes(50));
        await topic.AppendAsync(TopicStoreTests.Messages("d", "e"));

        await store.MaintainAllAsync(default);
        Assert.Equal(0, (await topic.DescribeAsync(default)).FirstOffset);

        _time.Advance(TimeSpan.FromMinutes(11));
        await store.MaintainAllAsync(default);
        Assert.Equal(3, (await topic.DescribeAsync(default)).FirstOffset);

        _time.Advance(TimeSpan.FromHours(1));
        await store.MaintainAllAsync(default);
        var info = await topic.DescribeAsync(default);
        Assert.Equal((5L, 5L), (info.FirstOffset, info.NextOffset));
    }

    [Fact]
    public async Task A_topic_nobody_opened_since_the_restart_is_opened_by_maintenance_for_its_retention()
    {
        await using (var store = await OpenAsync(new TopicRetention(MaxAgeMs: 3_600_000)))
            await (await store.GetTopicAsync("jobs")).AppendAsync(TopicStoreTests.Messages("a", "b"));
        _time.Advance(TimeSpan.FromHours(2));

        await using (var store = await TopicStore.OpenAsync(Options, _time))
        {
            Assert.Equal(0, store.OpenTopicCount);
            await store.MaintainAllAsync(default);
            Assert.Equal(1, store.OpenTopicCount);
            Assert.Equal(2, (await (await store.GetTopicAsync("jobs")).DescribeAsync(default)).FirstOffset);
        }
    }

    [Fact]
    public async Task Retention_never_deletes_what_a_live_group_has_not_acknowledged_and_moves_idle_groups_past_it()
    {
        await using (var store = await OpenAsync(new TopicRetention(MaxAgeMs: 3_600_000)))
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(TopicStoreTests.Messages("a", "b", "c", "d", "e"));
            var (live, _) = await topic.GetOrCreateGroupAsync("live", GroupStart.Earliest, null, default);
            var (idle, _) = await topic.GetOrCreateGroupAsync("idle", GroupStart.Earliest, null, default);
            var worker = live.Join(10, TimeSpan.FromHours(3));
            var held = await TopicStoreTests.FetchExactlyAsync(live, worker, 5);
            await live.SettleAsync(new SettleAction.Ack(), [.. held.Take(2).Select(d => new DeliveryRef(d.Offset, d.Token))]);
            _time.Advance(TimeSpan.FromHours(2));

            await store.MaintainAllAsync(default);

            // Offsets 2 to 4 are older than max age but the live group holds them unacknowledged: they stay, and so
            // does its lease. The idle group moved on to where the live one stands.
            var info = await topic.DescribeAsync(default);
            Assert.Equal(2, info.FirstOffset);
            Assert.Same(live, topic.FindGroup("live"));
            Assert.Equal(2, topic.FindGroup("idle")!.Floor().Floor);
            Assert.Equal(Errors.BrokerErrorCode.GroupReset, idle.Retirement?.Code);
            var acked = await live.SettleAsync(new SettleAction.Ack(), [.. held.Skip(2).Select(d => new DeliveryRef(d.Offset, d.Token))]);
            Assert.Equal(3, acked.Accepted);
            live.Leave(worker);

            // Within the grace after its last consumer left, a group still counts as live.
            await store.MaintainAllAsync(default);
            Assert.Equal(2, (await topic.DescribeAsync(default)).FirstOffset);
            Assert.Same(live, topic.FindGroup("live"));

            // Nobody subscribed for longer than the grace: everything past max age goes, and both groups move to the end.
            _time.Advance(Grace);
            await store.MaintainAllAsync(default);
            info = await topic.DescribeAsync(default);
            Assert.Equal((5L, 5L), (info.FirstOffset, info.NextOffset));
            Assert.All(info.Groups, g => Assert.Equal(5, g.AckFloor));
            await store.CrashAsync();
        }

        await using (var store = await OpenAsync(null))
        {
            // The groups' moves were durable before the truncation; the truncation itself rides on a later commit, which
            // the crash may have cut: then the next round does it again.
            var topic = await store.GetTopicAsync("jobs");
            var info = await topic.DescribeAsync(default);
            Assert.All(info.Groups, g => Assert.Equal(5, g.AckFloor));
            Assert.Equal(new TopicRetention(MaxAgeMs: 3_600_000), info.Retention);
            await store.MaintainAllAsync(default);
            Assert.Equal(5, (await topic.DescribeAsync(default)).FirstOffset);
        }
    }

    [Fact]
    public async Task After_a_restart_every_group_is_live_for_the_grace_so_reconnecting_workers_lose_nothing()
    {
        await using (var store = await OpenAsync(new TopicRetention(MaxAgeMs: 3_600_000)))
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(TopicStoreTests.Messages("a", "b", "c"));
            var (workers, _) = await topic.GetOrCreateGroupAsync("workers", GroupStart.Earliest, null, default);
            await TopicStoreTests.FetchExactlyAsync(workers, workers.Join(10), 3);
            _time.Advance(TimeSpan.FromHours(2));
            await store.CrashAsync();
        }

        await using (var store = await TopicStore.OpenAsync(Options, _time))
        {
            // The messages are past max age, but the workers have not had the grace to come back yet.
            await store.MaintainAllAsync(default);
            var topic = await store.GetTopicAsync("jobs");
            Assert.Equal(0, (await topic.DescribeAsync(default)).FirstOffset);
            _time.Advance(Grace / 2);
            await store.MaintainAllAsync(default);
            Assert.Equal(0, (await topic.DescribeAsync(default)).FirstOffset);

            // They did not come back within it: the group is idle, and retention passes it.
            _time.Advance(Grace);
            await store.MaintainAllAsync(default);
            var info = await topic.DescribeAsync(default);
            Assert.Equal((3L, 3L), (info.FirstOffset, info.Groups.Single().AckFloor));
        }
    }

    [Fact]
    public async Task An_idle_group_keeps_what_it_knew_above_the_cut()
    {
        await using var store = await OpenAsync(new TopicRetention(MaxAgeMs: 3_600_000));
        var topic = await store.GetTopicAsync("jobs");
        await topic.AppendAsync(TopicStoreTests.Messages("a", "b"));
        _time.Advance(TimeSpan.FromHours(2));
        await topic.AppendAsync(TopicStoreTests.Messages("c", "d", "e"));
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
        var member = group.Join(10);
        var held = await TopicStoreTests.FetchExactlyAsync(group, member, 5);
        // Acked above the floor: offset 3. Nacked with a delay: offset 4.
        await group.SettleAsync(new SettleAction.Ack(), [new DeliveryRef(held[3].Offset, held[3].Token)]);
        await group.SettleAsync(new SettleAction.Retry(TimeSpan.FromHours(1), null), [new DeliveryRef(held[4].Offset, held[4].Token)]);
        group.Leave(member);
        _time.Advance(Grace);

        await store.MaintainAllAsync(default);

        var moved = topic.FindGroup("g")!;
        Assert.Equal(2, moved.Floor().Floor);
        var next = await TopicStoreTests.FetchExactlyAsync(moved, moved.Join(10), 1);
        // Offset 2 comes again (attempt 2: its count was kept); 3 stays acked; 4 stays delayed.
        Assert.Equal((2L, 2), (next.Single().Offset, next.Single().Attempt));
        using var shortWait = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => moved.FetchAsync(moved.Join(10), 10, shortWait.Token));
    }

    [Fact]
    public async Task The_oldest_messages_beyond_max_bytes_are_deleted_and_disk_is_given_back()
    {
        const long maxBytes = 1_500_000;
        await using var store = await OpenAsync(new TopicRetention(MaxBytes: maxBytes));
        var topic = await store.GetTopicAsync("jobs");
        for (int i = 0; i < 4; i++)
            await topic.AppendAsync(GroupAdminTests.Kilobytes(1000));
        var (live, _) = await topic.GetOrCreateGroupAsync("live", GroupStart.Earliest, null, default);
        var member = live.Join(5000);
        await GroupAdminTests.AckAllAsync(live, 0 + 2000);
        var first = (await topic.DescribeAsync(default));
        Assert.True(first.LogBytes > 3 * maxBytes / 2);

        // The live group holds offset 2000 on: the log is cut there, not at the size limit.
        await store.MaintainAllAsync(default);
        var info = await topic.DescribeAsync(default);
        Assert.Equal(2000, info.FirstOffset);
        Assert.True(info.LogBytes > maxBytes);

        live.Leave(member);
        _time.Advance(Grace);
        await store.MaintainAllAsync(default);
        info = await topic.DescribeAsync(default);
        Assert.True(info.LogBytes <= maxBytes && info.LogBytes > maxBytes - 2048, $"the log holds {info.LogBytes} bytes");
        Assert.True(info.FirstOffset > 2000);
        Assert.Equal(info.FirstOffset, topic.FindGroup("live")!.Floor().Floor);
        // FASTER deletes the segment files below the begin address (asynchronously) once a commit recorded it.
        string log = Path.Combine(_data.Path, "topics", "jobs", "log");
        Assert.True(File.Exists(Path.Combine(log, "log.3")));
        await Task.WhenAll(WaitUntilDeletedAsync(log, "log.0"), WaitUntilDeletedAsync(log, "log.1"));
    }

    private static async Task WaitUntilDeletedAsync(string directory, string file)
    {
        string path = Path.Combine(directory, file);
        var deleted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var watcher = new FileSystemWatcher(directory, file);
        watcher.Deleted += (_, _) => deleted.TrySetResult();
        watcher.EnableRaisingEvents = true;
        if (File.Exists(path))
            await deleted.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Dead_letter_topics_the_broker_creates_get_DeadLetterMaxAgeMs_and_letters_expire()
    {
        var options = Options;
        options.DeadLetterMaxAgeMs = 3_600_000;
        await using var store = await TopicStore.OpenAsync(options, _time);
        await store.CreateTopicAsync("jobs", ifNotExists: false, default);
        var topic = await store.GetTopicAsync("jobs");
        await topic.AppendAsync(TopicStoreTests.Messages("poison"));
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
        var delivered = await TopicStoreTests.FetchExactlyAsync(group, group.Join(1), 1);
        await group.SettleAsync(new SettleAction.DeadLetter("bad", null), [new DeliveryRef(delivered[0].Offset, delivered[0].Token)]);
        var deadLetters = await store.GetTopicAsync("jobs.dlq");
        Assert.Equal(new TopicRetention(MaxAgeMs: 3_600_000), (await deadLetters.DescribeAsync(default)).Retention);
        Assert.Equal(TopicRetention.Unlimited, (await topic.DescribeAsync(default)).Retention);
        // The letter is routed in the background: a reader on the dead-letter topic waits for it (and then leaves).
        var (reader, _) = await deadLetters.GetOrCreateGroupAsync("reader", GroupStart.Earliest, null, default);
        var member = reader.Join(1);
        Assert.Equal("poison", System.Text.Encoding.UTF8.GetString((await TopicStoreTests.FetchExactlyAsync(reader, member, 1)).Single().Message.Payload.Span));
        reader.Leave(member);
        // A reader can see the letter a moment before the log's own record of its commit is updated (retention and
        // Describe go by that record): wait for it.
        await deadLetters.Log.WaitForDurableAsync(deadLetters.Log.TailAddress);
        _time.Advance(TimeSpan.FromHours(2));
        await store.MaintainAllAsync(default);
        var info = await deadLetters.DescribeAsync(default);
        Assert.Equal((1L, 1L), (info.FirstOffset, info.NextOffset));
    }

    [Fact]
    public async Task Retention_is_changed_durably_and_shown_by_describe()
    {
        await using (var store = await OpenAsync(null))
        {
            Assert.Equal(TopicRetention.Unlimited, (await (await store.GetTopicAsync("jobs")).DescribeAsync(default)).Retention);
            await store.UpdateRetentionAsync("jobs", new TopicRetention(MaxAgeMs: 60_000, MaxBytes: 1 << 30), default);
            await Assert.ThrowsAsync<Errors.BrokerException>(() => store.UpdateRetentionAsync("jobs", new TopicRetention(MaxAgeMs: -1), default));
            await store.CrashAsync();
        }
        await using (var store = await TopicStore.OpenAsync(Options, _time))
            Assert.Equal(new TopicRetention(60_000, 1 << 30), (await (await store.GetTopicAsync("jobs")).DescribeAsync(default)).Retention);
    }

    private async Task<TopicStore> OpenAsync(TopicRetention? retention)
    {
        var store = await TopicStore.OpenAsync(Options, _time);
        await store.CreateTopicAsync("jobs", ifNotExists: true, default, retention);
        return store;
    }
}
