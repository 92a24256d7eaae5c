using Broker.Storage.Logs;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Groups;

/// <summary>
/// The durable state of every consumer group of one topic: a FasterLog of <see cref="GroupRecord"/>s, replayed on
/// open. A group's creation and each ack frame is one record; a record is durable once the task returned by
/// <see cref="AppendAsync"/> completes, and only then is the ack confirmed to the consumer. A checkpoint writes one
/// snapshot per group and truncates the log before it, so the log stays small however many acks it saw.
/// <para>Damage: replay stops at the first damaged record (FASTER's checksum mismatch) and uses what came before it:
/// records after it may depend on ones lost in it (a group's creation), and a floor from before is only lower, so
/// messages may be delivered again but none is skipped. The recovered state is then written as a checkpoint, which
/// truncates the damaged records away, so the next recovery reads past nothing damaged.</para>
/// </summary>
internal sealed partial class GroupStateStore : IAsyncDisposable
{
    private readonly DurableLog _log;
    private long _checkpointAddress;

    private GroupStateStore(DurableLog log)
    {
        _log = log;
        _checkpointAddress = log.BeginAddress;
    }

    /// <summary>Bytes of records written since the last checkpoint's snapshots (or since the log began).</summary>
    public long BytesSinceCheckpoint => _log.TailAddress - _checkpointAddress;

    /// <summary>Where the log's last commit ends.</summary>
    public long DurableAddress => _log.Durable.Address;

    /// <summary>Bytes the log spans on disk.</summary>
    public long LogBytes => _log.TailAddress - _log.BeginAddress;

    /// <summary>Cancelled when a device error has put the log in its failed state.</summary>
    public CancellationToken Failed => _log.Failed;

    /// <summary>True once a device error has put the log in its failed state.</summary>
    public bool HasFailed => _log.HasFailed;

    /// <summary>Why the log failed, in the words callers get (null while it has not failed).</summary>
    public Errors.BrokerException? Failure => _log.Failure;

    public static async Task<(GroupStateStore Store, IReadOnlyDictionary<string, RecoveredGroup> Groups)> OpenAsync(
        string directory, LogGeometry geometry, StoreDisk disk, string topic, ILogger logger, CancellationToken cancellationToken)
    {
        var log = DurableLog.Open(directory, geometry, disk);
        try
        {
            var (groups, damage) = await ReplayAsync(log, directory, cancellationToken).ConfigureAwait(false);
            var store = new GroupStateStore(log);
            if (damage is not null)
            {
                Events.Damaged(logger, topic, damage.FromAddress, damage.ResumeAddress, damage.FromAddress >> geometry.SegmentSizeBits,
                    damage.FromAddress & ((1L << geometry.SegmentSizeBits) - 1), damage.Reason, groups.Count);
                await store.CheckpointAsync(() => [.. groups.Values.Select(ToSnapshot)]).ConfigureAwait(false);
            }
            return (store, groups);
        }
        catch
        {
            await log.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<(Dictionary<string, RecoveredGroup>, LogDamage?)> ReplayAsync(DurableLog log, string directory,
        CancellationToken cancellationToken)
    {
        var groups = new Dictionary<string, RecoveredGroup>(StringComparer.Ordinal);
        LogDamage? damage = null;
        // The reader reports damage before it returns the first record after it: replay stops there.
        await foreach (var (entry, length, _) in log.ReadRangeAsync(log.BeginAddress, log.Durable.Address, found => damage ??= found,
            cancellationToken).ConfigureAwait(false))
        {
            if (damage is not null)
                break;
            if (!GroupRecord.TryParse(entry.AsSpan(0, length), out var record))
                throw new InvalidDataException($"unreadable group-state record in {directory}");
            if (record.Kind == GroupRecordKind.Deleted)
            {
                groups.Remove(record.Group);
            }
            else if (record.Kind == GroupRecordKind.Snapshot)
            {
                var group = new RecoveredGroup(record.Group, record.Policy!, record.AckFloor, record.FloorAddress);
                group.Apply(record);
                groups[record.Group] = group;
            }
            else if (groups.TryGetValue(record.Group, out var group))
            {
                group.Apply(record);
            }
        }
        return (groups, damage);
    }

    private static GroupRecord ToSnapshot(RecoveredGroup group) =>
        GroupRecord.Snapshot(group.Name, group.AckFloor, group.FloorAddress, group.Policy, group.AcknowledgedAboveFloor,
            [.. group.Attempts.Select(a => new AttemptCount(a.Key, a.Value))], [.. group.LiveTimers]);

    /// <summary>
    /// Appends a record of <paramref name="writer"/>'s group; the task completes once it is durable. A writer retired
    /// (its group reset or deleted) appends nothing: its task fails with the retirement's reason. The check runs under
    /// the append lock, so no record of a retired group can land after the record that replaced it.
    /// </summary>
    public Task AppendAsync(GroupRecord record, GroupWriter? writer = null)
    {
        long end = _log.Append((record, writer), static ((GroupRecord Record, GroupWriter? Writer) s, ref AppendScope scope) =>
        {
            if (s.Writer?.Retirement is not null)
                return -1;
            scope.Enqueue(s.Record);
            return scope.TailAddress;
        });
        return end < 0 ? Task.FromException(writer!.Retirement!) : _log.WaitForDurableAsync(end);
    }

    /// <summary>
    /// Appends a record without waiting for it: it becomes durable with the next commit, which is asked for now when
    /// <paramref name="commitSoon"/> is set (else it rides along with another record's). Nothing is appended for a
    /// retired <paramref name="writer"/>.
    /// </summary>
    public void AppendWithNextCommit(GroupRecord record, bool commitSoon = false, GroupWriter? writer = null) =>
        _log.Append((record, writer), static ((GroupRecord Record, GroupWriter? Writer) s, ref AppendScope scope) =>
        {
            if (s.Writer?.Retirement is null)
                scope.Enqueue(s.Record);
            return 0;
        }, requestCommit: commitSoon);

    /// <summary>
    /// Runs <paramref name="change"/> under the append lock and appends the records it returns; completes once they are
    /// durable. For changes that replace or remove a group (reset, delete, purge, retention): the change retires the old
    /// group's <see cref="GroupWriter"/> and swaps the topic's group table in the same critical section as its record
    /// is enqueued, so no record of the old group follows it, and a checkpoint (which captures the table under the same
    /// lock) sees either the old group and then the record, or only the new state. <paramref name="change"/> must not throw.
    /// </summary>
    public Task AppendExclusiveAsync(Func<IReadOnlyList<GroupRecord>> change)
    {
        long end = _log.Append(change, static (Func<IReadOnlyList<GroupRecord>> c, ref AppendScope scope) =>
        {
            foreach (var record in c())
                scope.Enqueue(record);
            return scope.TailAddress;
        });
        return _log.WaitForDurableAsync(end);
    }

    /// <summary>
    /// Writes the snapshots <paramref name="captureSnapshots"/> returns, then truncates the log before them. The
    /// capture runs under the append lock: every record appended before it was applied in memory before, so the
    /// snapshots contain it and nothing the truncation drops is lost.
    /// </summary>
    public async Task CheckpointAsync(Func<IReadOnlyList<GroupRecord>> captureSnapshots)
    {
        var (start, end) = _log.Append(captureSnapshots, static (Func<IReadOnlyList<GroupRecord>> capture, ref AppendScope scope) =>
        {
            long first = scope.TailAddress;
            foreach (var snapshot in capture())
                scope.Enqueue(snapshot);
            return (first, scope.TailAddress);
        });
        await _log.WaitForDurableAsync(end).ConfigureAwait(false);
        _log.TruncateUntil(start);
        // Count growth from after the snapshots: large snapshots alone must not trigger the next checkpoint.
        _checkpointAddress = end;
    }

    /// <summary>For crash tests: close without the final commit (see <see cref="DurableLog.AbandonOnDispose"/>).</summary>
    internal void AbandonOnDispose() => _log.AbandonOnDispose();

    public ValueTask DisposeAsync() => _log.DisposeAsync();

    private static partial class Events
    {
        [LoggerMessage(EventId = 3003, Level = LogLevel.Error,
            Message = "Topic {Topic}, group-state log: damaged records at addresses {FromAddress} to {ToAddress} (file log.{Segment} from byte {FileOffset}): {Reason}. Recovery used the records before them ({Groups} groups) and ignored everything after; acks recorded after the damage are forgotten, so those messages may be delivered again. The recovered state was checkpointed and the damaged records truncated away.")]
        public static partial void Damaged(ILogger logger, string topic, long fromAddress, long toAddress, long segment, long fileOffset, string reason, int groups);
    }
}

/// <summary>
/// The right of one incarnation of a group to append to the group-state log. A reset or a deletion retires it, under
/// the log's append lock, in the same step as it appends the record replacing the group: records the old incarnation
/// still had on their way (an ack frame, delivery counts, a dead letter's completion) are refused from then on.
/// </summary>
internal sealed class GroupWriter
{
    private volatile Errors.BrokerException? _retirement;

    /// <summary>Why the group may append no more (null while it may).</summary>
    public Errors.BrokerException? Retirement => _retirement;

    /// <summary>Call only under the group-state log's append lock (in <see cref="GroupStateStore.AppendExclusiveAsync"/>).</summary>
    public void Retire(Errors.BrokerException reason) => _retirement = reason;
}
