using Broker.Storage.Errors;
using Broker.Storage.Logs;
using Broker.Storage.Topics;

namespace Broker.Storage.Groups;

/// <summary>Where a new group starts reading.</summary>
public enum GroupStartKind
{
    /// <summary>The oldest message still in the topic.</summary>
    Earliest,
    /// <summary>Only messages published after the group is created.</summary>
    Latest,
    /// <summary>A given offset (clamped to what the topic holds).</summary>
    Offset,
    /// <summary>The first message published at or after a given time (Unix milliseconds).</summary>
    Timestamp,
}

/// <summary>A start position: a kind and, for <see cref="GroupStartKind.Offset"/> and <see cref="GroupStartKind.Timestamp"/>, its value.</summary>
public readonly record struct GroupStart(GroupStartKind Kind, long Value = 0)
{
    public static GroupStart Earliest => new(GroupStartKind.Earliest);
    public static GroupStart Latest => new(GroupStartKind.Latest);
    public static GroupStart AtOffset(long offset) => new(GroupStartKind.Offset, offset);
    public static GroupStart AtTime(long unixMs) => new(GroupStartKind.Timestamp, unixMs);
}

/// <summary>A message handed to one consumer of a group: settle it with <see cref="Offset"/> and <see cref="Token"/>.</summary>
public sealed record GroupDelivery(StoredMessage Message, int Attempt, ulong Token)
{
    /// <summary>The message's offset in the topic.</summary>
    public long Offset => Message.Offset;
}

/// <summary>
/// The deliveries of one fetch. Their messages may live in pooled memory (see <see cref="ReadBufferLease"/>): call
/// <see cref="ReleaseBuffers"/> once nothing reads them any more, for a consumer stream once they are written to it.
/// After that their keys, headers' bytes and payloads belong to other deliveries. A batch never released leaves its
/// memory to the garbage collector.
/// </summary>
public sealed class DeliveryBatch : IReadOnlyList<GroupDelivery>
{
    /// <summary>A batch of nothing.</summary>
    public static readonly DeliveryBatch Empty = new([], null);

    private readonly IReadOnlyList<GroupDelivery> _deliveries;
    private readonly ReadBufferLease? _buffers;

    internal DeliveryBatch(IReadOnlyList<GroupDelivery> deliveries, ReadBufferLease? buffers)
    {
        _deliveries = deliveries;
        _buffers = buffers;
    }

    public GroupDelivery this[int index] => _deliveries[index];

    public int Count => _deliveries.Count;

    /// <summary>Returns the batch's pooled memory; only the first call does anything.</summary>
    public void ReleaseBuffers() => _buffers?.Release();

    public IEnumerator<GroupDelivery> GetEnumerator() => _deliveries.GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>A reference to one delivery, as a consumer sends it back.</summary>
public readonly record struct DeliveryRef(long Offset, ulong Token);

/// <summary>What to do with the deliveries of one settle request.</summary>
public abstract record SettleAction
{
    /// <summary>Done: the message never comes back to this group. Confirmed once durable.</summary>
    public sealed record Ack : SettleAction;

    /// <summary>Failed: visible again after <paramref name="Delay"/> (now when zero), or a dead letter when out of deliveries.</summary>
    public sealed record Retry(TimeSpan Delay, string? LastError) : SettleAction;

    /// <summary>Failed for good: to the dead-letter topic now, with a reason.</summary>
    public sealed record DeadLetter(string Reason, string? LastError) : SettleAction;

    /// <summary>Still working: the lease runs <paramref name="By"/> from now (the consumer's visibility timeout when null).</summary>
    public sealed record Extend(TimeSpan? By) : SettleAction;

    /// <summary>Never started: visible again at once, and this delivery does not count.</summary>
    public sealed record Release : SettleAction;
}

/// <summary>One refused item of a settle request, with its reason.</summary>
public readonly record struct SettleFailure(DeliveryRef Delivery, BrokerErrorCode Code, string Message);

/// <summary>Answer to a settle request: how many items took effect, and which were refused.</summary>
public sealed record SettleResult(int Accepted, IReadOnlyList<SettleFailure> Failures);

/// <summary>Point-in-time numbers of one group, for Describe. Totals count since the broker started.</summary>
public sealed record GroupInfo(
    string Name,
    GroupPolicy Policy,
    long AckFloor,
    long InFlight,
    long Backlog,
    int Consumers,
    long Delayed,
    long AcknowledgedTotal,
    long RedeliveredTotal,
    long DeadLetteredTotal,
    long? OldestUnackedPublishUnixMs,
    long DeliveredTotal = 0,
    long NackedTotal = 0,
    long LeasesExpiredTotal = 0);

/// <summary>
/// One consumer's membership in a group. The group counts what the consumer holds unsettled; the consumer asks for
/// at most <see cref="MaxInFlight"/> minus that, and waits on <see cref="CreditReturned"/> when it holds its maximum.
/// </summary>
public sealed class GroupMember
{
    internal GroupMember(int id, int maxInFlight, TimeSpan visibilityTimeout)
    {
        Id = id;
        MaxInFlight = maxInFlight;
        VisibilityTimeout = visibilityTimeout;
    }

    internal int Id { get; }

    /// <summary>Most deliveries this consumer holds unsettled.</summary>
    public int MaxInFlight { get; }

    /// <summary>How long each delivery to this consumer is leased.</summary>
    public TimeSpan VisibilityTimeout { get; }

    /// <summary>Set whenever an ack, a nack, a release or an expiry lowers what this consumer holds.</summary>
    public AsyncSignal CreditReturned { get; } = new();
}
