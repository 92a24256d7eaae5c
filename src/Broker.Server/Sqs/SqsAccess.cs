using Broker.Server.Security;

namespace Broker.Server.Sqs;

/// <summary>
/// What each SQS action needs of the caller's grants (docs/security.md, "SQS signatures", has the table): the one place that says it,
/// checked before the action runs, so a refused request changes nothing. A queue is a topic and its group
/// <see cref="SqsQueues.GroupName"/>, so the rules are the gRPC ones (AuthInterceptor) on that topic and group. An
/// action without a rule here is refused, whatever <see cref="SqsActions"/> could do with it.
/// </summary>
internal static partial class SqsAccess
{
    /// <summary>Throws (AccessDenied, through <see cref="SqsException.From"/>) unless <paramref name="caller"/> may run <paramref name="action"/> on what <paramref name="input"/> names.</summary>
    public static void Authorize(Caller caller, string action, SqsInput input, ILogger logger)
    {
        switch (action)
        {
            case "SendMessage" or "SendMessageBatch":
                // Checked by Core/Publishing (publish on the queue's topic, then the key's publish rate), as every publish.
                break;
            case "ReceiveMessage" or "DeleteMessage" or "DeleteMessageBatch" or "ChangeMessageVisibility" or "ChangeMessageVisibilityBatch":
                caller.Demand(Permission.Consume, SqsActions.QueueName(input), SqsQueues.GroupName);
                break;
            case "CreateQueue" or "SetQueueAttributes" or "DeleteQueue" or "PurgeQueue" or "TagQueue" or "UntagQueue":
                // Checked by Core/TopicAdmin (admin on the queue's topic; publish on the dead-letter queue a redrive
                // policy names, which the broker writes to on the queue's behalf), as the gRPC Admin calls.
                break;
            case "AddPermission" or "RemovePermission":
                caller.Demand(Permission.Admin, SqsActions.QueueName(input));
                break;
            case "StartMessageMoveTask":
                // Checked by Core/DeadLetters (admin on the dead-letter queue, publish on a named destination), the
                // same rule as the gRPC Redrive and the web view's button.
                break;
            case "ListMessageMoveTasks":
                caller.Demand(Permission.Admin, SqsActions.QueueOfArn(input.Required("SourceArn")));
                break;
            case "CancelMessageMoveTask":
                // Names only a task handle, and is always answered ResourceNotFound (moves finish within their start):
                // it reads and changes nothing, so any valid key may ask.
                break;
            case "GetQueueUrl":
                DemandSees(caller, input.Required("QueueName"), action, logger);
                break;
            case "GetQueueAttributes" or "ListDeadLetterSourceQueues" or "ListQueueTags":
                DemandSees(caller, SqsActions.QueueName(input), action, logger);
                break;
            case "ListQueues":
                // Open to every key: the list shows only the queues the key has a grant on (SqsActions filters it).
                break;
            default:
                // Authentication off: Anyone may do everything, and the action answers InvalidAction if it has no such name.
                if (ReferenceEquals(caller, Caller.Anyone))
                    break;
                Log.NoRule(logger, caller.KeyId ?? "-", caller.Name, action);
                throw SqsException.AccessDenied($"The broker has no permission rule for the action {action}; it refuses it.");
        }
    }

    /// <summary>
    /// Reading a queue's URL or attributes needs any grant on its topic. A key without one is refused AccessDenied
    /// before the queue is looked up, so the answer is the same whether the queue exists or not.
    /// </summary>
    private static void DemandSees(Caller caller, string queue, string action, ILogger logger)
    {
        if (caller.Sees(queue))
            return;
        Log.Unseen(logger, caller.KeyId ?? "-", caller.Name, action, queue);
        throw SqsException.AccessDenied($"API key '{caller.Name}' ({caller.KeyId}) has no grant on the queue '{queue}'.");
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2703, Level = LogLevel.Warning, Message = "Denied: API key {KeyId} ({Name}) has no grant on queue '{Queue}' for {Action}")]
        public static partial void Unseen(ILogger logger, string keyId, string name, string action, string queue);

        [LoggerMessage(EventId = 2704, Level = LogLevel.Warning, Message = "Denied: API key {KeyId} ({Name}) asked for the SQS action {Action}, which has no permission rule")]
        public static partial void NoRule(ILogger logger, string keyId, string name, string action);
    }
}
