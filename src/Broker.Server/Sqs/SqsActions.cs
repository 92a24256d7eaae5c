using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Server.Sqs;

/// <summary>
/// The SQS actions over the broker's topics and groups (docs/sqs.md maps each). Input and output are the JSON
/// protocol's objects; <see cref="SqsWire"/> translates the query protocol. Storage errors become SQS errors here.
/// </summary>
internal sealed class SqsActions(SqsQueues queues, ReceiptHandles receipts)
{
    private readonly int maxMessageBytes = queues.Store.Options.MaxMessageBytes;

    private const int MaxBatchEntries = 10;
    private const int MaxWaitSeconds = 20;
    private const int MaxVisibilitySeconds = 43_200;
    private static readonly TimeSpan TurnWait = TimeSpan.FromSeconds(1);

    public Task<JsonObject> RunAsync(string action, SqsInput input, string queueUrlBase, CancellationToken cancellationToken) => action switch
    {
        "CreateQueue" => CreateQueueAsync(input, queueUrlBase, cancellationToken),
        "GetQueueUrl" => GetQueueUrlAsync(input, queueUrlBase, cancellationToken),
        "ListQueues" => Task.FromResult(ListQueues(input, queueUrlBase)),
        "DeleteQueue" => DeleteQueueAsync(input, cancellationToken),
        "GetQueueAttributes" => GetQueueAttributesAsync(input, cancellationToken),
        "SendMessage" => SendMessageAsync(input, cancellationToken),
        "SendMessageBatch" => SendMessageBatchAsync(input, cancellationToken),
        "ReceiveMessage" => ReceiveMessageAsync(input, cancellationToken),
        "DeleteMessage" => DeleteMessageAsync(input, cancellationToken),
        "DeleteMessageBatch" => DeleteMessageBatchAsync(input, cancellationToken),
        "ChangeMessageVisibility" => ChangeMessageVisibilityAsync(input, cancellationToken),
        "ChangeMessageVisibilityBatch" => SettleBatchAsync(input, entry => VisibilityAction(entry.Int("VisibilityTimeout", -1, 0, MaxVisibilitySeconds)), cancellationToken),
        "PurgeQueue" => PurgeQueueAsync(input, cancellationToken),
        "SetQueueAttributes" or "TagQueue" or "UntagQueue" or "ListQueueTags" or "ListDeadLetterSourceQueues"
            or "StartMessageMoveTask" or "CancelMessageMoveTask" or "ListMessageMoveTasks" or "AddPermission" or "RemovePermission"
            => throw SqsException.Unsupported(action),
        _ => throw SqsException.InvalidAction(action),
    };

    // ---------------------------------------------------------------------------------------------------------
    // Queues

    private async Task<JsonObject> CreateQueueAsync(SqsInput input, string urlBase, CancellationToken cancellationToken)
    {
        string name = input.Required("QueueName");
        var policy = PolicyFrom(input.Map("Attributes"));
        try
        {
            await queues.Store.CreateTopicAsync(name, ifNotExists: true, cancellationToken).ConfigureAwait(false);
            var topic = await queues.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
            var (group, created) = await topic.GetOrCreateGroupAsync(SqsQueues.GroupName, GroupStart.Earliest, policy, cancellationToken).ConfigureAwait(false);
            if (!created && group.Policy != policy.ResolvedFor(name))
                throw SqsException.QueueNameExists(name);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        return new JsonObject { ["QueueUrl"] = urlBase + name };
    }

    /// <summary>The group policy from CreateQueue's attributes; the ones a queue here cannot honour are refused by name.</summary>
    private static GroupPolicy PolicyFrom(IReadOnlyDictionary<string, string> attributes)
    {
        var policy = SqsQueues.DefaultPolicy;
        foreach (var (name, value) in attributes)
        {
            switch (name)
            {
                case "VisibilityTimeout":
                    policy = policy with { VisibilityTimeout = TimeSpan.FromSeconds(ParseInt(name, value, 0, MaxVisibilitySeconds)) };
                    break;
                case "RedrivePolicy":
                    var redrive = ParseRedrivePolicy(value);
                    policy = policy with { MaxDeliveries = redrive.MaxReceiveCount, DeadLetterTopic = redrive.DeadLetterQueue };
                    break;
                case "DelaySeconds" when value == "0":
                    break;
                case "MessageRetentionPeriod" or "MaximumMessageSize" or "ReceiveMessageWaitTimeSeconds" or "Policy"
                    or "SqsManagedSseEnabled" or "KmsMasterKeyId" or "KmsDataKeyReusePeriodSeconds":
                    break;  // accepted, not applied (docs/sqs.md)
                case "FifoQueue" or "ContentBasedDeduplication" or "DeduplicationScope" or "FifoThroughputLimit" or "DelaySeconds":
                    throw SqsException.Unsupported($"The queue attribute {name}={value}");
                default:
                    throw SqsException.InvalidAttributeName(name);
            }
        }
        return policy;
    }

    private static (int MaxReceiveCount, string DeadLetterQueue) ParseRedrivePolicy(string json)
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

    private async Task<JsonObject> GetQueueUrlAsync(SqsInput input, string urlBase, CancellationToken cancellationToken)
    {
        string name = input.Required("QueueName");
        await queues.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
        return new JsonObject { ["QueueUrl"] = urlBase + name };
    }

    private JsonObject ListQueues(SqsInput input, string urlBase)
    {
        string prefix = input.String("QueueNamePrefix") ?? "";
        int max = input.Int("MaxResults", 1000, 1, 1000);
        var urls = queues.Store.ListTopics().Where(name => name.StartsWith(prefix, StringComparison.Ordinal)).Take(max)
            .Select(name => (JsonNode?)JsonValue.Create(urlBase + name)).ToArray();
        return urls.Length == 0 ? [] : new JsonObject { ["QueueUrls"] = new JsonArray(urls) };
    }

    private async Task<JsonObject> DeleteQueueAsync(SqsInput input, CancellationToken cancellationToken)
    {
        string name = QueueName(input);
        try
        {
            await queues.Store.DeleteTopicAsync(name, cancellationToken).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
        return [];
    }

    /// <summary>Every stored message goes, for every group of the topic (gRPC ones too); answered once durable.</summary>
    private async Task<JsonObject> PurgeQueueAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        try
        {
            await queue.Topic.PurgeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, queue.Name);
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
        long backlog = group?.Backlog ?? info.NextOffset - info.FirstOffset;
        var policy = group?.Policy ?? SqsQueues.DefaultPolicy;
        var queue = (Name: name, Topic: topic);
        var all = new Dictionary<string, string>
        {
            ["ApproximateNumberOfMessages"] = Invariant(Math.Max(0, backlog - (group?.InFlight ?? 0) - (group?.Delayed ?? 0))),
            ["ApproximateNumberOfMessagesNotVisible"] = Invariant(group?.InFlight ?? 0),
            ["ApproximateNumberOfMessagesDelayed"] = Invariant(group?.Delayed ?? 0),
            ["VisibilityTimeout"] = Invariant((long)policy.VisibilityTimeout.TotalSeconds),
            ["DelaySeconds"] = "0",
            ["ReceiveMessageWaitTimeSeconds"] = "0",
            ["MaximumMessageSize"] = Invariant(queues.Store.Options.MaxMessageBytes),
            ["QueueArn"] = Arn(queue.Name),
        };
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

    // ---------------------------------------------------------------------------------------------------------
    // Sending

    private async Task<JsonObject> SendMessageAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenTopicAsync(input, cancellationToken).ConfigureAwait(false);
        var (message, reply) = Outgoing(input);
        var result = await AppendAsync(queue, [message]).ConfigureAwait(false);
        reply["MessageId"] = MessageId(queue.Name, result.FirstOffset);
        return reply;
    }

    private async Task<JsonObject> SendMessageBatchAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenTopicAsync(input, cancellationToken).ConfigureAwait(false);
        var entries = CheckedEntries(input);
        var accepted = new List<(string Id, AppendMessage Message, JsonObject Reply)>();
        var failed = new JsonArray();
        foreach (var entry in entries)
        {
            string id = entry.String("Id")!;
            try
            {
                var (message, reply) = Outgoing(entry);
                accepted.Add((id, message, reply));
            }
            catch (SqsException error)
            {
                failed.Add(Failure(id, error));
            }
        }
        var successful = new JsonArray();
        if (accepted.Count > 0)
        {
            // One append, all or nothing: the valid entries are durable together.
            var result = await AppendAsync(queue, accepted.Select(a => a.Message).ToList()).ConfigureAwait(false);
            for (int i = 0; i < accepted.Count; i++)
            {
                var reply = accepted[i].Reply;
                reply["Id"] = accepted[i].Id;
                reply["MessageId"] = MessageId(queue.Name, result.FirstOffset + i);
                successful.Add(reply);
            }
        }
        return new JsonObject { ["Successful"] = successful, ["Failed"] = failed };
    }

    /// <summary>The message to append for one send, and the digests its answer carries.</summary>
    private (AppendMessage Message, JsonObject Reply) Outgoing(SqsInput input)
    {
        string body = input.String("MessageBody") ?? throw SqsException.MissingParameter("MessageBody");
        if (body.Length == 0)
            throw SqsException.InvalidParameter("The message body must not be empty.");
        if (!SqsText.IsValid(body))
            throw SqsException.InvalidMessageContents("The message contains characters outside the allowed set (#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF).");
        if (input.Int("DelaySeconds", 0, 0, 900) > 0)
            throw SqsException.Unsupported("DelaySeconds above 0 (scheduled delivery)");
        if (input.Has("MessageGroupId") || input.Has("MessageDeduplicationId"))
            throw SqsException.Unsupported("MessageGroupId and MessageDeduplicationId (FIFO queues)");
        var attributes = input.MessageAttributes();
        if (attributes.Values.Any(a => a.StringValue is { } value && !SqsText.IsValid(value)))
            throw SqsException.InvalidMessageContents("A message attribute value contains characters outside the allowed set.");
        byte[] bytes = Encoding.UTF8.GetBytes(body);
        long size = bytes.Length + attributes.Sum(a => a.Key.Length + a.Value.DataType.Length + (a.Value.StringValue?.Length ?? 0) + (a.Value.BinaryValue?.Length ?? 0));
        if (size > maxMessageBytes)
            throw SqsException.InvalidParameter($"The message is {size} bytes with its attributes; the limit is {maxMessageBytes}.");
        var reply = new JsonObject { ["MD5OfMessageBody"] = SqsMessageAttributes.Md5OfBody(bytes) };
        if (SqsMessageAttributes.Md5OfAttributes(attributes) is { } md5)
            reply["MD5OfMessageAttributes"] = md5;
        return (new AppendMessage(default, SqsMessageAttributes.ToHeaders(attributes), bytes), reply);
    }

    private static async Task<AppendResult> AppendAsync((string Name, Topic Topic) queue, IReadOnlyList<AppendMessage> messages)
    {
        try
        {
            return await queue.Topic.AppendAsync(messages).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, queue.Name);
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Receiving

    private async Task<JsonObject> ReceiveMessageAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        int max = input.Int("MaxNumberOfMessages", 1, 1, 10);
        int wait = input.Int("WaitTimeSeconds", 0, 0, MaxWaitSeconds);
        int visibility = input.Int("VisibilityTimeout", -1, 0, MaxVisibilitySeconds);
        var systemNames = input.Strings("AttributeNames").Concat(input.Strings("MessageSystemAttributeNames")).ToHashSet(StringComparer.Ordinal);
        var attributeNames = input.Strings("MessageAttributeNames");

        var batch = await FetchAsync(queue, max, wait, cancellationToken).ConfigureAwait(false);
        try
        {
            if (batch.Count > 0 && visibility >= 0)
            {
                await queue.Group.SettleAsync(VisibilityAction(visibility), batch.Select(d => new DeliveryRef(d.Offset, d.Token)).ToList())
                    .ConfigureAwait(false);
            }
            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            var messages = new JsonArray();
            foreach (var delivery in batch)
                messages.Add(Incoming(queue.Name, delivery, systemNames, attributeNames, now));
            return messages.Count == 0 ? [] : new JsonObject { ["Messages"] = messages };
        }
        finally
        {
            batch.ReleaseBuffers();
        }
    }

    private static async Task<DeliveryBatch> FetchAsync(SqsQueue queue, int max, int waitSeconds, CancellationToken cancellationToken)
    {
        try
        {
            if (waitSeconds == 0)
                return await FetchAvailableWithinAsync(queue, max, cancellationToken).ConfigureAwait(false);
            using var poll = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            poll.CancelAfter(TimeSpan.FromSeconds(waitSeconds));
            try
            {
                return await queue.Group.FetchAsync(queue.Receiver, max, poll.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && !queue.Group.Closing.IsCancellationRequested)
            {
                // The long poll ended without a message: an empty answer, as SQS gives.
                return await FetchAvailableWithinAsync(queue, max, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (BrokerException error)
        {
            throw Translate(error, queue.Name);
        }
        catch (OperationCanceledException) when (queue.Group.Closing.IsCancellationRequested)
        {
            throw SqsException.ServiceUnavailable($"queue '{queue.Name}' is closing, or was reset or purged: receive again");
        }
    }

    /// <summary>
    /// What is available now. The group's reader turn may be held by a fetch waiting for messages (a gRPC consumer of
    /// this group): then, after a second, nothing is available to this receive.
    /// </summary>
    private static async Task<DeliveryBatch> FetchAvailableWithinAsync(SqsQueue queue, int max, CancellationToken cancellationToken)
    {
        using var turn = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        turn.CancelAfter(TurnWait);
        try
        {
            return await queue.Group.FetchAvailableAsync(queue.Receiver, max, turn.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && !queue.Group.Closing.IsCancellationRequested)
        {
            return DeliveryBatch.Empty;
        }
    }

    private JsonObject Incoming(string queue, GroupDelivery delivery, HashSet<string> systemNames, IReadOnlyList<string> attributeNames, long now)
    {
        var stored = delivery.Message;
        string body = SqsText.Repaired(Encoding.UTF8.GetString(stored.Payload.Span));
        var message = new JsonObject
        {
            ["MessageId"] = MessageId(queue, stored.Offset),
            ["ReceiptHandle"] = receipts.Encode(queue, new DeliveryRef(delivery.Offset, delivery.Token)),
            // Of the body as the client will see it (a payload published over gRPC that is not UTF-8, or holds characters
            // SQS does not allow, arrives repaired).
            ["MD5OfBody"] = SqsMessageAttributes.Md5OfBody(Encoding.UTF8.GetBytes(body)),
            ["Body"] = body,
        };
        var system = new JsonObject();
        bool all = systemNames.Contains("All");
        void Add(string name, string value)
        {
            if (all || systemNames.Contains(name))
                system[name] = value;
        }
        Add("SenderId", "broker");
        Add("SentTimestamp", Invariant(stored.PublishTimeUnixMs));
        Add("ApproximateReceiveCount", Invariant(delivery.Attempt));
        if (delivery.Attempt == 1)
            Add("ApproximateFirstReceiveTimestamp", Invariant(now));
        if (system.Count > 0)
            message["Attributes"] = system;

        var wanted = SqsMessageAttributes.FromHeaders(stored.Headers)
            .Where(a => attributeNames.Any(pattern => pattern is "All" or ".*" || pattern == a.Key
                        || (pattern.EndsWith(".*", StringComparison.Ordinal) && a.Key.StartsWith(pattern[..^1], StringComparison.Ordinal))))
            .ToDictionary(a => a.Key, a => a.Value, StringComparer.Ordinal);
        if (wanted.Count > 0)
        {
            var attributes = new JsonObject();
            foreach (var (name, attribute) in wanted.OrderBy(a => a.Key, StringComparer.Ordinal))
            {
                attributes[name] = attribute.IsBinary
                    ? new JsonObject { ["BinaryValue"] = Convert.ToBase64String(attribute.BinaryValue ?? []), ["DataType"] = attribute.DataType }
                    : new JsonObject { ["StringValue"] = attribute.StringValue, ["DataType"] = attribute.DataType };
            }
            message["MessageAttributes"] = attributes;
            message["MD5OfMessageAttributes"] = SqsMessageAttributes.Md5OfAttributes(wanted);
        }
        return message;
    }

    // ---------------------------------------------------------------------------------------------------------
    // Settling

    private async Task<JsonObject> DeleteMessageAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        var delivery = receipts.Decode(queue.Name, input.String("ReceiptHandle"));
        await SettleOneAsync(queue, new SettleAction.Ack(), delivery).ConfigureAwait(false);
        return [];
    }

    private async Task<JsonObject> ChangeMessageVisibilityAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        var delivery = receipts.Decode(queue.Name, input.String("ReceiptHandle"));
        if (!input.Has("VisibilityTimeout"))
            throw SqsException.MissingParameter("VisibilityTimeout");
        await SettleOneAsync(queue, VisibilityAction(input.Int("VisibilityTimeout", 0, 0, MaxVisibilitySeconds)), delivery).ConfigureAwait(false);
        return [];
    }

    /// <summary>0: visible again now (the receive stays counted, as in SQS); otherwise a new lease from now.</summary>
    private static SettleAction VisibilityAction(int seconds) => seconds switch
    {
        < 0 => throw SqsException.MissingParameter("VisibilityTimeout"),
        0 => new SettleAction.Retry(TimeSpan.Zero, null),
        _ => new SettleAction.Extend(TimeSpan.FromSeconds(seconds)),
    };

    private static async Task SettleOneAsync(SqsQueue queue, SettleAction action, DeliveryRef delivery)
    {
        var result = await queue.Group.SettleAsync(action, [delivery]).ConfigureAwait(false);
        if (result.Failures is [var failure, ..])
            throw Stale(failure);
    }

    /// <summary>All valid entries in one ack frame: one durable commit for the batch, not one per entry.</summary>
    private async Task<JsonObject> DeleteMessageBatchAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        var successful = new JsonArray();
        var failed = new JsonArray();
        var valid = new List<(string Id, DeliveryRef Delivery)>();
        foreach (var entry in CheckedEntries(input))
        {
            string id = entry.String("Id")!;
            try
            {
                valid.Add((id, receipts.Decode(queue.Name, entry.String("ReceiptHandle"))));
            }
            catch (SqsException error)
            {
                failed.Add(Failure(id, error));
            }
        }
        if (valid.Count > 0)
        {
            var result = await queue.Group.SettleAsync(new SettleAction.Ack(), valid.Select(v => v.Delivery).ToList()).ConfigureAwait(false);
            // Two entries may carry the same handle: the first refusal of a delivery answers for both.
            var refused = result.Failures.GroupBy(f => f.Delivery).ToDictionary(g => g.Key, g => g.First());
            foreach (var (id, delivery) in valid)
            {
                if (refused.TryGetValue(delivery, out var failure))
                    failed.Add(Failure(id, Stale(failure)));
                else
                    successful.Add(new JsonObject { ["Id"] = id });
            }
        }
        return new JsonObject { ["Successful"] = successful, ["Failed"] = failed };
    }

    private async Task<JsonObject> SettleBatchAsync(SqsInput input, Func<SqsInput, SettleAction> actionOf, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        var successful = new JsonArray();
        var failed = new JsonArray();
        foreach (var entry in CheckedEntries(input))
        {
            string id = entry.String("Id")!;
            try
            {
                var delivery = receipts.Decode(queue.Name, entry.String("ReceiptHandle"));
                await SettleOneAsync(queue, actionOf(entry), delivery).ConfigureAwait(false);
                successful.Add(new JsonObject { ["Id"] = id });
            }
            catch (SqsException error)
            {
                failed.Add(Failure(id, error));
            }
        }
        return new JsonObject { ["Successful"] = successful, ["Failed"] = failed };
    }

    private static SqsException Stale(SettleFailure failure) => failure.Code switch
    {
        BrokerErrorCode.StaleDeliveryToken => SqsException.ReceiptHandleIsInvalid(
            "the message was received again since, or was already deleted (this broker refuses a stale handle instead of guessing)"),
        BrokerErrorCode.UnknownDelivery => SqsException.ReceiptHandleIsInvalid("the message is not in flight"),
        _ => SqsException.Internal(failure.Message),
    };

    // ---------------------------------------------------------------------------------------------------------
    // Helpers

    /// <summary>The queue's topic alone: sending needs no group, so a send creates no consumer state.</summary>
    private async Task<(string Name, Topic Topic)> OpenTopicAsync(SqsInput input, CancellationToken cancellationToken)
    {
        string name = QueueName(input);
        return (name, await queues.GetTopicAsync(name, cancellationToken).ConfigureAwait(false));
    }

    private Task<SqsQueue> OpenAsync(SqsInput input, CancellationToken cancellationToken)
    {
        string name = QueueName(input);
        return OpenNamedAsync(name, cancellationToken);
    }

    private async Task<SqsQueue> OpenNamedAsync(string name, CancellationToken cancellationToken)
    {
        try
        {
            return await queues.OpenAsync(name, cancellationToken).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, name);
        }
    }

    /// <summary>The queue a request names: the last path segment of its QueueUrl.</summary>
    private static string QueueName(SqsInput input)
    {
        string url = input.Required("QueueUrl");
        string name = url.TrimEnd('/');
        name = name[(name.LastIndexOf('/') + 1)..];
        return name.Length > 0 ? name : throw SqsException.NonExistentQueue(url);
    }

    private static List<SqsInput> CheckedEntries(SqsInput input)
    {
        var entries = input.Entries().ToList();
        if (entries.Count == 0)
            throw SqsException.EmptyBatch();
        if (entries.Count > MaxBatchEntries)
            throw SqsException.TooManyEntries(entries.Count);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var entry in entries)
        {
            string id = entry.String("Id") ?? throw SqsException.MissingParameter("Id");
            if (id.Length is 0 or > 80 || id.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_')))
                throw SqsException.InvalidBatchEntryId(id);
            if (!seen.Add(id))
                throw SqsException.BatchIdsNotDistinct(id);
        }
        return entries;
    }

    private static JsonObject Failure(string id, SqsException error) => new()
    {
        ["Id"] = id,
        ["SenderFault"] = error.SenderFault,
        ["Code"] = error.QueryCode,
        ["Message"] = error.Message,
    };

    private static SqsException Translate(BrokerException error, string queue) => SqsException.From(error, queue);

    /// <summary>A stable id per message of a queue (SQS ids look like UUIDs; the SDKs only compare them).</summary>
    private static string MessageId(string queue, long offset) =>
        new Guid(MD5.HashData(Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{queue}\n{offset}")))).ToString();

    private static string Arn(string queue) => $"arn:aws:sqs:local:000000000000:{queue}";

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

    private static int ParseInt(string name, string value, int min, int max) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int parsed) && parsed >= min && parsed <= max
            ? parsed
            : throw new SqsException("InvalidAttributeValue", "InvalidAttributeValue", $"Invalid value for the parameter {name}: '{value}' (between {min} and {max}).");

}
