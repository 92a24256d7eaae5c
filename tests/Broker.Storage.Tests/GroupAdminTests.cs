using System.Text;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using Microsoft.Extensions.Time.Testing;

namespace Broker.Storage.Tests;

/// <summary>
/// Reset, delete and purge on real files. Each is durable when it returns: a crash right after it (the store closed
/// without its final commits, each log recovering to its own last commit) keeps it. A reset or deletion retires the old
/// group object, so what it still had in flight (a late ack) cannot be written after the new state.
/// </summary>
public sealed class GroupAdminTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly TempDirectory _data = new();
    private readonly FakeTimeProvider _time = new(Start);

    private StorageOptions Options => new()
    {
        DataDirectory = _data.Path, MaxMessageBytes = 4096, TopicSegmentSizeBits = 20, TopicPageSizeBits = 12,
        MaintenanceInterval = TimeSpan.FromDays(1),
    };

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task Reset_to_an_earlier_offset_delivers_again_from_there_and_survives_a_crash()
    {
        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(TopicStoreTests.Messages([.. Enumerable.Range(0, 10).Select(i => $"m{i}")]));
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            await AckAllAsync(group, 10);

            Assert.Equal(3, await topic.ResetGroupAsync("g", GroupStart.AtOffset(3), default));

            var again = topic.FindGroup("g")!;
            Assert.NotSame(group, again);
            Assert.Equal((3L, 7L), (again.Floor().Floor, (await topic.DescribeAsync(default)).Groups.Single().Backlog));
            var member = again.Join(100);
            var redelivered = await TopicStoreTests.FetchExactlyAsync(again, member, 7);
            Assert.Equal([3L, 4, 5, 6, 7, 8, 9], redelivered.Select(d => d.Offset));
            Assert.All(redelivered, d => Assert.Equal(1, d.Attempt));
            await store.CrashAsync();
        }

        await using (var store = await OpenAsync())
        {
            var group = (await store.GetTopicAsync("jobs")).FindGroup("g")!;
            Assert.Equal(3, group.Floor().Floor);
            var delivered = await TopicStoreTests.FetchExactlyAsync(group, group.Join(100), 7);
            Assert.Equal(3, delivered[0].Offset);
        }
    }

    [Fact]
    public async Task Reset_to_a_time_starts_at_the_first_message_published_at_or_after_it()
    {
        await using var store = await OpenAsync();
        var topic = await store.GetTopicAsync("jobs");
        await topic.AppendAsync(TopicStoreTests.Messages("old-0", "old-1", "old-2"));
        _time.Advance(TimeSpan.FromMinutes(10));
        await topic.AppendAsync(TopicStoreTests.Messages("new-3", "new-4"));
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
        await AckAllAsync(group, 5);

        Assert.Equal(3, await topic.ResetGroupAsync("g", GroupStart.AtTime(Start.AddMinutes(5).ToUnixTimeMilliseconds()), default));
        Assert.Equal(0, await topic.ResetGroupAsync("g", GroupStart.AtTime(Start.AddMinutes(-1).ToUnixTimeMilliseconds()), default));
        Assert.Equal(5, await topic.ResetGroupAsync("g", GroupStart.AtTime(Start.AddHours(1).ToUnixTimeMilliseconds()), default));
        Assert.Equal(0, await topic.ResetGroupAsync("g", GroupStart.Earliest, default));
        Assert.Equal(5, await topic.ResetGroupAsync("g", GroupStart.Latest, default));
        Assert.Equal(3, await topic.ResetGroupAsync("g", GroupStart.AtTime(Start.AddMinutes(10).ToUnixTimeMilliseconds()), default));
        var group3 = topic.FindGroup("g")!;
        var delivered = await TopicStoreTests.FetchExactlyAsync(group3, group3.Join(10), 2);
        Assert.Equal(["new-3", "new-4"], delivered.Select(d => Encoding.UTF8.GetString(d.Message.Payload.Span)));
    }

    [Fact]
    public async Task Reset_refuses_unknown_groups_and_offsets_outside_the_topic()
    {
        await using var store = await OpenAsync();
        var topic = await store.GetTopicAsync("jobs");
        await topic.AppendAsync(TopicStoreTests.Messages("a", "b"));
        await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);

        Assert.Equal(BrokerErrorCode.GroupNotFound, (await Assert.ThrowsAsync<BrokerException>(() => topic.ResetGroupAsync("nope", GroupStart.Earliest, default))).Code);
        Assert.Equal(BrokerErrorCode.OffsetOutOfRange, (await Assert.ThrowsAsync<BrokerException>(() => topic.ResetGroupAsync("g", GroupStart.AtOffset(3), default))).Code);
        Assert.Equal(BrokerErrorCode.InvalidName, (await Assert.ThrowsAsync<BrokerException>(() => topic.ResetGroupAsync("__redrive", GroupStart.Earliest, default))).Code);
        Assert.Equal(2, await topic.ResetGroupAsync("g", GroupStart.AtOffset(2), default));
    }

    [Fact]
    public async Task A_reset_voids_tokens_and_delays_and_refuses_the_old_groups_late_acks_for_good()
    {
        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(TopicStoreTests.Messages("a", "b", "c", "d"));
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var member = group.Join(10);
            var held = await TopicStoreTests.FetchExactlyAsync(group, member, 4);
            await group.SettleAsync(new SettleAction.Retry(TimeSpan.FromHours(1), null), [Ref(held[0])]);

            await topic.ResetGroupAsync("g", GroupStart.Earliest, default);

            // The old object's consumers are told to go, and its late ack is refused, not written.
            Assert.True(group.Closing.IsCancellationRequested);
            Assert.Equal(BrokerErrorCode.GroupReset, group.Retirement?.Code);
            var late = await Assert.ThrowsAsync<BrokerException>(() => group.SettleAsync(new SettleAction.Ack(), [.. held.Skip(1).Select(Ref)]));
            Assert.Equal(BrokerErrorCode.GroupReset, late.Code);
            // The new group knows none of the old tokens, and the delayed message is there at once, as a first attempt.
            var fresh = topic.FindGroup("g")!;
            var refused = await fresh.SettleAsync(new SettleAction.Ack(), [Ref(held[1])]);
            Assert.Equal(BrokerErrorCode.UnknownDelivery, Assert.Single(refused.Failures).Code);
            var again = await TopicStoreTests.FetchExactlyAsync(fresh, fresh.Join(10), 4);
            Assert.Equal([0L, 1, 2, 3], again.Select(d => d.Offset));
            Assert.All(again, d => Assert.Equal(1, d.Attempt));
            await store.CrashAsync();
        }

        await using (var store = await OpenAsync())
        {
            // Had the late ack been written after the reset's snapshot, recovery would have moved the floor past 0.
            var group = (await store.GetTopicAsync("jobs")).FindGroup("g")!;
            Assert.Equal(0, group.Floor().Floor);
        }
    }

    [Fact]
    public async Task A_deleted_group_stays_deleted_after_a_crash_and_no_longer_pins_the_log()
    {
        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(Kilobytes(3000));
            var (fast, _) = await topic.GetOrCreateGroupAsync("fast", GroupStart.Earliest, null, default);
            await topic.GetOrCreateGroupAsync("stale", GroupStart.Earliest, null, default);
            await AckAllAsync(fast, 3000);
            await store.MaintainAllAsync(default);
            Assert.Equal(0, (await topic.DescribeAsync(default)).FirstOffset);

            await topic.DeleteGroupAsync("stale", force: false, default);
            await store.MaintainAllAsync(default);

            var info = await topic.DescribeAsync(default);
            Assert.Equal(["fast"], info.Groups.Select(g => g.Name));
            Assert.True(info.FirstOffset > 0, "deleting the lagging group freed no segment");
            await store.CrashAsync();
        }

        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Null(topic.FindGroup("stale"));
            Assert.NotNull(topic.FindGroup("fast"));
            Assert.Equal(BrokerErrorCode.GroupNotFound, (await Assert.ThrowsAsync<BrokerException>(() => topic.DeleteGroupAsync("stale", false, default))).Code);
        }
    }

    [Fact]
    public async Task Delete_refuses_a_group_with_consumers_unless_forced_and_a_new_group_of_that_name_starts_fresh()
    {
        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(TopicStoreTests.Messages("a", "b", "c"));
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var member = group.Join(10);
            var held = await TopicStoreTests.FetchExactlyAsync(group, member, 3);

            var inUse = await Assert.ThrowsAsync<BrokerException>(() => topic.DeleteGroupAsync("g", force: false, default));
            Assert.Equal(BrokerErrorCode.GroupInUse, inUse.Code);
            Assert.Same(group, topic.FindGroup("g"));

            await topic.DeleteGroupAsync("g", force: true, default);
            Assert.Equal(BrokerErrorCode.GroupNotFound, group.Retirement?.Code);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => group.FetchAsync(member, 10, default));
            await Assert.ThrowsAsync<BrokerException>(() => group.SettleAsync(new SettleAction.Ack(), [.. held.Select(Ref)]));
            group.Leave(member);

            var (recreated, created) = await topic.GetOrCreateGroupAsync("g", GroupStart.Latest, null, default);
            Assert.True(created);
            Assert.Equal(3, recreated.Floor().Floor);
            await store.CrashAsync();
        }

        await using (var store = await OpenAsync())
        {
            // The old incarnation's records (its deliveries' counts, the refused ack) are not applied to the new group.
            var group = (await store.GetTopicAsync("jobs")).FindGroup("g")!;
            Assert.Equal(3, group.Floor().Floor);
        }
    }

    [Fact]
    public async Task Purge_drops_every_message_moves_every_group_to_the_end_and_survives_a_crash()
    {
        await using (var store = await OpenAsync())
        {
            await store.CreateTopicAsync("bare", ifNotExists: false, default);
            var topic = await store.GetTopicAsync("jobs");
            var bare = await store.GetTopicAsync("bare");
            await topic.AppendAsync(TopicStoreTests.Messages([.. Enumerable.Range(0, 10).Select(i => $"m{i}")]));
            await bare.AppendAsync(TopicStoreTests.Messages("x", "y"));
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            await AckAllAsync(group, 2);

            Assert.Equal(new PurgeResult(10, 10), await topic.PurgeAsync(default));
            Assert.Equal(new PurgeResult(2, 2), await bare.PurgeAsync(default));

            var info = await topic.DescribeAsync(default);
            Assert.Equal((10L, 10L, 0L), (info.FirstOffset, info.NextOffset, info.Groups.Single().Backlog));
            await store.CrashAsync();
        }

        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            var info = await topic.DescribeAsync(default);
            Assert.Equal((10L, 10L, 10L), (info.FirstOffset, info.NextOffset, info.Groups.Single().AckFloor));
            Assert.Equal(2, (await (await store.GetTopicAsync("bare")).DescribeAsync(default)).FirstOffset);
            // A group created after the purge at EARLIEST sees nothing purged; new messages flow to both.
            var (late, _) = await topic.GetOrCreateGroupAsync("late", GroupStart.Earliest, null, default);
            await topic.AppendAsync(TopicStoreTests.Messages("after"));
            var group = topic.FindGroup("g")!;
            Assert.Equal(10, Assert.Single(await TopicStoreTests.FetchExactlyAsync(group, group.Join(10), 1)).Offset);
            Assert.Equal(10, Assert.Single(await TopicStoreTests.FetchExactlyAsync(late, late.Join(10), 1)).Offset);
        }
    }

    [Fact]
    public async Task Ack_frames_racing_a_reset_are_either_before_it_or_refused_never_replayed_after_it()
    {
        int refused = 0;
        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(TopicStoreTests.Messages([.. Enumerable.Range(0, 2000).Select(i => $"m{i}")]));
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var held = await TopicStoreTests.FetchExactlyAsync(group, group.Join(2000), 2000);
            var firstAcks = held.Take(500).Select(Ref).ToList();
            Assert.Equal(500, (await group.SettleAsync(new SettleAction.Ack(), firstAcks)).Accepted);
            // Frames of ten acks, one after another as a consumer sends them, while the reset happens.
            var acking = Task.Run(async () =>
            {
                foreach (var frame in held.Skip(500).Chunk(10))
                {
                    try
                    {
                        await group.SettleAsync(new SettleAction.Ack(), [.. frame.Select(Ref)]);
                    }
                    catch (BrokerException error) when (error.Code == BrokerErrorCode.GroupReset)
                    {
                        refused++;
                    }
                }
            });
            while (group.Floor().Floor < 700)
                await Task.Yield();
            Assert.Equal(100, await topic.ResetGroupAsync("g", GroupStart.AtOffset(100), default));
            await acking;
            await store.MaintainAllAsync(default);
            await store.CrashAsync();
        }

        await using (var store = await OpenAsync())
        {
            var group = (await store.GetTopicAsync("jobs")).FindGroup("g")!;
            Assert.Equal(100, group.Floor().Floor);
            Assert.Equal(1900, (await (await store.GetTopicAsync("jobs")).DescribeAsync(default)).Groups.Single().Backlog);
        }
        Assert.True(refused > 0, "no ack frame came after the reset");
    }

    [Fact]
    public async Task A_checkpoint_after_a_delete_and_a_reset_keeps_both()
    {
        await using (var store = await TopicStore.OpenAsync(new StorageOptions
        {
            DataDirectory = _data.Path, GroupStateCheckpointBytes = 1, MaintenanceInterval = TimeSpan.FromDays(1),
        }, _time))
        {
            await store.CreateTopicAsync("jobs", ifNotExists: false, default);
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync(TopicStoreTests.Messages("a", "b", "c"));
            var (reset, _) = await topic.GetOrCreateGroupAsync("reset", GroupStart.Earliest, null, default);
            await topic.GetOrCreateGroupAsync("gone", GroupStart.Earliest, null, default);
            await AckAllAsync(reset, 3);
            await topic.ResetGroupAsync("reset", GroupStart.AtOffset(1), default);
            await topic.DeleteGroupAsync("gone", force: false, default);
            long before = topic.GroupStateLogBytes;
            await store.MaintainAllAsync(default);
            Assert.True(topic.GroupStateLogBytes < before, "no checkpoint ran");
            await store.CrashAsync();
        }

        await using (var store = await OpenAsync())
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Null(topic.FindGroup("gone"));
            Assert.Equal(1, topic.FindGroup("reset")!.Floor().Floor);
        }
    }

    private async Task<TopicStore> OpenAsync()
    {
        var store = await TopicStore.OpenAsync(Options, _time);
        await store.CreateTopicAsync("jobs", ifNotExists: true, default);
        return store;
    }

    internal static async Task AckAllAsync(ConsumerGroup group, int count)
    {
        var member = group.Join(count);
        var delivered = await TopicStoreTests.FetchExactlyAsync(group, member, count);
        var result = await group.SettleAsync(new SettleAction.Ack(), [.. delivered.Select(Ref)]);
        Assert.Equal(count, result.Accepted);
        group.Leave(member);
    }

    internal static List<AppendMessage> Kilobytes(int count) =>
        [.. Enumerable.Range(0, count).Select(_ => AppendMessage.FromPayload(new byte[1000]))];

    private static DeliveryRef Ref(GroupDelivery delivery) => new(delivery.Offset, delivery.Token);
}
