using System.Globalization;
using System.Runtime.CompilerServices;

namespace Broker.Server.Sqs;

/// <summary>
/// The SQS attributes a queue keeps beyond its group's rules (VisibilityTimeout and RedrivePolicy are the group's
/// policy), and its tags: both are properties of the queue's topic (<see cref="Broker.Storage.Topics.TopicProperties"/>),
/// durable with it. An attribute at its default is not stored. <see cref="MaximumMessageSize"/> null is the broker's
/// own limit.
/// </summary>
internal sealed record SqsQueueSettings(int DelaySeconds = 0, int ReceiveMessageWaitTimeSeconds = 0, int? MaximumMessageSize = null,
    int MessageRetentionPeriod = SqsQueueSettings.DefaultRetentionSeconds, bool ContentBasedDeduplication = false)
{
    public const int DefaultRetentionSeconds = 345_600;
    private const string AttributePrefix = "sqs.";
    private const string TagPrefix = "sqs.tag.";

    public static SqsQueueSettings Default { get; } = new();

    // Parsed once per change of the properties: the store replaces the dictionary on every change, so its identity is the version.
    private static readonly ConditionalWeakTable<IReadOnlyDictionary<string, string>, SqsQueueSettings> Parsed = new();

    /// <summary>The settings the properties hold (a value that does not parse is taken as the default).</summary>
    public static SqsQueueSettings From(IReadOnlyDictionary<string, string> properties) => Parsed.GetValue(properties, static properties =>
    {
        int Int(string name, int fallback) =>
            properties.TryGetValue(AttributePrefix + name, out string? text) && int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value)
                ? value
                : fallback;
        return new SqsQueueSettings(
            Int(nameof(DelaySeconds), 0),
            Int(nameof(ReceiveMessageWaitTimeSeconds), 0),
            properties.ContainsKey(AttributePrefix + nameof(MaximumMessageSize)) ? Int(nameof(MaximumMessageSize), 0) : null,
            Int(nameof(MessageRetentionPeriod), DefaultRetentionSeconds),
            properties.TryGetValue(AttributePrefix + nameof(ContentBasedDeduplication), out string? deduplication) && deduplication == "true");
    });

    /// <summary>The property changes that store these settings: every attribute, removed when at its default.</summary>
    public IReadOnlyDictionary<string, string?> ToProperties() => new Dictionary<string, string?>
    {
        [AttributePrefix + nameof(DelaySeconds)] = DelaySeconds == 0 ? null : Invariant(DelaySeconds),
        [AttributePrefix + nameof(ReceiveMessageWaitTimeSeconds)] = ReceiveMessageWaitTimeSeconds == 0 ? null : Invariant(ReceiveMessageWaitTimeSeconds),
        [AttributePrefix + nameof(MaximumMessageSize)] = MaximumMessageSize is { } size ? Invariant(size) : null,
        [AttributePrefix + nameof(MessageRetentionPeriod)] = MessageRetentionPeriod == DefaultRetentionSeconds ? null : Invariant(MessageRetentionPeriod),
        [AttributePrefix + nameof(ContentBasedDeduplication)] = ContentBasedDeduplication ? "true" : null,
    };

    /// <summary>The queue's tags, from its topic's properties.</summary>
    public static IReadOnlyDictionary<string, string> TagsOf(IReadOnlyDictionary<string, string> properties) =>
        properties.Where(pair => pair.Key.StartsWith(TagPrefix, StringComparison.Ordinal))
            .ToDictionary(pair => pair.Key[TagPrefix.Length..], pair => pair.Value, StringComparer.Ordinal);

    /// <summary>The property that holds tag <paramref name="key"/>.</summary>
    public static string TagProperty(string key) => TagPrefix + key;

    private static string Invariant(int value) => value.ToString(CultureInfo.InvariantCulture);
}
