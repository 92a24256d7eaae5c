namespace Broker.Storage.Groups;

/// <summary>
/// A group's delivery rules, chosen when the group is created and stored with it.
/// </summary>
/// <param name="VisibilityTimeout">How long a delivery stays leased to its consumer without an ack (default 30 s).</param>
/// <param name="MaxDeliveries">Deliveries after which a failing message goes to the dead-letter topic (default 5).</param>
/// <param name="DeadLetterTopic">Where dead letters go; empty means <c>&lt;topic&gt;.dlq</c>.</param>
public sealed record GroupPolicy(TimeSpan VisibilityTimeout, int MaxDeliveries, string DeadLetterTopic)
{
    /// <summary>30 s visibility timeout, 5 deliveries, dead letters to <c>&lt;topic&gt;.dlq</c>.</summary>
    public static GroupPolicy Default { get; } = new(TimeSpan.FromSeconds(30), 5, "");

    /// <summary>Longest visibility timeout or extension accepted: 12 hours, as in SQS.</summary>
    public static readonly TimeSpan MaxVisibilityTimeout = TimeSpan.FromHours(12);

    /// <summary>The dead-letter topic of a group of <paramref name="topic"/>.</summary>
    public string DeadLetterTopicFor(string topic) => DeadLetterTopic.Length > 0 ? DeadLetterTopic : topic + ".dlq";

    /// <summary>Null when valid, else the reason.</summary>
    public string? Validate()
    {
        if (VisibilityTimeout < TimeSpan.FromMilliseconds(1) || VisibilityTimeout > MaxVisibilityTimeout)
            return "visibility timeout must be between 1 ms and 12 hours";
        if (MaxDeliveries is < 1 or > 1000)
            return "max deliveries must be between 1 and 1000";
        if (DeadLetterTopic.Length > 0 && Topics.EntityName.Validate(DeadLetterTopic) is { } problem)
            return $"dead-letter topic: {problem}";
        return null;
    }
}
