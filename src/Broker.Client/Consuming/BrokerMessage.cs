using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Broker.Client;

/// <summary>
/// A message a <see cref="BrokerConsumer"/> handed to the application. Settle it once: <see cref="AckAsync"/> when the
/// work is done, <see cref="NackAsync"/> when it failed, <see cref="DeadLetterAsync"/> when it never can succeed,
/// <see cref="ReleaseAsync"/> when it was never started. Until then its lease is extended automatically.
/// </summary>
public sealed class BrokerMessage
{
    private readonly BrokerConsumer _consumer;
    private int _settled;

    internal BrokerMessage(BrokerConsumer consumer, BrokerSubscription subscription, ReceivedMessage delivery)
    {
        _consumer = consumer;
        Subscription = subscription;
        Delivery = delivery;
    }

    internal BrokerSubscription Subscription { get; }

    internal ReceivedMessage Delivery { get; }

    /// <summary>The topic it was read from.</summary>
    public string Topic => Delivery.Topic;

    /// <summary>Its offset in the topic: with <see cref="Topic"/>, a unique id for idempotent work.</summary>
    public long Offset => Delivery.Offset;

    /// <summary>The key, empty when it has none.</summary>
    public ReadOnlyMemory<byte> Key => Delivery.Key;

    /// <summary>The headers (a dead letter carries the broker's <c>broker-dlq-*</c> headers).</summary>
    public IReadOnlyDictionary<string, string> Headers => Delivery.Headers;

    /// <summary>The raw payload.</summary>
    public ReadOnlyMemory<byte> Payload => Delivery.Payload;

    /// <summary>The payload as UTF-8 text.</summary>
    public string PayloadText => Encoding.UTF8.GetString(Delivery.Payload.Span);

    /// <summary>When the broker appended it.</summary>
    public DateTimeOffset PublishTime => Delivery.PublishTime;

    /// <summary>For a message published with a delay or delivery time: when it was due, and the offset its publish got.</summary>
    public ScheduledInfo? Scheduled => Delivery.Scheduled;

    /// <summary>1 on the first delivery to this group, 2 on the first redelivery, and so on.</summary>
    public int Attempt => Delivery.Attempt;

    /// <summary>True once it was acked, nacked, dead-lettered or released (by the application or by the consumer).</summary>
    public bool IsSettled => Volatile.Read(ref _settled) != 0;

    /// <summary>The payload deserialized from JSON with the consumer's serializer options.</summary>
    public T? Value<T>() => JsonSerializer.Deserialize<T>(Delivery.Payload.Span, _consumer.Json);

    /// <summary>The payload deserialized from JSON with a source-generated <paramref name="typeInfo"/>.</summary>
    public T? Value<T>(JsonTypeInfo<T> typeInfo) => JsonSerializer.Deserialize(Delivery.Payload.Span, typeInfo);

    /// <summary>Done: returns once the ack is durable. See <see cref="BrokerConsumer.AckAsync(IReadOnlyCollection{BrokerMessage}, CancellationToken)"/> for failures.</summary>
    public Task AckAsync(CancellationToken cancellationToken = default) => _consumer.SettleOneAsync(this, SettleKind.Ack, default, null, cancellationToken);

    /// <summary>Failed: visible again after <paramref name="delay"/> with <paramref name="reason"/> as its last error; a dead letter after the group's max deliveries.</summary>
    public Task NackAsync(TimeSpan delay = default, string? reason = null, CancellationToken cancellationToken = default) =>
        _consumer.SettleOneAsync(this, SettleKind.Nack, delay, reason, cancellationToken);

    /// <summary>Can never succeed: to the dead-letter topic now, with <paramref name="reason"/>.</summary>
    public Task DeadLetterAsync(string reason, CancellationToken cancellationToken = default) =>
        _consumer.SettleOneAsync(this, SettleKind.DeadLetter, default, reason, cancellationToken);

    /// <summary>Never started: visible again at once, not counted as a failed delivery.</summary>
    public Task ReleaseAsync(CancellationToken cancellationToken = default) =>
        _consumer.SettleOneAsync(this, SettleKind.Release, default, null, cancellationToken);

    /// <summary>Marks it settled; false when it already was (each message is settled once).</summary>
    internal bool TryMarkSettled() => Interlocked.Exchange(ref _settled, 1) == 0;

    /// <inheritdoc />
    public override string ToString() => $"{Topic}@{Offset} (attempt {Attempt})";
}

internal enum SettleKind
{
    Ack,
    Nack,
    DeadLetter,
    Release,
}

/// <summary>
/// A settle (usually an ack) whose answer never came: the consume stream ended first (the broker restarted, the
/// connection broke). The broker may or may not have applied it, so the messages may be delivered again (to this or
/// another consumer, with a higher attempt): make the work idempotent. The SDK never resends it as if confirmed.
/// </summary>
public sealed class SettleNotConfirmedException(IReadOnlyList<BrokerMessage> messages, Exception? cause)
    : Exception($"{messages.Count} settle(s) not confirmed: the consume stream ended before the broker answered; the message(s) may be delivered again", cause)
{
    /// <summary>The messages whose settle is unconfirmed.</summary>
    public IReadOnlyList<BrokerMessage> Messages { get; } = messages;
}
