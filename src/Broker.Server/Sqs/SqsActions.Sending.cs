using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Broker.Server.Core;
using Broker.Server.Security;
using Broker.Storage;
using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Server.Sqs;

/// <summary>SQS sends: one message or a batch, appended durably.</summary>
internal sealed partial class SqsActions
{
    private static readonly int MaxDelaySeconds = (int)StorageOptions.MaxScheduleHorizon.TotalSeconds;

    private async Task<JsonObject> SendMessageAsync(SqsInput input, Caller caller, CancellationToken cancellationToken)
    {
        var queue = await AdmitAsync(input, caller, 1, cancellationToken).ConfigureAwait(false);
        bool fifo = IsFifo(queue);
        var (message, reply) = Outgoing(input, fifo, SettingsOf(queue.Name));
        var result = await AppendAsync(queue, [message]).ConfigureAwait(false);
        Answered(reply, queue.Name, result.OffsetOf(0), fifo);
        return reply;
    }

    private async Task<JsonObject> SendMessageBatchAsync(SqsInput input, Caller caller, CancellationToken cancellationToken)
    {
        var entries = CheckedEntries(input);
        var queue = await AdmitAsync(input, caller, entries.Count, cancellationToken).ConfigureAwait(false);
        bool fifo = IsFifo(queue);
        var settings = SettingsOf(queue.Name);
        var accepted = new List<(string Id, AppendMessage Message, JsonObject Reply)>();
        var failed = new JsonArray();
        foreach (var entry in entries)
        {
            string id = entry.String("Id")!;
            try
            {
                var (message, reply) = Outgoing(entry, fifo, settings);
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
                Answered(reply, queue.Name, result.OffsetOf(i), fifo);
                successful.Add(reply);
            }
        }
        return new JsonObject { ["Successful"] = successful, ["Failed"] = failed };
    }

    private static bool IsFifo((string Name, Topic Topic) queue) =>
        SqsQueues.IsFifo(queue.Name, queue.Topic.FindGroup(SqsQueues.GroupName)?.Policy);

    // A duplicate send (its deduplication id within the window) is answered with the first one's message id, as SQS does.
    private static void Answered(JsonObject reply, string queue, long offset, bool fifo)
    {
        reply["MessageId"] = MessageId(queue, offset);
        if (fifo)
            reply["SequenceNumber"] = SequenceNumber(offset);
    }

    /// <summary>The message to append for one send (the queue's settings fill in what it leaves out), and the digests its answer carries.</summary>
    private (AppendMessage Message, JsonObject Reply) Outgoing(SqsInput input, bool fifo, SqsQueueSettings settings)
    {
        string body = input.String("MessageBody") ?? throw SqsException.MissingParameter("MessageBody");
        if (body.Length == 0)
            throw SqsException.InvalidParameter("The message body must not be empty.");
        if (!SqsText.IsValid(body))
            throw SqsException.InvalidMessageContents("The message contains characters outside the allowed set (#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF).");
        // Scheduled delivery has no 15-minute cap here: up to the broker's horizon (docs/sqs.md).
        int? ownDelay = input.Has("DelaySeconds") ? input.Int("DelaySeconds", 0, 0, MaxDelaySeconds) : null;
        byte[] bytes = Encoding.UTF8.GetBytes(body);
        var (groupId, deduplicationId) = FifoIds(input, fifo, ownDelay ?? 0, settings.ContentBasedDeduplication ? bytes : null);
        int delaySeconds = ownDelay ?? settings.DelaySeconds;
        var attributes = input.MessageAttributes();
        if (attributes.Values.Any(a => a.StringValue is { } value && !SqsText.IsValid(value)))
            throw SqsException.InvalidMessageContents("A message attribute value contains characters outside the allowed set.");
        long size = bytes.Length + attributes.Sum(a => a.Key.Length + a.Value.DataType.Length + (a.Value.StringValue?.Length ?? 0) + (a.Value.BinaryValue?.Length ?? 0));
        int limit = settings.MaximumMessageSize ?? maxMessageBytes;
        if (size > limit)
            throw SqsException.InvalidParameter($"The message is {size} bytes with its attributes; the queue's limit is {limit}.");
        var reply = new JsonObject { ["MD5OfMessageBody"] = SqsMessageAttributes.Md5OfBody(bytes) };
        if (SqsMessageAttributes.Md5OfAttributes(attributes) is { } md5)
            reply["MD5OfMessageAttributes"] = md5;
        var key = groupId is null ? default : (ReadOnlyMemory<byte>)Encoding.UTF8.GetBytes(groupId);
        return (new AppendMessage(key, SqsMessageAttributes.ToHeaders(attributes), bytes)
        {
            Delay = TimeSpan.FromSeconds(delaySeconds), MessageId = deduplicationId,
        }, reply);
    }

    /// <summary>
    /// A FIFO send's message group id (the key its queue is ordered by) and deduplication id (the message id), both
    /// required and 1 to 128 characters of SQS's set; neither on a standard queue, and no per-message delay on a FIFO one.
    /// With content-based deduplication (<paramref name="contentBody"/>, the body's UTF-8 bytes, set) a send without a
    /// deduplication id gets the SHA-256 of its body, in hex, as SQS computes it.
    /// </summary>
    private static (string? GroupId, string? DeduplicationId) FifoIds(SqsInput input, bool fifo, int delaySeconds, byte[]? contentBody)
    {
        if (!fifo)
        {
            if (input.Has("MessageGroupId") || input.Has("MessageDeduplicationId"))
                throw SqsException.InvalidParameter("MessageGroupId and MessageDeduplicationId are only valid for FIFO queues (a name ending in .fifo, created with FifoQueue=true).");
            return (null, null);
        }
        if (delaySeconds != 0)
            throw SqsException.InvalidParameter("DelaySeconds is not valid for a message of a FIFO queue.");
        string groupId = input.String("MessageGroupId") ?? throw SqsException.MissingParameter("MessageGroupId");
        string deduplicationId = input.String("MessageDeduplicationId")
            ?? (contentBody is null ? null : Convert.ToHexStringLower(SHA256.HashData(contentBody)))
            ?? throw SqsException.InvalidParameter("The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly.");
        foreach (var (name, value) in new[] { ("MessageGroupId", groupId), ("MessageDeduplicationId", deduplicationId) })
        {
            if (value.Length is 0 or > 128 || value.Any(c => c is < '!' or > '~'))
                throw SqsException.InvalidParameter($"{name} must be 1 to 128 characters of a-z, A-Z, 0-9 and punctuation.");
        }
        return (groupId, deduplicationId);
    }

    /// <summary>The queue's topic, once <see cref="Publishing"/> admits <paramref name="count"/> messages of the caller's to it.</summary>
    private async Task<(string Name, Topic Topic)> AdmitAsync(SqsInput input, Caller caller, int count, CancellationToken cancellationToken)
    {
        string name = QueueName(input);
        try
        {
            return (name, await publishing.AdmitAsync(caller, name, count, TopicLookup.ExistingOnly, cancellationToken).ConfigureAwait(false));
        }
        catch (BrokerException error) when (error.Code is BrokerErrorCode.TopicNotFound or BrokerErrorCode.InvalidName)
        {
            throw SqsException.NonExistentQueue(name);
        }
    }

    private static async Task<AppendResult> AppendAsync((string Name, Topic Topic) queue, IReadOnlyList<AppendMessage> messages)
    {
        try
        {
            return await Publishing.Append(queue.Topic, messages).ConfigureAwait(false);
        }
        catch (BrokerException error)
        {
            throw Translate(error, queue.Name);
        }
    }
}
