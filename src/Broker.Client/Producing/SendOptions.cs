namespace Broker.Client;

/// <summary>What a message may carry besides its value: a key, headers, and a scheduled delivery time.</summary>
public sealed record SendOptions
{
    /// <summary>An optional key (a job id, for one), sent as UTF-8.</summary>
    public string? Key { get; init; }

    /// <summary>Optional string headers.</summary>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }

    /// <summary>Deliver no earlier than this long after the broker receives it (Celery's countdown). Exclusive with <see cref="DeliverAt"/>.</summary>
    public TimeSpan? Delay { get; init; }

    /// <summary>Deliver no earlier than this time, by the broker's clock (Celery's eta). Exclusive with <see cref="Delay"/>.</summary>
    public DateTimeOffset? DeliverAt { get; init; }

    /// <summary>
    /// Deduplication: the message's own id (1 to 128 UTF-8 bytes). A send with the id of a message sent to the topic
    /// within the broker's deduplication window (5 minutes by default) stores nothing; its task completes with the first
    /// one's offset and <see cref="PublishedMessage.Duplicate"/> set. Also makes the producer's retries exactly-once.
    /// </summary>
    public string? MessageId { get; init; }

    /// <summary>0 (lowest, the default) to 255: groups with priority levels hand out higher priorities first.</summary>
    public int Priority { get; init; }
}
