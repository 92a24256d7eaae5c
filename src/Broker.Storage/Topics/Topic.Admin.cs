using Broker.Storage.Errors;
using Broker.Storage.Groups;

namespace Broker.Storage.Topics;

/// <summary>
/// Group and topic administration: reset a group, delete a group, purge the topic. Each replaces or removes groups
/// through one step (<see cref="ReplaceGroupsAsync"/>) that writes the new state durably before it answers, retires the
/// old group object so nothing it still had in flight can be written after the new state, and ends the old object's
/// consumer streams (they subscribe again and get the new state).
/// </summary>
public sealed partial class Topic
{
    /// <summary>
    /// Moves the group to <paramref name="target"/>: every message from there on is unacknowledged, every message before
    /// it acknowledged. Delivery counts, nack delays and extended leases are dropped; deliveries in flight are void (their
    /// tokens are refused) and the group's consumer streams end with <see cref="BrokerErrorCode.GroupReset"/>. Durable
    /// when it returns. Returns the group's new ack floor.
    /// </summary>
    public async Task<long> ResetGroupAsync(string name, GroupStart target, CancellationToken cancellationToken)
    {
        RequireGroup(name);
        await _groupCreation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // Under the creation lock truncation and retention wait, so the position found stays in the log.
            var group = RequireGroup(name);
            var (floor, floorAddress) = await ResetPositionAsync(target, cancellationToken).ConfigureAwait(false);
            var reason = new BrokerException(BrokerErrorCode.GroupReset,
                $"group '{name}' of topic '{Name}' was reset to offset {floor}; subscribe again");
            await ReplaceGroupsAsync([group], old => GroupRecord.Snapshot(old.Name, floor, floorAddress, old.Policy, [], []), reason)
                .ConfigureAwait(false);
            return floor;
        }
        finally
        {
            _groupCreation.Release();
        }
    }

    /// <summary>
    /// Replaces the group's delivery rules with <paramref name="policy"/> (as a whole: what it leaves unset takes the
    /// defaults) and keeps where the group is: its floor, its acknowledgements, its delivery counts and its timers.
    /// Deliveries in flight are void (their tokens are refused, except extended leases, kept as they would be across a
    /// restart) and the group's consumer streams end with <see cref="BrokerErrorCode.GroupReset"/>: they subscribe again,
    /// and what they held is delivered again with its count going on. Durable when it returns; returns the new policy.
    /// </summary>
    public Task<GroupPolicy> UpdateGroupPolicyAsync(string name, GroupPolicy policy, CancellationToken cancellationToken) =>
        UpdateGroupPolicyAsync(name, _ => policy, cancellationToken);

    /// <summary>
    /// As the other overload, with the new rules made from the group's current ones under the lock that every change of
    /// the group's rules takes, so two changes of different settings at once both hold. An exception from
    /// <paramref name="change"/> changes nothing. Rules equal to the current ones change nothing either: no stream ends.
    /// </summary>
    public async Task<GroupPolicy> UpdateGroupPolicyAsync(string name, Func<GroupPolicy, GroupPolicy> change, CancellationToken cancellationToken)
    {
        RequireGroup(name);
        await _groupCreation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var group = RequireGroup(name);
            var policy = change(group.Policy).ResolvedFor(Name);
            if (policy.Validate(Name) is { } problem)
                Throw.Broker(problem.Code, problem.Message);
            if (policy == group.Policy)
                return policy;
            if (policy.DeadLettersFailures)
                await _store.EnsureDeadLetterTopicAsync(policy.DeadLetterTopicFor(Name), cancellationToken).ConfigureAwait(false);
            var reason = new BrokerException(BrokerErrorCode.GroupReset,
                $"group '{name}' of topic '{Name}' has new delivery rules; subscribe again");
            await ReplaceGroupsAsync([group], old => old.Snapshot() with { Policy = policy }, reason).ConfigureAwait(false);
            return policy;
        }
        finally
        {
            _groupCreation.Release();
        }
    }

    /// <summary>
    /// Deletes the group durably: after a crash it does not come back, and it no longer holds the topic's log back. A
    /// group with consumers subscribed is refused (<see cref="BrokerErrorCode.GroupInUse"/>) unless
    /// <paramref name="force"/>; then their streams end with <see cref="BrokerErrorCode.GroupNotFound"/>.
    /// </summary>
    public async Task DeleteGroupAsync(string name, bool force, CancellationToken cancellationToken)
    {
        RequireGroup(name);
        await _groupCreation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var group = RequireGroup(name);
            if (!force && group.HasConsumers)
                Throw.Broker(BrokerErrorCode.GroupInUse, $"group '{name}' of topic '{Name}' has consumers subscribed; stop them first, or delete with force");
            var reason = new BrokerException(BrokerErrorCode.GroupNotFound, $"group '{name}' of topic '{Name}' was deleted");
            await ReplaceGroupsAsync([group], old => GroupRecord.Deleted(old.Name), reason).ConfigureAwait(false);
        }
        finally
        {
            _groupCreation.Release();
        }
    }

    /// <summary>
    /// Drops every message durable when it starts: every group moves durably to the end (as a reset to latest does,
    /// consumers of a group that had anything left subscribe again), then the log is truncated there and that is
    /// committed before it returns. Messages published while it runs may survive it.
    /// </summary>
    public async Task<PurgeResult> PurgeAsync(CancellationToken cancellationToken)
    {
        await _groupCreation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var end = Log.Durable;
            long first = await GetFirstOffsetAsync(cancellationToken).ConfigureAwait(false);
            var behind = _groups.Values.Where(g => g.Floor().Floor < end.Cookie).ToList();
            if (behind.Count > 0)
            {
                var reason = new BrokerException(BrokerErrorCode.GroupReset, $"topic '{Name}' was purged; subscribe again");
                await ReplaceGroupsAsync(behind, old => GroupRecord.Snapshot(old.Name, end.Cookie, end.Address, old.Policy, [], []), reason)
                    .ConfigureAwait(false);
            }
            // A group at the end only in memory (its floor moved without a record) is made durable there first.
            await Task.WhenAll(_groups.Values.Select(g => g.PersistFloorAsync())).ConfigureAwait(false);
            // Scheduled messages not yet due go too (durably, before the truncation).
            await _schedule.DropBelowAsync(end.Address).ConfigureAwait(false);
            long until = _groups.IsEmpty ? end.Address : Math.Min(end.Address, LowestKeptAddress());
            if (until > Log.BeginAddress)
                await Log.TruncateUntilAsync(until).ConfigureAwait(false);
            return new PurgeResult(Math.Max(0, end.Cookie - first), end.Cookie);
        }
        finally
        {
            _groupCreation.Release();
        }
    }

    private ConsumerGroup RequireGroup(string name)
    {
        EntityName.EnsureValid(name, "group");
        if (name.StartsWith(ReservedGroupPrefix, StringComparison.Ordinal))
            Throw.Broker(BrokerErrorCode.InvalidName, $"invalid group name: names starting with '{ReservedGroupPrefix}' are reserved");
        if (_stopping.IsCancellationRequested)
            Throw.Broker(BrokerErrorCode.ShuttingDown, $"topic '{Name}' is closing");
        if (!_groups.TryGetValue(name, out var group))
            Throw.Broker(BrokerErrorCode.GroupNotFound, $"group '{name}' of topic '{Name}' does not exist");
        return group;
    }

    /// <summary>Where a reset puts the floor; an offset outside what the topic stores is refused.</summary>
    private async Task<(long Floor, long FloorAddress)> ResetPositionAsync(GroupStart target, CancellationToken cancellationToken)
    {
        if (target.Kind != GroupStartKind.Offset)
            return await StartPositionAsync(target, cancellationToken).ConfigureAwait(false);
        var durable = Log.Durable;
        long first = await GetFirstOffsetAsync(cancellationToken).ConfigureAwait(false);
        if (target.Value < first || target.Value > durable.Cookie)
        {
            Throw.Broker(BrokerErrorCode.OffsetOutOfRange,
                $"offset {target.Value} is not stored in topic '{Name}': it holds offsets {first} to {durable.Cookie} (the next offset; it means the end)");
        }
        if (target.Value == durable.Cookie)
            return (durable.Cookie, durable.Address);
        return await FindAsync(m => m.Offset >= target.Value, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Replaces each of <paramref name="groups"/> (current groups; the caller holds the creation lock) by the record
    /// <paramref name="replacement"/> returns for it: a snapshot (the group's new state) or a deletion; null leaves that
    /// group alone. Under the group-state log's append lock, in one step: the old objects are retired (nothing they still
    /// had in flight is written after this), the table is swapped, and the records are enqueued. Then the old objects'
    /// consumer streams end with <paramref name="reason"/>, and it returns once the records are durable.
    /// </summary>
    private async Task<IReadOnlyList<ConsumerGroup>> ReplaceGroupsAsync(IReadOnlyList<ConsumerGroup> groups, Func<ConsumerGroup, GroupRecord?> replacement,
        BrokerException reason)
    {
        var replaced = new List<(ConsumerGroup Old, ConsumerGroup? New, GroupRecord Record)>();
        var durable = _groupStore.AppendExclusiveAsync(() =>
        {
            var records = new List<GroupRecord>(groups.Count);
            foreach (var old in groups)
            {
                if (!_groups.TryGetValue(old.Name, out var current) || current != old || replacement(old) is not { } record)
                    continue;
                old.RetireWrites(reason);
                ConsumerGroup? fresh = null;
                if (record.Kind == GroupRecordKind.Snapshot)
                    fresh = AddGroupFrom(record, old.DurableFloor());
                else
                    _groups.TryRemove(KeyValuePair.Create(old.Name, old));
                records.Add(record);
                replaced.Add((old, fresh, record));
            }
            return records;
        });
        var ended = Task.WhenAll(replaced.Select(r => r.Old.EndAsync()));
        try
        {
            await durable.ConfigureAwait(false);
            foreach (var (_, fresh, record) in replaced)
                fresh?.NoteDurable(record);
        }
        finally
        {
            await ended.ConfigureAwait(false);
        }
        return [.. replaced.Select(r => r.Old)];
    }

    /// <summary>
    /// A group built from its new snapshot. Until the snapshot is durable a crash would bring back the old state, so the
    /// durable floor (what truncation follows) is the lower of the old durable floor and the new one.
    /// </summary>
    private ConsumerGroup AddGroupFrom(GroupRecord snapshot, (long Floor, long FloorAddress) oldDurable)
    {
        var attempts = new Dictionary<long, int>();
        foreach (var attempt in snapshot.Attempts)
            attempts[attempt.Offset] = attempt.Attempts;
        var durableFloor = oldDurable.FloorAddress <= snapshot.FloorAddress ? oldDurable : (snapshot.AckFloor, snapshot.FloorAddress);
        return AddGroup(snapshot.Group, snapshot.Policy!, snapshot.AckFloor, snapshot.FloorAddress, snapshot.Offsets, attempts,
            snapshot.SettleTimers, durableFloor);
    }
}

/// <summary>What a purge dropped: <paramref name="Purged"/> messages, up to <paramref name="NextOffset"/>, where every group now reads.</summary>
public sealed record PurgeResult(long Purged, long NextOffset);
