using System.Text;
using System.Text.Json.Nodes;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Server.Sqs;

/// <summary>SQS receives: long polls on the queue's group, and the messages as SQS shows them.</summary>
internal sealed partial class SqsActions
{
    private async Task<JsonObject> ReceiveMessageAsync(SqsInput input, CancellationToken cancellationToken)
    {
        var queue = await OpenAsync(input, cancellationToken).ConfigureAwait(false);
        int max = input.Int("MaxNumberOfMessages", 1, 1, 10);
        // Without a WaitTimeSeconds of its own, a receive waits as long as the queue's ReceiveMessageWaitTimeSeconds.
        int wait = input.Int("WaitTimeSeconds", SettingsOf(queue.Name).ReceiveMessageWaitTimeSeconds, 0, MaxWaitSeconds);
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
        // A FIFO queue's message: its group (the key), deduplication id (the message id) and sequence number (the offset).
        if (stored.Headers.FirstOrDefault(h => h.Key == ReservedHeaders.MessageId).Value is { } deduplicationId)
        {
            Add("MessageGroupId", Encoding.UTF8.GetString(stored.Key.Span));
            Add("MessageDeduplicationId", deduplicationId);
            Add("SequenceNumber", SequenceNumber(stored.Offset));
        }
        if (system.Count > 0)
            message["Attributes"] = system;

        var wanted = SqsMessageAttributes.FromHeaders(stored.Headers.Where(h => h.Key != ReservedHeaders.MessageId).ToList())
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
}
