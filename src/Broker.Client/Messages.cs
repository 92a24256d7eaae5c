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

    internal Protocol.V1.Message ToProto()
    {
        var message = new Protocol.V1.Message { Payload = ByteString.CopyFrom(Payload.Span), Key = ByteString.CopyFrom(Key.Span) };
        if (Headers is not null)
        {
            foreach (var header in Headers)
                message.Headers.Add(header.Key, header.Value);
        }
        return message;
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

    internal static ReceivedMessage FromProto(Protocol.V1.Delivery delivery) => new(
        delivery.Topic,
        (long)delivery.Offset,
        delivery.Key.Memory,
        delivery.Headers,
        delivery.Payload.Memory,
        DateTimeOffset.FromUnixTimeMilliseconds(delivery.PublishTimeUnixMs),
        (int)delivery.Attempt,
        delivery.Token);
}

/// <summary>Where a published batch landed: offsets [FirstOffset, FirstOffset + Count).</summary>
public readonly record struct PublishResult(long FirstOffset, int Count);

/// <summary>One refused settle item (ack, nack, extend, release) and why.</summary>
public sealed record SettleRefusal(long Offset, ulong Token, BrokerClientException Reason);

/// <summary>Answer to one settle frame: how many items took effect (acks: are durable), and which were refused.</summary>
public sealed record SettleResult(int Accepted, IReadOnlyList<SettleRefusal> Refused);
