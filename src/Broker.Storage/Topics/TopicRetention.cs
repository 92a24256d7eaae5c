using System.Text.Json.Serialization;
using Broker.Storage.Errors;

namespace Broker.Storage.Topics;

/// <summary>
/// How much of a topic is kept regardless of its groups (docs/semantics.md, "Retention"): messages older than
/// <paramref name="MaxAgeMs"/>, and the oldest messages beyond <paramref name="MaxBytes"/> of log, are deleted by
/// maintenance, except what a group with a consumer subscribed has not acknowledged. 0 means no limit. Stored in the
/// topic's <c>topic.json</c>.
/// </summary>
public sealed record TopicRetention(long MaxAgeMs = 0, long MaxBytes = 0)
{
    /// <summary>Keep everything (the default): only the groups' acks free disk.</summary>
    public static TopicRetention Unlimited { get; } = new();

    /// <summary>True when neither limit is set.</summary>
    [JsonIgnore]
    public bool IsUnlimited => MaxAgeMs <= 0 && MaxBytes <= 0;

    /// <summary>Refuses negative limits (<see cref="BrokerErrorCode.InvalidRequest"/>).</summary>
    public void EnsureValid()
    {
        if (MaxAgeMs < 0 || MaxBytes < 0)
            Throw.Broker(BrokerErrorCode.InvalidRequest, "retention limits must not be negative (0 means no limit)");
    }
}
