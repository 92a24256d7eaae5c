using Broker.Storage.Groups;

namespace Broker.Storage.Tests;

public sealed class GroupRecordTests
{
    [Fact]
    public void Offsets_are_stored_as_sorted_runs_without_duplicates()
    {
        var ranges = OffsetRange.From([9, 4, 5, 6, 6, 12, 10, 1]);
        Assert.Equal([new OffsetRange(1, 1), new OffsetRange(4, 3), new OffsetRange(9, 2), new OffsetRange(12, 1)], ranges);
        Assert.Empty(OffsetRange.From([]));
    }

    [Fact]
    public void Snapshot_and_ack_records_round_trip()
    {
        var policy = new GroupPolicy(TimeSpan.FromSeconds(45), 7, "jobs.parked");
        foreach (var record in new[]
        {
            GroupRecord.Snapshot("workers", 10, 4096, policy, [11, 12, 20], [new AttemptCount(13, 2), new AttemptCount(10, 5)]),
            GroupRecord.AttemptsChanged("workers", 10, 4096, [new AttemptCount(14, 1)]),
            GroupRecord.Acknowledged("workers", 10, 4096, [15, 14]),
            GroupRecord.Acknowledged("ü-group", 0, 64, []),
            GroupRecord.TimersChanged("workers", 10, 4096,
                [new SettleTimer(16, 2, SettleTimerKind.Delayed, 1_767_225_600_000, 0), new SettleTimer(17, 1, SettleTimerKind.Leased, 1_767_229_200_000, ulong.MaxValue),
                 SettleTimer.Cleared(18, 3)]),
            GroupRecord.Snapshot("workers", 10, 4096, policy, [], [new AttemptCount(16, 2)], [new SettleTimer(16, 2, SettleTimerKind.Delayed, 5, 0)]),
            GroupRecord.Deleted("workers"),
            GroupRecord.Snapshot("workers", 10, 4096, policy with { RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(10), 2.5, 0.2) },
                [11], [new AttemptCount(13, 2)], [new SettleTimer(13, 2, SettleTimerKind.Delayed, 5, 0)]),
            GroupRecord.Snapshot("workers", 0, 64, policy with { RetryBackoff = new RetryBackoff(TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(1), 1, 0) }, [], []),
            GroupRecord.Snapshot("workers", 0, 64, policy with { OrderedByKey = true }, [3], [], [new SettleTimer(5, 1, SettleTimerKind.Delayed, 9, 0)]),
            GroupRecord.Snapshot("workers", 0, 64, policy with { PriorityLevels = 32, OrderedByKey = true }, [], []),
            GroupRecord.Snapshot("workers", 0, 64, policy with { NewestFirst = true, Filter = new GroupFilter(["a"], []) }, [], []),
            GroupRecord.Snapshot("workers", 0, 64, policy with { Filter = new GroupFilter(["orders.*.eu", "ü.#"], [new("tier", "gold"), new("x", "")]) }, [], []),
            GroupRecord.Snapshot("workers", 0, 64, policy with
            {
                OrderedByKey = true, Filter = new GroupFilter([], [new("a", "b")]), RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(9), 3, 0.5),
            }, [7], [new AttemptCount(8, 1)]),
            GroupRecord.Snapshot("workers", 0, 64, policy with { OrderedByKey = true, RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(2)) }, [], []),
        })
        {
            var buffer = new byte[record.SerializedLength];
            record.SerializeTo(buffer);
            Assert.True(GroupRecord.TryParse(buffer, out var parsed));
            Assert.Equal(record.Kind, parsed.Kind);
            Assert.Equal(record.Group, parsed.Group);
            Assert.Equal(record.AckFloor, parsed.AckFloor);
            Assert.Equal(record.FloorAddress, parsed.FloorAddress);
            Assert.Equal(record.Policy, parsed.Policy);
            Assert.Equal(record.Offsets, parsed.Offsets);
            Assert.Equal(record.Attempts, parsed.Attempts);
            Assert.Equal(record.SettleTimers, parsed.SettleTimers);
            Assert.False(GroupRecord.TryParse(buffer.AsSpan(0, buffer.Length - 1), out _));
        }
    }

    [Fact]
    public void Version_1_records_without_timers_are_still_read()
    {
        // Written by a broker before settle timers: the same layout, ending after the attempts.
        var record = GroupRecord.AttemptsChanged("workers", 10, 4096, [new AttemptCount(14, 1)]);
        var buffer = new byte[record.SerializedLength];
        record.SerializeTo(buffer);
        var version1 = buffer.AsSpan(0, buffer.Length - 4).ToArray();
        version1[1] = 1;
        Assert.True(GroupRecord.TryParse(version1, out var parsed));
        Assert.Equal(record.Attempts, parsed.Attempts);
        Assert.Empty(parsed.SettleTimers);
        version1[1] = 9;
        Assert.False(GroupRecord.TryParse(version1, out _));
    }

    [Fact]
    public void A_snapshot_whose_stored_policy_is_out_of_range_is_refused_not_thrown()
    {
        foreach (var policy in new[]
        {
            GroupPolicy.Default with { MaxDeliveries = 5, RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2), double.NaN) },
            GroupPolicy.Default with { MaxDeliveries = 5, PriorityLevels = 33, OrderedByKey = true },
            GroupPolicy.Default with { MaxDeliveries = 5, RetryBackoff = new RetryBackoff(TimeSpan.FromMilliseconds(1), TimeSpan.MaxValue) },
        })
        {
            var record = GroupRecord.Snapshot("workers", 0, 64, policy, [], []);
            var buffer = new byte[record.SerializedLength];
            record.SerializeTo(buffer);
            Assert.False(GroupRecord.TryParse(buffer, out _));
        }
    }

    [Fact]
    public void Only_a_snapshot_with_a_retry_backoff_is_written_as_version_3()
    {
        // A log of groups without a backoff stays readable by a broker from before backoffs.
        var plain = GroupRecord.Snapshot("workers", 0, 64, GroupPolicy.Default with { MaxDeliveries = 5 }, [], []);
        var withBackoff = GroupRecord.Snapshot("workers", 0, 64,
            GroupPolicy.Default with { MaxDeliveries = 5, RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(8)) }, [], []);
        Assert.Equal([2, 3], new[] { plain, withBackoff }.Select(record =>
        {
            var buffer = new byte[record.SerializedLength];
            record.SerializeTo(buffer);
            return (int)buffer[1];
        }));
        Assert.Equal(plain.SerializedLength + 33, withBackoff.SerializedLength);
    }
}
