using Broker.Storage.Logs;

namespace Broker.Storage.Groups;

/// <summary>
/// The durable state of every consumer group of one topic: a FasterLog of <see cref="GroupRecord"/>s, replayed on
/// open. A group's creation and each ack frame is one record; a record is durable once the task returned by
/// <see cref="AppendAsync"/> completes, and only then is the ack confirmed to the consumer. A checkpoint writes one
/// snapshot per group and truncates the log before it, so the log stays small however many acks it saw.
/// </summary>
internal sealed class GroupStateStore : IAsyncDisposable
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

    /// <summary>Bytes the log spans on disk.</summary>
    public long LogBytes => _log.TailAddress - _log.BeginAddress;

    /// <summary>Cancelled when a device error has put the log in its failed state.</summary>
    public CancellationToken Failed => _log.Failed;

    /// <summary>True once a device error has put the log in its failed state.</summary>
    public bool HasFailed => _log.HasFailed;

    /// <summary>Why the log failed, in the words callers get (null while it has not failed).</summary>
    public Errors.BrokerException? Failure => _log.Failure;

    public static async Task<(GroupStateStore Store, IReadOnlyDictionary<string, RecoveredGroup> Groups)> OpenAsync(
        string directory, LogGeometry geometry, StoreDisk disk, CancellationToken cancellationToken)
    {
        var log = DurableLog.Open(directory, geometry, disk);
        try
        {
            var groups = await ReplayAsync(log, directory, cancellationToken).ConfigureAwait(false);
            return (new GroupStateStore(log), groups);
        }
        catch
        {
            await log.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<Dictionary<string, RecoveredGroup>> ReplayAsync(DurableLog log, string directory, CancellationToken cancellationToken)
    {
        var groups = new Dictionary<string, RecoveredGroup>(StringComparer.Ordinal);
        await foreach (var (entry, length, _) in log.ReadRangeAsync(log.BeginAddress, log.Durable.Address, cancellationToken).ConfigureAwait(false))
        {
            if (!GroupRecord.TryParse(entry.AsSpan(0, length), out var record))
                throw new InvalidDataException($"unreadable group-state record in {directory}");
            if (record.Kind == GroupRecordKind.Snapshot)
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
        return groups;
    }

    /// <summary>Appends a record; the task completes once it is durable.</summary>
    public Task AppendAsync(GroupRecord record)
    {
        long end = _log.Append(record, static (GroupRecord r, ref AppendScope scope) =>
        {
            scope.Enqueue(r);
            return scope.TailAddress;
        });
        return _log.WaitForDurableAsync(end);
    }

    /// <summary>
    /// Appends a record without waiting for it: it becomes durable with the next commit, which is asked for now when
    /// <paramref name="commitSoon"/> is set (else it rides along with another record's).
    /// </summary>
    public void AppendWithNextCommit(GroupRecord record, bool commitSoon = false) =>
        _log.Append(record, static (GroupRecord r, ref AppendScope scope) =>
        {
            scope.Enqueue(r);
            return 0;
        }, requestCommit: commitSoon);

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

    public ValueTask DisposeAsync() => _log.DisposeAsync();
}
