using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Storage.Groups;

/// <summary>
/// A group's delivery rules, chosen when the group is created and stored with it.
/// </summary>
/// <param name="VisibilityTimeout">How long a delivery stays leased to its consumer without an ack (default 30 s).</param>
/// <param name="MaxDeliveries">
/// Deliveries after which a failing message goes to the dead-letter topic; 0 until <see cref="ResolvedFor"/> picks the
/// default (5, or <see cref="UnlimitedDeliveries"/> on a dead-letter topic).
/// </param>
/// <param name="DeadLetterTopic">Where dead letters go; empty means <c>&lt;topic&gt;.dlq</c>.</param>
/// <param name="RetryBackoff">
/// How long a failure that names no delay (a nack without one, an expired lease) waits before the next delivery; null:
/// no wait, the message is visible again at once.
/// </param>
/// <param name="OrderedByKey">
/// Messages with the same key go out one at a time, in publish order: the next waits until the previous one is
/// acknowledged or dead-lettered (see <see cref="KeyTurns"/>). Messages without a key are not ordered.
/// </param>
/// <param name="Filter">Which messages the group receives (routing); null: every message of the topic.</param>
/// <param name="PriorityLevels">
/// 2 to 32: the group hands out ready messages by their priority, highest first (a message's priority above the top
/// level counts as the top level), with the anti-starvation rule of <see cref="ReadyMessages"/>; 0: in log order.
/// </param>
/// <param name="NewestFirst">The group hands out the newest ready message first (LIFO), as collector queues may want.</param>
public sealed record GroupPolicy(TimeSpan VisibilityTimeout, int MaxDeliveries, string DeadLetterTopic, RetryBackoff? RetryBackoff = null,
    bool OrderedByKey = false, GroupFilter? Filter = null, int PriorityLevels = 0, bool NewestFirst = false)
{
    /// <summary>Deliveries after which a failing message is dead-lettered, unless the group says otherwise.</summary>
    public const int DefaultMaxDeliveries = 5;

    /// <summary>No limit: a failing message is delivered again until it is acknowledged (or dead-lettered by a nack).</summary>
    public const int UnlimitedDeliveries = int.MaxValue;

    /// <summary>30 s visibility timeout, the default max deliveries for the topic, dead letters to <c>&lt;topic&gt;.dlq</c>.</summary>
    public static GroupPolicy Default { get; } = new(TimeSpan.FromSeconds(30), 0, "");

    /// <summary>Longest visibility timeout or extension accepted: 12 hours, as in SQS.</summary>
    public static readonly TimeSpan MaxVisibilityTimeout = TimeSpan.FromHours(12);

    /// <summary>The dead-letter topic of a group of <paramref name="topic"/>.</summary>
    public string DeadLetterTopicFor(string topic) => DeadLetterTopic.Length > 0 ? DeadLetterTopic : topic + EntityName.DeadLetterSuffix;

    /// <summary>Whether failing deliveries end in the dead-letter topic (so it is created with the group).</summary>
    public bool DeadLettersFailures => MaxDeliveries != UnlimitedDeliveries;

    /// <summary>
    /// The policy with the default max deliveries filled in. A dead-letter topic (a name ending ".dlq") is the end of the
    /// line: its groups, unless told a limit or a dead-letter topic, deliver a failing message until it is acknowledged,
    /// instead of dead-lettering dead letters into "&lt;topic&gt;.dlq.dlq" and so on.
    /// </summary>
    public GroupPolicy ResolvedFor(string topic)
    {
        if (MaxDeliveries != 0)
            return this;
        bool endOfLine = DeadLetterTopic.Length == 0 && topic.EndsWith(EntityName.DeadLetterSuffix, StringComparison.Ordinal);
        return this with { MaxDeliveries = endOfLine ? UnlimitedDeliveries : DefaultMaxDeliveries };
    }

    /// <summary>Null when the policy suits a group of <paramref name="topic"/>, else the error code and the reason.</summary>
    public (BrokerErrorCode Code, string Message)? Validate(string topic)
    {
        if (VisibilityTimeout < TimeSpan.FromMilliseconds(1) || VisibilityTimeout > MaxVisibilityTimeout)
            return (BrokerErrorCode.InvalidRequest, "visibility timeout must be between 1 ms and 12 hours");
        if (MaxDeliveries is (< 1 or > 1000) and not UnlimitedDeliveries)
            return (BrokerErrorCode.InvalidRequest, "max deliveries must be between 1 and 1000");
        if (RetryBackoff?.Problem() is { } backoffProblem)
            return (BrokerErrorCode.InvalidRequest, backoffProblem);
        if (Filter?.Problem() is { } filterProblem)
            return (BrokerErrorCode.InvalidRequest, filterProblem);
        if (PriorityLevels is 1 or < 0 or > ReadyMessages.MaxLevels)
            return (BrokerErrorCode.InvalidRequest, $"priority levels must be 0 (none) or 2 to {ReadyMessages.MaxLevels}");
        if (PriorityLevels > 1 && NewestFirst)
            return (BrokerErrorCode.InvalidRequest, "a group hands out by priority or newest first, not both");
        if (DeadLetterTopic.Length > 0 && EntityName.Validate(DeadLetterTopic) is { } problem)
            return (BrokerErrorCode.InvalidName, $"invalid dead-letter topic name: {problem}");
        string deadLetters = DeadLetterTopicFor(topic);
        if (deadLetters == topic)
            return (BrokerErrorCode.InvalidRequest, $"a group's dead-letter topic must not be its own topic '{topic}': its dead letters would come back to every group");
        if (EntityName.Validate(deadLetters, EntityName.MaxDeadLetterLength) is { } defaultProblem)
            return (BrokerErrorCode.InvalidName, $"the dead-letter topic name '{deadLetters}' is invalid ({defaultProblem}); set one explicitly");
        return null;
    }
}
