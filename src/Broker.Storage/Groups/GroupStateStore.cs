using Broker.Storage.Logs;

namespace Broker.Storage.Groups;

/// <summary>
/// The durable state of every consumer group of one topic: a FasterLog of <see cref="GroupRecord"/>s, replayed
/// on open. A group's creation and each batch of acks is one record; a record is durable once the task returned
/// by <see cref="AppendAsync"/> completes, and only then is the ack confirmed to the consumer.
/// </summary>
internal sealed class GroupStateStore : IAsyncDisposable
{
    private readonly DurableLog _log;

    private GroupStateStore(DurableLog log) => _log = log;

    public static async Task<(GroupStateStore Store, IReadOnlyDictionary<string, RecoveredGroup> Groups)> OpenAsync(
        string directory, LogGeometry geometry, CancellationToken cancellationToken)
    {
        var log = DurableLog.Open(directory, geometry);
        var groups = new Dictionary<string, RecoveredGroup>(StringComparer.Ordinal);
        long end = log.Durable.Address;
        using (var iterator = log.Scan(log.BeginAddress))
        {
            while (iterator.NextAddress < end)
            {
                if (!iterator.GetNext(out byte[] entry, out int length, out _))
                {
                    await iterator.WaitAsync(cancellationToken).ConfigureAwait(false);
                    continue;
                }
                if (!GroupRecord.TryParse(entry.AsSpan(0, length), out var record))
                    throw new InvalidDataException($"unreadable group-state record in {directory}");
                if (record.Kind == GroupRecordKind.Created)
                    groups[record.Group] = new RecoveredGroup(record.Group, record.AckFloor, record.FloorAddress);
                else if (groups.TryGetValue(record.Group, out var group))
                    group.Apply(record);
            }
        }
        return (new GroupStateStore(log), groups);
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

    public ValueTask DisposeAsync() => _log.DisposeAsync();
}
