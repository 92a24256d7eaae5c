using System.Text;
using System.Text.Json.Nodes;
using Broker.Storage;
using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Server.Sqs;

/// <summary>SQS sends: one message or a batch, appended durably.</summary>
internal sealed partial class SqsActions
{
    private static readonly int MaxDelaySeconds = (int)StorageOptions.MaxScheduleHorizon.TotalSeconds;

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
                reply["MessageId"] = MessageId(queue.Name, result.OffsetOf(i));
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
        // Scheduled delivery has no 15-minute cap here: up to the broker's horizon (docs/sqs.md).
        int delaySeconds = input.Int("DelaySeconds", 0, 0, MaxDelaySeconds);
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
        return (new AppendMessage(default, SqsMessageAttributes.ToHeaders(attributes), bytes) { Delay = TimeSpan.FromSeconds(delaySeconds) }, reply);
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
}
