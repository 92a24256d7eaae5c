using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Broker.Server.Core;
using Broker.Server.Security;
using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Server.Sqs;

/// <summary>
/// The SQS actions over the broker's topics and groups (docs/sqs.md maps each). Input and output are the JSON
/// protocol's objects; <see cref="SqsWire"/> translates the query protocol. Storage errors become SQS errors here.
/// </summary>
internal sealed partial class SqsActions(SqsQueues queues, ReceiptHandles receipts, Publishing publishing, DeadLetters deadLetters, TopicAdmin admin)
{
    private readonly int maxMessageBytes = queues.Store.Options.MaxMessageBytes;

    private const int MaxBatchEntries = 10;
    private const int MaxWaitSeconds = 20;
    private const int MaxVisibilitySeconds = 43_200;
    private static readonly TimeSpan TurnWait = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Runs <paramref name="action"/>, which <see cref="SqsAccess.Authorize"/> has allowed <paramref name="caller"/>;
    /// the caller is needed here by the lists, which show just the queues it has a grant on, by sends, which
    /// <see cref="Publishing"/> admits as it does every publish (the key's publish rate, the publish span), and by the
    /// queue administration, which <see cref="TopicAdmin"/> checks as it does gRPC's.
    /// </summary>
    public Task<JsonObject> RunAsync(string action, SqsInput input, string queueUrlBase, Caller caller, CancellationToken cancellationToken) => action switch
    {
        "CreateQueue" => CreateQueueAsync(input, queueUrlBase, caller, cancellationToken),
        "GetQueueUrl" => GetQueueUrlAsync(input, queueUrlBase, cancellationToken),
        "ListQueues" => Task.FromResult(ListQueues(input, queueUrlBase, caller)),
        "DeleteQueue" => DeleteQueueAsync(input, caller, cancellationToken),
        "GetQueueAttributes" => GetQueueAttributesAsync(input, cancellationToken),
        "SendMessage" => SendMessageAsync(input, caller, cancellationToken),
        "SendMessageBatch" => SendMessageBatchAsync(input, caller, cancellationToken),
        "ReceiveMessage" => ReceiveMessageAsync(input, cancellationToken),
        "DeleteMessage" => DeleteMessageAsync(input, cancellationToken),
        "DeleteMessageBatch" => DeleteMessageBatchAsync(input, cancellationToken),
        "ChangeMessageVisibility" => ChangeMessageVisibilityAsync(input, cancellationToken),
        "ChangeMessageVisibilityBatch" => SettleBatchAsync(input, entry => VisibilityAction(entry.Int("VisibilityTimeout", -1, 0, MaxVisibilitySeconds)), cancellationToken),
        "PurgeQueue" => PurgeQueueAsync(input, caller, cancellationToken),
        "ListDeadLetterSourceQueues" => ListDeadLetterSourceQueuesAsync(input, queueUrlBase, caller, cancellationToken),
        "StartMessageMoveTask" => StartMessageMoveTaskAsync(input, caller, cancellationToken),
        "ListMessageMoveTasks" => ListMessageMoveTasksAsync(input, cancellationToken),
        "CancelMessageMoveTask" => Task.FromResult(CancelMessageMoveTask(input)),
        "SetQueueAttributes" => SetQueueAttributesAsync(input, caller, cancellationToken),
        "TagQueue" => TagQueueAsync(input, caller, cancellationToken),
        "UntagQueue" => UntagQueueAsync(input, caller, cancellationToken),
        "ListQueueTags" => Task.FromResult(ListQueueTags(input)),
        "AddPermission" or "RemovePermission" => throw SqsException.Unsupported(action),
        _ => throw SqsException.InvalidAction(action),
    };

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
    internal static string QueueName(SqsInput input)
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

    /// <summary>The queue's own attributes, kept as its topic's properties (parsed once per change of them).</summary>
    private SqsQueueSettings SettingsOf(string queue) => SqsQueueSettings.From(queues.Store.PropertiesOf(queue));

    // A FIFO message's sequence number: its offset, as the 20 digits SQS gives.
    private static string SequenceNumber(long offset) => offset.ToString("D20", System.Globalization.CultureInfo.InvariantCulture);

    // Eight bytes of the MD5 of each queue's name, made once per name: a message id is computed on every send and receive.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> QueueIdPrefixes = new(StringComparer.Ordinal);

    /// <summary>
    /// A stable id per message of a queue, as a UUID (SQS ids look like UUIDs; the SDKs only compare them): eight bytes
    /// from the queue's name, eight from the offset, so a send's answer and every receive give the same id.
    /// </summary>
    private static string MessageId(string queue, long offset)
    {
        long prefix = QueueIdPrefixes.GetOrAdd(queue, static name => BitConverter.ToInt64(MD5.HashData(Encoding.UTF8.GetBytes(name))));
        Span<byte> bytes = stackalloc byte[16];
        BitConverter.TryWriteBytes(bytes, prefix);
        BitConverter.TryWriteBytes(bytes[8..], offset);
        return new Guid(bytes).ToString();
    }

    private static string Arn(string queue) => $"arn:aws:sqs:local:000000000000:{queue}";

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

    private static int ParseInt(string name, string value, int min, int max) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int parsed) && parsed >= min && parsed <= max
            ? parsed
            : throw new SqsException("InvalidAttributeValue", "InvalidAttributeValue", $"Invalid value for the parameter {name}: '{value}' (between {min} and {max}).");
}
