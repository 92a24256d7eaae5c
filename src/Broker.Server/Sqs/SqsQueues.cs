using System.Runtime.CompilerServices;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Server.Sqs;

/// <summary>
/// An SQS queue is a topic and its consumer group <see cref="GroupName"/>: what SQS clients send is the topic's,
/// every message of the topic (published over gRPC as well) is the queue's, and SQS receivers compete in that group
/// (with any gRPC consumer that joins it). Receives have no stream, so every receive of a queue fetches as one
/// long-lived member of the group, whose deliveries stay leased until deleted, changed or timed out, as in SQS.
/// </summary>
internal sealed class SqsQueues(TopicStore store)
{
    /// <summary>The consumer group that is the queue.</summary>
    public const string GroupName = "sqs";

    /// <summary>SQS's limit of messages in flight per queue.</summary>
    private const int MaxInFlight = 120_000;

    // One member per group instance: a deleted and recreated queue gets a new group, and so a new member.
    private readonly ConditionalWeakTable<ConsumerGroup, GroupMember> _members = new();

    /// <summary>A queue without a redrive policy: SQS's defaults, no limit on receives.</summary>
    public static GroupPolicy DefaultPolicy { get; } = new(TimeSpan.FromSeconds(30), GroupPolicy.UnlimitedDeliveries, "");

    /// <summary>The name suffix SQS requires of FIFO queues.</summary>
    public const string FifoSuffix = ".fifo";

    /// <summary>
    /// A FIFO queue is a topic whose queue group is ordered by key (the message group id is the key) and whose name ends
    /// in ".fifo"; sends to it carry message ids (the deduplication id), deduplicated by the topic's window.
    /// </summary>
    public static bool IsFifo(string name, GroupPolicy? policy) =>
        name.EndsWith(FifoSuffix, StringComparison.Ordinal) && policy is { OrderedByKey: true };

    public TopicStore Store => store;

    /// <summary>The queue's topic, group and receiving member; its group is created (with the defaults) on first use.</summary>
    public async Task<SqsQueue> OpenAsync(string name, CancellationToken cancellationToken)
    {
        var topic = await GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
        var group = topic.FindGroup(GroupName)
            ?? (await topic.GetOrCreateGroupAsync(GroupName, GroupStart.Earliest, DefaultPolicy, cancellationToken).ConfigureAwait(false)).Group;
        GroupMember receiver;
        // Under a lock: ConditionalWeakTable may run a factory twice, and a second Join would be a member nobody uses.
        lock (_members)
            receiver = _members.GetValue(group, g => g.Join(MaxInFlight));
        return new SqsQueue(name, topic, group, receiver);
    }

    public async Task<Topic> GetTopicAsync(string name, CancellationToken cancellationToken)
    {
        try
        {
            return await store.GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
        }
        catch (BrokerException error) when (error.Code is BrokerErrorCode.TopicNotFound or BrokerErrorCode.InvalidName)
        {
            throw SqsException.NonExistentQueue(name);
        }
    }
}

internal sealed record SqsQueue(string Name, Topic Topic, ConsumerGroup Group, GroupMember Receiver);
