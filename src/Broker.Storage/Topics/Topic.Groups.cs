using Broker.Storage.Errors;
using Broker.Storage.Groups;

namespace Broker.Storage.Topics;

public sealed partial class Topic
{
    /// <summary>Prefix of group names the broker keeps for itself (for example the redrive reader).</summary>
    public const string ReservedGroupPrefix = "__";

    /// <summary>The group, if it exists.</summary>
    public ConsumerGroup? FindGroup(string name) => _groups.GetValueOrDefault(name);

    /// <summary>The names of the topic's groups (the broker's reserved ones included), in name order.</summary>
    internal IReadOnlyList<string> GroupNames => [.. _groups.Keys.Order(StringComparer.Ordinal)];

    /// <summary>
    /// Returns the group, creating it (durably) at <paramref name="start"/> with <paramref name="policy"/> when it
    /// does not exist. An existing group keeps its own start and policy.
    /// </summary>
    public async Task<(ConsumerGroup Group, bool Created)> GetOrCreateGroupAsync(string name, GroupStart start, GroupPolicy? policy,
        CancellationToken cancellationToken, bool internalGroup = false)
    {
        EntityName.EnsureValid(name, "group");
        if (!internalGroup && name.StartsWith(ReservedGroupPrefix, StringComparison.Ordinal))
            Throw.Broker(BrokerErrorCode.InvalidName, $"invalid group name: names starting with '{ReservedGroupPrefix}' are reserved");
        if (_stopping.IsCancellationRequested)
            Throw.Broker(BrokerErrorCode.ShuttingDown, $"topic '{Name}' is closing");
        if (_groups.TryGetValue(name, out var existing))
            return (existing, false);
        policy = (policy ?? GroupPolicy.Default).ResolvedFor(Name);
        if (policy.Validate(Name) is { } problem)
            Throw.Broker(problem.Code, problem.Message);

        await _groupCreation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_groups.TryGetValue(name, out existing))
                return (existing, false);
            var (floor, floorAddress) = await StartPositionAsync(start, cancellationToken).ConfigureAwait(false);
            if (!internalGroup && policy.DeadLettersFailures)
            {
                // The dead-letter topic exists from the start, so it can be watched before anything fails. It is
                // only created here, not opened: it costs no memory until a letter arrives or someone reads it.
                await _store.EnsureDeadLetterTopicAsync(policy.DeadLetterTopicFor(Name), cancellationToken).ConfigureAwait(false);
            }
            await _groupStore.AppendAsync(GroupRecord.Snapshot(name, floor, floorAddress, policy, [], []))
                .WaitAsync(cancellationToken).ConfigureAwait(false);
            return (AddGroup(name, policy, floor, floorAddress, [], null), true);
        }
        finally
        {
            _groupCreation.Release();
        }
    }

    private async Task<(long Floor, long FloorAddress)> StartPositionAsync(GroupStart start, CancellationToken cancellationToken)
    {
        switch (start.Kind)
        {
            case GroupStartKind.Latest:
                var durable = Log.Durable;
                return (durable.Cookie, durable.Address);
            case GroupStartKind.Offset:
                return await FindAsync(m => m.Offset >= start.Value, cancellationToken).ConfigureAwait(false);
            case GroupStartKind.Timestamp:
                return await FindAsync(m => m.AppendTimeUnixMs >= start.Value, cancellationToken).ConfigureAwait(false);
            default:
                return await FindAsync(_ => true, cancellationToken).ConfigureAwait(false);
        }
    }

    private ConsumerGroup AddGroup(string name, GroupPolicy policy, long floor, long floorAddress, IEnumerable<long> acknowledged,
        IReadOnlyDictionary<long, int>? attempts = null, IEnumerable<SettleTimer>? timers = null, (long, long)? durableFloor = null)
    {
        var state = new ConsumerGroupState(floor, floorAddress, acknowledged, FirstToken(), policy.MaxDeliveries, attempts, timers,
            _time.TimestampFrequency, policy.RetryBackoff, orderedByKey: policy.OrderedByKey, priorityLevels: policy.PriorityLevels,
            newestFirst: policy.NewestFirst);
        var group = new ConsumerGroup(this, _groupStore, name, policy, state, _time, _store.GetOrCreateDeadLetterTopicAsync, durableFloor);
        _groups[name] = group;
        return group;
    }

    // Tokens start at a random point per run, so a token kept from before a restart matches nothing now.
    private static ulong FirstToken() => (ulong)Random.Shared.NextInt64() << 1;

    /// <summary>
    /// Housekeeping, run periodically: gives back disk below the lowest durable ack floor of the topic's groups (a
    /// drained queue frees its segments), memory the in-memory entries did not use since the last run, and checkpoints
    /// the group-state log once it has grown.
    /// </summary>
    public async Task MaintainAsync()
    {
        // A failed message log has nothing to maintain: the topic is reopened (and maintained again) on its next use.
        if (_stopping.IsCancellationRequested || Log.HasFailed)
            return;
        if (!_groupStore.HasFailed)
            await ApplyRetentionAsync(_store.RetentionOf(Name)).ConfigureAwait(false);
        await TruncateBelowDurableFloorsAsync().ConfigureAwait(false);
        _deduplication.Maintain();
        _schedule.TrimUnusedMemory();
        foreach (var group in _groups.Values)
            group.TrimUnusedMemory();
        if (!_groupStore.HasFailed && _groupStore.BytesSinceCheckpoint >= _options.GroupStateCheckpointBytes)
        {
            // Each snapshot is noted as durable on the group object it was taken from: a group reset or deleted and created
            // again meanwhile is another object, whose durable floor the old snapshot must not raise.
            List<(ConsumerGroup Group, GroupRecord Snapshot)> captured = [];
            await _groupStore.CheckpointAsync(() =>
            {
                captured = [.. _groups.Values.Select(g => (g, g.Snapshot()))];
                return [.. captured.Select(c => c.Snapshot)];
            }).ConfigureAwait(false);
            foreach (var (group, snapshot) in captured)
                group.NoteDurable(snapshot);
        }
    }

    /// <summary>
    /// Truncates the message log below the lowest <em>durable</em> floor of the groups. The two logs commit
    /// independently: truncating by a floor whose acks are still in flight to the group-state log would, after a
    /// crash, leave the group's floor below the log's begin address and lose messages whose acks were never
    /// confirmed. Only whole segment files give disk back, and each truncation costs a full commit (and file
    /// deletions) on the publish path: truncate only when the floor has left the begin address's segment.
    /// </summary>
    private async Task TruncateBelowDurableFloorsAsync()
    {
        // A group being created reads the begin address for its start; truncating under it could strand it below
        // the log. Try, not wait: creation may wait for the store's admin lock, which periodic maintenance holds.
        if (!await _groupCreation.WaitAsync(0).ConfigureAwait(false))
            return;
        try
        {
            if (_groups.IsEmpty)
                return;
            int segmentBits = Layout.LogSegmentSizeBits;
            long beginSegment = Log.BeginAddress >> segmentBits;
            if (_groups.Values.Min(g => g.Floor().FloorAddress) >> segmentBits <= beginSegment)
                return;
            // With the group-state log failed no floor can become durable; truncation still may follow the durable ones.
            if (LowestDurableFloorAddress() >> segmentBits <= beginSegment && !_groupStore.HasFailed)
                await Task.WhenAll(_groups.Values.Select(g => g.PersistFloorAsync())).ConfigureAwait(false);
            // Drained segments still holding ids of the deduplication window stay for a restart's scan to find them,
            // but out of the page cache: other readers of them are rare (a group created at the earliest message,
            // retention's cut) and may read from disk, and the memory is better spent on new writes.
            long drained = LowestKeptAddress();
            long until = Math.Min(drained, _deduplication.LowestAddress(Log.Durable.Address));
            if (until >> segmentBits > beginSegment)
                Log.TruncateUntil(until);
            if (drained > until)
                Log.DropCachedBelow(drained);
        }
        finally
        {
            _groupCreation.Release();
        }
    }

    private long LowestDurableFloorAddress() => _groups.Values.Min(g => g.DurableFloor().FloorAddress);

    /// <summary>
    /// Where every truncation stops: the lowest durable ack floor of the groups, and the lowest scheduled record not yet
    /// due (it is in no group's backlog, so no floor holds it).
    /// </summary>
    private long LowestKeptAddress() => Math.Min(LowestDurableFloorAddress(), _schedule.LowestPendingAddress());

    /// <summary>Bytes of the group-state log, for tests and Describe.</summary>
    internal long GroupStateLogBytes => _groupStore.LogBytes;

    /// <summary>Where the group-state log's last commit ends (tests locate records below it).</summary>
    internal long GroupStateDurableAddress => _groupStore.DurableAddress;
}
