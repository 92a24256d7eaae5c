using Broker.Storage.Errors;

namespace Broker.Storage.Topics;

/// <summary>
/// Named strings a front end keeps with a topic, durable in its <c>topic.json</c> as its retention is: the SQS endpoint
/// keeps a queue's attributes and tags there. Storage gives them no meaning; it bounds them, so that a topic's metadata
/// stays small whatever a client sends.
/// </summary>
public static class TopicProperties
{
    public const int MaxCount = 128;
    public const int MaxNameLength = 256;
    public const int MaxValueLength = 4096;

    public static IReadOnlyDictionary<string, string> Empty { get; } = new SortedDictionary<string, string>(StringComparer.Ordinal);

    /// <summary>
    /// <paramref name="current"/> with <paramref name="changes"/> applied (a null value removes the name), checked
    /// against the limits; InvalidRequest names the first one broken.
    /// </summary>
    public static IReadOnlyDictionary<string, string> Apply(IReadOnlyDictionary<string, string> current,
        IEnumerable<KeyValuePair<string, string?>> changes)
    {
        var result = Sorted(current);
        foreach (var (name, value) in changes)
        {
            if (value is null)
                result.Remove(name);
            else
                result[name] = value;
        }
        EnsureValid(result);
        return result;
    }

    /// <summary>A copy in name order (ordinal), as properties are kept and written.</summary>
    internal static SortedDictionary<string, string> Sorted(IEnumerable<KeyValuePair<string, string>> properties)
    {
        var sorted = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in properties)
            sorted[name] = value;
        return sorted;
    }

    public static void EnsureValid(IReadOnlyDictionary<string, string> properties)
    {
        if (properties.Count > MaxCount)
            Throw.Broker(BrokerErrorCode.InvalidRequest, $"a topic keeps at most {MaxCount} properties; this change leaves {properties.Count}");
        foreach (var (name, value) in properties)
        {
            if (name.Length is 0 or > MaxNameLength)
                Throw.Broker(BrokerErrorCode.InvalidRequest, $"a topic property's name has 1 to {MaxNameLength} characters; one has {name.Length}");
            if (value.Length > MaxValueLength)
                Throw.Broker(BrokerErrorCode.InvalidRequest, $"the topic property '{name}' has {value.Length} characters; at most {MaxValueLength} are kept");
        }
    }
}
