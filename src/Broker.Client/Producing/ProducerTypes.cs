namespace Broker.Client;

/// <summary>
/// Where a published message landed: durable at <see cref="Offset"/> of <see cref="Topic"/>. <see cref="Duplicate"/>:
/// its message id was in the topic's deduplication window, so nothing was stored and <see cref="Offset"/> is the message
/// first sent with that id.
/// </summary>
public readonly record struct PublishedMessage(string Topic, long Offset, bool Duplicate = false);

/// <summary>One message the producer could not publish, and why.</summary>
public sealed record PublishFailure(string Topic, ReadOnlyMemory<byte> Payload, Exception Error);

/// <summary>
/// Thrown by <see cref="BrokerProducer.FlushAsync"/> when messages sent since the previous flush were not
/// acknowledged by the broker; <see cref="Failures"/> lists each with its error. Nothing else was lost.
/// </summary>
public sealed class PublishFailedException(IReadOnlyList<PublishFailure> failures)
    : Exception($"{failures.Count} message(s) failed to publish; first: {failures[0].Error.Message}", failures[0].Error)
{
    /// <summary>Each message that was not acknowledged, with its error.</summary>
    public IReadOnlyList<PublishFailure> Failures { get; } = failures;
}
