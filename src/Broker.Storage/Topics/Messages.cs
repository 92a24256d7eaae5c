namespace Broker.Storage.Topics;

/// <summary>A message handed to <see cref="Topic.AppendAsync"/>: key and headers are optional, the payload opaque.</summary>
public readonly record struct AppendMessage(
    ReadOnlyMemory<byte> Key,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    ReadOnlyMemory<byte> Payload)
{
    /// <summary>A message with a payload only.</summary>
    public static AppendMessage FromPayload(ReadOnlyMemory<byte> payload) => new(default, [], payload);

    /// <summary>
    /// Deliver no earlier than this wall-clock time (Unix milliseconds); 0, or a time not after the append, delivers at
    /// once. Exclusive with <see cref="Delay"/>.
    /// </summary>
    public long DeliverAtUnixMs { get; init; }

    /// <summary>Deliver no earlier than this long after the broker appends it; zero delivers at once. Exclusive with <see cref="DeliverAtUnixMs"/>.</summary>
    public TimeSpan Delay { get; init; }

    /// <summary>
    /// The producer's id for this message (1 to 128 UTF-8 bytes), or null: a publish with the id of a message published
    /// within the topic's deduplication window stores nothing and is answered with that message's offset. Stored as the
    /// header <see cref="ReservedHeaders.MessageId"/>.
    /// </summary>
    public string? MessageId { get; init; }

    /// <summary>
    /// 0 (the default, lowest) to 255: groups with priority levels hand out higher priorities first. Stored as the header
    /// <see cref="ReservedHeaders.Priority"/> when not 0.
    /// </summary>
    public int Priority { get; init; }
}

/// <summary>A message read back from a topic's log. Its memory slices one buffer that belongs to this message.</summary>
public sealed record StoredMessage(
    long Offset,
    long PublishTimeUnixMs,
    ReadOnlyMemory<byte> Key,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    ReadOnlyMemory<byte> Payload)
{
    /// <summary>
    /// When this entry was appended to the log (what retention by age and start-by-time go by): the publish time, except
    /// for a scheduled message's due copy, appended when it became due.
    /// </summary>
    public long AppendTimeUnixMs { get; init; } = PublishTimeUnixMs;

    /// <summary>For a message published with a delivery time: that time and the offset its publish was answered with.</summary>
    public MessageSchedule? Schedule { get; init; }

    /// <summary>
    /// A scheduled record: the entry that holds a message until its time. It is never delivered itself; its due copy,
    /// appended at the end of the log at that time, is.
    /// </summary>
    public bool IsScheduledRecord => Schedule is { } schedule && schedule.RecordOffset == Offset;
}

/// <summary>
/// When a scheduled message is (or was) due, and the offset of its scheduled record: the one its publish was answered
/// with, which its due copy (delivered under an offset of its own) keeps.
/// </summary>
public sealed record MessageSchedule(long DeliverAtUnixMs, long RecordOffset);

/// <summary>
/// Where a durable batch landed: the <paramref name="Count"/> messages stored take offsets [FirstOffset, FirstOffset +
/// Count) in batch order; the messages in <see cref="Duplicates"/> (their ids were in the deduplication window) stored
/// nothing and carry the offset of the message first published with their id.
/// </summary>
public readonly record struct AppendResult(long FirstOffset, int Count)
{
    /// <summary>Batch index and original offset of each message that was a duplicate, in batch order.</summary>
    public IReadOnlyList<(int Index, long Offset)> Duplicates { get; init; } = [];

    /// <summary>The offset the message at <paramref name="index"/> of the batch was answered with.</summary>
    public long OffsetOf(int index)
    {
        int duplicatesBefore = 0;
        foreach (var (duplicateIndex, offset) in Duplicates)
        {
            if (duplicateIndex == index)
                return offset;
            if (duplicateIndex < index)
                duplicatesBefore++;
        }
        return FirstOffset + index - duplicatesBefore;
    }
}
