using System.Text;
using Google.Protobuf;

namespace Broker.Client;

/// <summary>A message to publish: an opaque payload, an optional key and optional string headers.</summary>
public sealed record OutgoingMessage(ReadOnlyMemory<byte> Payload, ReadOnlyMemory<byte> Key = default,
    IReadOnlyDictionary<string, string>? Headers = null)
{
    /// <summary>A message whose payload is the UTF-8 bytes of <paramref name="text"/>.</summary>
    public static OutgoingMessage FromText(string text, IReadOnlyDictionary<string, string>? headers = null) =>
        new(Encoding.UTF8.GetBytes(text), default, headers);

    /// <summary>
    /// Scheduled delivery: no earlier than this long after the broker receives the publish. Durable when the publish is
    /// confirmed; every group receives it at that time. Exclusive with <see cref="DeliverAt"/>.
    /// </summary>
    public TimeSpan? Delay { get; init; }

    /// <summary>Scheduled delivery at a wall-clock time (the broker's clock); see <see cref="Delay"/>, with which it is exclusive.</summary>
    public DateTimeOffset? DeliverAt { get; init; }

    /// <summary>
    /// Deduplication: the message's own id (1 to 128 UTF-8 bytes). A publish with the id of a message published to the
    /// topic within the broker's deduplication window stores nothing and is answered with that message's offset (see
    /// <see cref="PublishResult.Duplicates"/>). Delivered as the header <c>broker-message-id</c>.
    /// </summary>
    public string? MessageId { get; init; }

    /// <summary>0 (lowest, the default) to 255: groups with priority levels hand out higher priorities first.</summary>
    public int Priority { get; init; }

    /// <summary>Only a payload and perhaps a key: nothing for the wire's other fields.</summary>
    internal bool IsPlain => Headers is null && Delay is null && DeliverAt is null && MessageId is null && Priority == 0;

    /// <summary>The wire message; <paramref name="copyBytes"/> false wraps the payload and key (for a caller that encodes it at once).</summary>
    internal Protocol.V1.Message ToProto(bool copyBytes = true)
    {
        var message = new Protocol.V1.Message
        {
            Payload = copyBytes ? ByteString.CopyFrom(Payload.Span) : UnsafeByteOperations.UnsafeWrap(Payload),
            Key = copyBytes ? ByteString.CopyFrom(Key.Span) : UnsafeByteOperations.UnsafeWrap(Key),
        };
        if (Headers is not null)
        {
            foreach (var header in Headers)
                message.Headers.Add(header.Key, header.Value);
        }
        ApplySchedule(message, Delay, DeliverAt);
        message.MessageId = MessageId ?? "";
        message.Priority = (uint)Math.Clamp(Priority, 0, int.MaxValue);
        TraceContext.Inject(message);
        return message;
    }

    /// <summary>Puts a delay or delivery time on a wire message; both at once, or a negative delay, is the caller's error.</summary>
    internal static void ApplySchedule(Protocol.V1.Message message, TimeSpan? delay, DateTimeOffset? deliverAt)
    {
        if (delay is not null && deliverAt is not null)
            throw new ArgumentException("give a delay or a delivery time, not both");
        if (delay is { } wait)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(wait, TimeSpan.Zero, "delay");
            message.DelayMs = (ulong)Math.Ceiling(wait.TotalMilliseconds);
        }
        if (deliverAt is { } at)
            message.DeliverAtUnixMs = at.ToUnixTimeMilliseconds();
    }
}

/// <summary>A delivered message. Settle it through its <see cref="BrokerSubscription"/>.</summary>
public sealed record ReceivedMessage(
    string Topic,
    long Offset,
    ReadOnlyMemory<byte> Key,
    IReadOnlyDictionary<string, string> Headers,
    ReadOnlyMemory<byte> Payload,
    DateTimeOffset PublishTime,
    int Attempt,
    ulong Token)
{
    /// <summary>The payload as UTF-8 text.</summary>
    public string PayloadText => Encoding.UTF8.GetString(Payload.Span);

    /// <summary>For a message published with a delay or delivery time: when it was due, and the offset its publish got.</summary>
    public ScheduledInfo? Scheduled { get; init; }

    /// <summary>
    /// The delivery as the application sees it. What it keeps of the wire message is only what has content: a delivery
    /// without headers shares one empty map, and <paramref name="topic"/> (the subscription's, when the delivery's is
    /// the same) stands for its parsed name, so neither lives on, one per message, while the application holds it.
    /// </summary>
    internal static ReceivedMessage FromProto(Protocol.V1.Delivery delivery, string? topic = null) => new(
        topic is not null && delivery.Topic == topic ? topic : delivery.Topic,
        (long)delivery.Offset,
        delivery.Key.Memory,
        delivery.Headers.Count == 0 ? System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty : delivery.Headers,
        delivery.Payload.Memory,
        DateTimeOffset.FromUnixTimeMilliseconds(delivery.PublishTimeUnixMs),
        (int)delivery.Attempt,
        delivery.Token)
    {
        Scheduled = delivery.Scheduled is { } scheduled
            ? new ScheduledInfo(DateTimeOffset.FromUnixTimeMilliseconds(scheduled.DeliverAtUnixMs), (long)scheduled.PublishedOffset)
            : null,
    };
}

/// <summary>
/// A scheduled message's delivery time, and the offset its publish was answered with (it is delivered under a later
/// offset of its own, where the broker appended it when it became due).
/// </summary>
public sealed record ScheduledInfo(DateTimeOffset DeliverAt, long PublishedOffset)
{
}

/// <summary>
/// Where a published batch landed: the <paramref name="Count"/> messages stored took offsets [FirstOffset, FirstOffset
/// + Count) in batch order; the messages in <see cref="Duplicates"/> stored nothing (their message id was in the
/// deduplication window) and name the offset of the message first published with their id.
/// </summary>
public readonly record struct PublishResult(long FirstOffset, int Count)
{
    /// <summary>Batch index and original offset of each duplicate, in batch order; empty without message ids.</summary>
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

    /// <summary>Whether the message at <paramref name="index"/> was a duplicate.</summary>
    public bool IsDuplicate(int index) => Duplicates.Any(d => d.Index == index);

    internal static PublishResult FromProto(Protocol.V1.PublishResponse response) => new((long)response.FirstOffset, (int)response.Count)
    {
        Duplicates = response.Duplicates.Count == 0 ? [] : [.. response.Duplicates.Select(d => ((int)d.Index, (long)d.Offset))],
    };
}

/// <summary>One refused settle item (ack, nack, extend, release) and why.</summary>
public sealed record SettleRefusal(long Offset, ulong Token, BrokerClientException Reason);

/// <summary>Answer to one settle frame: how many items took effect (acks: are durable), and which were refused.</summary>
public sealed record SettleResult(int Accepted, IReadOnlyList<SettleRefusal> Refused);
