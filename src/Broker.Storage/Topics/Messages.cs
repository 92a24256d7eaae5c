namespace Broker.Storage.Topics;

/// <summary>A message handed to <see cref="Topic.AppendAsync"/>: key and headers are optional, the payload opaque.</summary>
public readonly record struct AppendMessage(
    ReadOnlyMemory<byte> Key,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    ReadOnlyMemory<byte> Payload)
{
    /// <summary>A message with a payload only.</summary>
    public static AppendMessage FromPayload(ReadOnlyMemory<byte> payload) => new(default, [], payload);
}

/// <summary>A message read back from a topic's log. Its memory slices one buffer that belongs to this message.</summary>
public sealed record StoredMessage(
    long Offset,
    long PublishTimeUnixMs,
    ReadOnlyMemory<byte> Key,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    ReadOnlyMemory<byte> Payload);

/// <summary>Where a durable batch landed: offsets [FirstOffset, FirstOffset + Count).</summary>
public readonly record struct AppendResult(long FirstOffset, int Count);
