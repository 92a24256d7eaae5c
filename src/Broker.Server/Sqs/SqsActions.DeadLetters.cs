using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Broker.Server.Security;
using Broker.Storage.Errors;
using Broker.Storage.Groups;

namespace Broker.Server.Sqs;

/// <summary>
/// SQS dead-letter actions: which queues send their dead letters to a queue, and moving dead letters back (the
/// broker's redrive). A move runs within its StartMessageMoveTask call, so every task is listed as COMPLETED (or
/// FAILED); the last ten per source queue are remembered until the broker restarts.
/// </summary>
internal sealed partial class SqsActions
{
    private const int TasksKept = 10;

    private readonly ConcurrentDictionary<string, List<JsonObject>> _moveTasks = new(StringComparer.Ordinal);

    /// <summary>
    /// The queues whose redrive policy names this queue, of those the caller has a grant on (each such topic's queue
    /// group is looked at; topics open on the way).
    /// </summary>
    private async Task<JsonObject> ListDeadLetterSourceQueuesAsync(SqsInput input, string urlBase, Caller caller, CancellationToken cancellationToken)
    {
        string deadLetterQueue = QueueName(input);
        await queues.GetTopicAsync(deadLetterQueue, cancellationToken).ConfigureAwait(false);
        var sources = new JsonArray();
        foreach (string name in queues.Store.ListTopics())
        {
            if (name == deadLetterQueue || !caller.Sees(name))
                continue;
            var topic = await queues.Store.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
            if (topic.FindGroup(SqsQueues.GroupName)?.Policy is { DeadLettersFailures: true } policy && policy.DeadLetterTopicFor(name) == deadLetterQueue)
                sources.Add(urlBase + name);
        }
        return sources.Count == 0 ? [] : new JsonObject { ["queueUrls"] = sources };
    }

    private async Task<JsonObject> StartMessageMoveTaskAsync(SqsInput input, Caller caller, CancellationToken cancellationToken)
    {
        string sourceArn = input.Required("SourceArn");
        string? destinationArn = input.String("DestinationArn");
        string source = QueueOfArn(sourceArn);
        string? destination = destinationArn is null ? null : QueueOfArn(destinationArn);
        await queues.GetTopicAsync(source, cancellationToken).ConfigureAwait(false);
        if (destination is not null)
            await queues.GetTopicAsync(destination, cancellationToken).ConfigureAwait(false);
        // Accepted and not applied: the move runs as fast as the broker appends.
        input.Int("MaxNumberOfMessagesPerSecond", 0, 1, 500);
        string handle = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(18));
        var task = new JsonObject
        {
            ["TaskHandle"] = handle,
            ["SourceArn"] = sourceArn,
            ["StartedTimestamp"] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
        };
        if (destinationArn is not null)
            task["DestinationArn"] = destinationArn;
        try
        {
            var result = await deadLetters.RedriveAsync(caller, source, 0, destination, cancellationToken).ConfigureAwait(false);
            task["Status"] = "COMPLETED";
            task["ApproximateNumberOfMessagesMoved"] = result.Moved;
            task["ApproximateNumberOfMessagesToMove"] = result.Moved + result.Skipped;
            if (result.Skipped > 0)
                task["FailureReason"] = $"{result.Skipped} messages name a queue that no longer exists and stay in the dead-letter queue";
        }
        catch (BrokerException error)
        {
            task["Status"] = "FAILED";
            task["FailureReason"] = error.Message;
            Remember(source, task);
            throw Translate(error, source);
        }
        Remember(source, task);
        return new JsonObject { ["TaskHandle"] = handle };
    }

    private async Task<JsonObject> ListMessageMoveTasksAsync(SqsInput input, CancellationToken cancellationToken)
    {
        string sourceArn = input.Required("SourceArn");
        int max = input.Int("MaxResults", 1, 1, TasksKept);
        string source = QueueOfArn(sourceArn);
        await queues.GetTopicAsync(source, cancellationToken).ConfigureAwait(false);
        var results = new JsonArray();
        if (_moveTasks.TryGetValue(source, out var tasks))
        {
            lock (tasks)
            {
                foreach (var task in tasks.AsEnumerable().Reverse().Take(max))
                    results.Add(task.DeepClone());
            }
        }
        return new JsonObject { ["Results"] = results };
    }

    /// <summary>Every move has finished by the time its start is answered: there is nothing left to cancel.</summary>
    private static JsonObject CancelMessageMoveTask(SqsInput input)
    {
        string handle = input.Required("TaskHandle");
        throw new SqsException("ResourceNotFoundException", "ResourceNotFoundException",
            $"The task {handle} is not running: moves here complete within StartMessageMoveTask.");
    }

    private void Remember(string source, JsonObject task)
    {
        var tasks = _moveTasks.GetOrAdd(source, _ => []);
        lock (tasks)
        {
            tasks.Add(task);
            if (tasks.Count > TasksKept)
                tasks.RemoveAt(0);
        }
    }

    // arn:aws:sqs:<region>:<account>:<queue>: only the queue name is read, as for a redrive policy's target.
    internal static string QueueOfArn(string arn) => arn[(arn.LastIndexOf(':') + 1)..];
}
