using System.Text.Json.Nodes;
using Broker.Server.Core;
using Broker.Server.Security;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Server.Sqs;

/// <summary>SQS actions on queues: create, find, list, delete, purge, attributes.</summary>
internal sealed partial class SqsActions
{
    /// <summary>
    /// A topic and its queue group, created together by <see cref="TopicAdmin"/> (which checks the caller first, so a
    /// refusal creates nothing), the queue's other attributes and its tags as the topic's properties. An existing queue
    /// with the same attributes is the answer (its tags stay as they are); with others, QueueNameExists.
    /// </summary>
    private async Task<JsonObject> CreateQueueAsync(SqsInput input, string urlBase, Caller caller, CancellationToken cancellationToken)
    {
        string name = input.Required("QueueName");
        var (policy, settings) = QueueAttributes(input.Map("Attributes"), SqsQueues.DefaultPolicy, SqsQueueSettings.Default, fifo: null);
        if (name.EndsWith(SqsQueues.FifoSuffix, StringComparison.Ordinal) != policy.OrderedByKey)
        {
            throw SqsException.InvalidParameter(policy.OrderedByKey
                ? "The name of a FIFO queue must end with the .fifo suffix."
                : "A queue whose name ends with .fifo must be created with the attribute FifoQueue=true.");
        }
        // The JSON protocol names CreateQueue's tags "tags"; the query protocol's Tag.N.Key/Value fold into "Tags".
        var tags = CheckedTags(input.Has("tags") ? input.Map("tags") : input.Map("Tags"), SqsQueueSettings.TagsOf(TopicProperties.Empty));
        var properties = settings.ToProperties().Where(pair => pair.Value is not null)
            .Concat(tags.Select(tag => KeyValuePair.Create(SqsQueueSettings.TagProperty(tag.Key), (string?)tag.Value)))
            .ToDictionary(pair => pair.Key, pair => pair.Value!, StringComparer.Ordinal);
        try
        {
            var (existing, created) = await admin.CreateTopicWithGroupAsync(caller, name, SqsQueues.GroupName, GroupStart.Earliest, policy, properties,
                cancellationToken).ConfigureAwait(false);
            if (!created && (existing != policy.ResolvedFor(name) || SettingsOf(name) != settings))
                throw SqsException.QueueNameExists(name);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        return new JsonObject { ["QueueUrl"] = urlBase + name };
    }

    /// <summary>
    /// The group policy and the queue settings from CreateQueue's or SetQueueAttributes' attributes over the current
    /// ones; the attributes a queue here cannot honour are refused by name. <paramref name="fifo"/> is the queue's kind
    /// when it exists (null at CreateQueue, where FifoQueue says it).
    /// </summary>
    private (GroupPolicy Policy, SqsQueueSettings Settings) QueueAttributes(IReadOnlyDictionary<string, string> attributes, GroupPolicy policy,
        SqsQueueSettings settings, bool? fifo)
    {
        foreach (var (name, value) in attributes)
        {
            switch (name)
            {
                // SetQueueAttributes with an empty redrive policy removes it: no receive limit again.
                case "RedrivePolicy" when value.Length == 0:
                    policy = policy with { MaxDeliveries = GroupPolicy.UnlimitedDeliveries, DeadLetterTopic = "" };
                    break;
                case "VisibilityTimeout":
                    policy = policy with { VisibilityTimeout = TimeSpan.FromSeconds(ParseInt(name, value, 0, MaxVisibilitySeconds)) };
                    break;
                case "RedrivePolicy":
                    var redrive = ParseRedrivePolicy(value);
                    policy = policy with { MaxDeliveries = redrive.MaxReceiveCount, DeadLetterTopic = redrive.DeadLetterQueue };
                    break;
                // No 15-minute cap, as for a message's own delay (docs/sqs.md).
                case "DelaySeconds":
                    settings = settings with { DelaySeconds = ParseInt(name, value, 0, MaxDelaySeconds) };
                    break;
                case "ReceiveMessageWaitTimeSeconds":
                    settings = settings with { ReceiveMessageWaitTimeSeconds = ParseInt(name, value, 0, MaxWaitSeconds) };
                    break;
                case "MaximumMessageSize":
                    int size = ParseInt(name, value, 1024, maxMessageBytes);
                    settings = settings with { MaximumMessageSize = size == maxMessageBytes ? null : size };
                    break;
                case "MessageRetentionPeriod":
                    settings = settings with { MessageRetentionPeriod = ParseInt(name, value, 60, 1_209_600) };  // kept and shown, not applied (docs/sqs.md)
                    break;
                case "ContentBasedDeduplication" when value is "true" or "false":
                    settings = settings with { ContentBasedDeduplication = value == "true" };
                    break;
                case "Policy" or "SqsManagedSseEnabled" or "KmsMasterKeyId" or "KmsDataKeyReusePeriodSeconds":
                    break;  // accepted, not applied (docs/sqs.md)
                // A FIFO queue: its group is ordered by key (the message group id); sends carry deduplication ids.
                case "FifoQueue" when value == "true":
                    policy = policy with { OrderedByKey = true };
                    break;
                case "FifoQueue" when value == "false":
                case "DeduplicationScope" when value is "queue" or "messageGroup":
                case "FifoThroughputLimit" when value is "perQueue" or "perMessageGroupId":
                    break;  // the broker's deduplication is per topic, and there is no throughput limit to choose
                case "FifoQueue" or "ContentBasedDeduplication" or "DeduplicationScope" or "FifoThroughputLimit":
                    throw SqsException.Unsupported($"The queue attribute {name}={value}");
                default:
                    throw SqsException.InvalidAttributeName(name);
            }
        }
        // As SQS: content-based deduplication is a FIFO queue's attribute.
        if (settings.ContentBasedDeduplication && !(fifo ?? policy.OrderedByKey))
            throw SqsException.InvalidAttributeName("ContentBasedDeduplication");
        return (policy, settings);
    }

    internal static (int MaxReceiveCount, string DeadLetterQueue) ParseRedrivePolicy(string json)
    {
        try
        {
            var policy = JsonNode.Parse(json)?.AsObject() ?? throw new FormatException("empty");
            string arn = policy["deadLetterTargetArn"]?.ToString() ?? throw new FormatException("deadLetterTargetArn is missing");
            int count = ParseInt("maxReceiveCount", policy["maxReceiveCount"]?.ToString() ?? "", 1, 1000);
            return (count, arn[(arn.LastIndexOf(':') + 1)..]);
        }
        catch (Exception error) when (error is FormatException or System.Text.Json.JsonException or InvalidOperationException)
        {
            throw new SqsException("InvalidAttributeValue", "InvalidAttributeValue", $"Invalid value for the parameter RedrivePolicy: {error.Message}");
        }
    }

    /// <summary>
    /// Changes the queue's attributes. VisibilityTimeout and RedrivePolicy are the group's rules, replaced keeping its
    /// messages and counts (receives in flight are void: their receipt handles are refused, and the messages are visible
    /// again); the others are the topic's properties, changed after the rules (whose checks come first). Attributes
    /// equal to the queue's own change nothing. A queue's FIFO-ness cannot change, as in SQS.
    /// </summary>
    private async Task<JsonObject> SetQueueAttributesAsync(SqsInput input, Caller caller, CancellationToken cancellationToken)
    {
        string name = QueueName(input);
        var attributes = input.Map("Attributes");
        if (attributes.ContainsKey("FifoQueue"))
            throw SqsException.InvalidAttributeName("FifoQueue");
        // Reading the current rules changes nothing: the queue's group may not exist yet (it is made on first use).
        var topic = await queues.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
        var current = topic.FindGroup(SqsQueues.GroupName)?.Policy;
        var currentSettings = SettingsOf(name);
        var (policy, settings) = QueueAttributes(attributes, current ?? SqsQueues.DefaultPolicy, currentSettings,
            fifo: SqsQueues.IsFifo(name, current));
        try
        {
            // TopicAdmin checks the caller first, and leaves the group alone when its rules do not change. The rules are
            // made again from the group's own under its lock: another SetQueueAttributes at once keeps what it changed.
            if (current is not null
                || !(await admin.CreateGroupAsync(caller, name, SqsQueues.GroupName, GroupStart.Earliest, policy, cancellationToken).ConfigureAwait(false)))
            {
                await admin.UpdateGroupAsync(caller, name, SqsQueues.GroupName,
                    latest => QueueAttributes(attributes, latest, currentSettings, fifo: SqsQueues.IsFifo(name, latest)).Policy, cancellationToken)
                    .ConfigureAwait(false);
            }
            // Only the attributes this request changes: another SetQueueAttributes at the same time keeps its own.
            var before = currentSettings.ToProperties();
            var changed = settings.ToProperties().Where(pair => before[pair.Key] != pair.Value).ToDictionary(pair => pair.Key, pair => pair.Value);
            if (changed.Count > 0)
                await admin.UpdatePropertiesAsync(caller, name, changed, cancellationToken).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        return [];
    }

    private async Task<JsonObject> GetQueueUrlAsync(SqsInput input, string urlBase, CancellationToken cancellationToken)
    {
        string name = input.Required("QueueName");
        await queues.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
        return new JsonObject { ["QueueUrl"] = urlBase + name };
    }

    /// <summary>The queues whose names start with the prefix, of those the caller has a grant on (as the gRPC ListTopics).</summary>
    private JsonObject ListQueues(SqsInput input, string urlBase, Caller caller)
    {
        string prefix = input.String("QueueNamePrefix") ?? "";
        int max = input.Int("MaxResults", 1000, 1, 1000);
        var urls = admin.ListTopics(caller).Where(name => name.StartsWith(prefix, StringComparison.Ordinal)).Take(max)
            .Select(name => (JsonNode?)JsonValue.Create(urlBase + name)).ToArray();
        return urls.Length == 0 ? [] : new JsonObject { ["QueueUrls"] = new JsonArray(urls) };
    }

    private async Task<JsonObject> DeleteQueueAsync(SqsInput input, Caller caller, CancellationToken cancellationToken)
    {
        string name = QueueName(input);
        try
        {
            await admin.DeleteTopicAsync(caller, name, cancellationToken).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        return [];
    }

    /// <summary>Every stored message goes, for every group of the topic (gRPC ones too); answered once durable.</summary>
    private async Task<JsonObject> PurgeQueueAsync(SqsInput input, Caller caller, CancellationToken cancellationToken)
    {
        string name = QueueName(input);
        try
        {
            await admin.PurgeAsync(caller, name, cancellationToken).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        return [];
    }

    private async Task<JsonObject> GetQueueAttributesAsync(SqsInput input, CancellationToken cancellationToken)
    {
        string name = QueueName(input);
        var topic = await queues.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
        TopicInfo info;
        try
        {
            info = await topic.DescribeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        // Reading attributes creates nothing: a queue nobody received from yet has every stored message visible.
        var group = info.Groups.FirstOrDefault(g => g.Name == SqsQueues.GroupName);
        var settings = SettingsOf(name);
        long backlog = group?.Backlog ?? info.NextOffset - info.FirstOffset;
        var policy = group?.Policy ?? SqsQueues.DefaultPolicy;
        var queue = (Name: name, Topic: topic);
        var all = new Dictionary<string, string>
        {
            // Approximate, as SQS says: a scheduled record the group's reader has not passed yet counts in its backlog.
            ["ApproximateNumberOfMessages"] = Invariant(Math.Max(0, backlog - (group?.InFlight ?? 0) - (group?.Delayed ?? 0) - info.ScheduledCount)),
            ["ApproximateNumberOfMessagesNotVisible"] = Invariant(group?.InFlight ?? 0),
            // Nack delays of the queue's group, and scheduled messages (DelaySeconds) not yet due.
            ["ApproximateNumberOfMessagesDelayed"] = Invariant((group?.Delayed ?? 0) + info.ScheduledCount),
            ["VisibilityTimeout"] = Invariant((long)policy.VisibilityTimeout.TotalSeconds),
            ["DelaySeconds"] = Invariant(settings.DelaySeconds),
            ["ReceiveMessageWaitTimeSeconds"] = Invariant(settings.ReceiveMessageWaitTimeSeconds),
            ["MaximumMessageSize"] = Invariant(settings.MaximumMessageSize ?? maxMessageBytes),
            ["MessageRetentionPeriod"] = Invariant(settings.MessageRetentionPeriod),
            ["QueueArn"] = Arn(queue.Name),
        };
        if (SqsQueues.IsFifo(name, policy))
        {
            all["FifoQueue"] = "true";
            all["ContentBasedDeduplication"] = settings.ContentBasedDeduplication ? "true" : "false";
            all["DeduplicationScope"] = "queue";
            all["FifoThroughputLimit"] = "perQueue";
        }
        if (policy.MaxDeliveries is > 0 and < GroupPolicy.UnlimitedDeliveries)
        {
            all["RedrivePolicy"] = new JsonObject
            {
                ["deadLetterTargetArn"] = Arn(policy.DeadLetterTopicFor(queue.Name)),
                ["maxReceiveCount"] = policy.MaxDeliveries,
            }.ToJsonString();
        }
        var wanted = input.Strings("AttributeNames");
        var attributes = new JsonObject();
        foreach (var (attribute, value) in all)
        {
            if (wanted.Contains("All") || wanted.Contains(attribute))
                attributes[attribute] = value;
        }
        return attributes.Count == 0 ? [] : new JsonObject { ["Attributes"] = attributes };
    }
}
