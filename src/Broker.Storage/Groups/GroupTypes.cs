namespace Broker.Storage.Groups;

/// <summary>Where a new group starts reading.</summary>
public enum GroupStart
{
    /// <summary>The oldest message still in the topic.</summary>
    Earliest,
    /// <summary>Only messages published after the group is created.</summary>
    Latest,
}

/// <summary>A message handed to one consumer of a group: ack it with <see cref="Offset"/> and <see cref="Token"/>.</summary>
public sealed record GroupDelivery(Topics.StoredMessage Message, int Attempt, ulong Token)
{
    /// <summary>The message's offset in the topic.</summary>
    public long Offset => Message.Offset;
}


/// <summary>An ack as a consumer sends it.</summary>
public readonly record struct AckRequest(long Offset, ulong Token);

/// <summary>Result of one ack in a batch.</summary>
public readonly record struct AckFailure(AckRequest Request, Errors.BrokerErrorCode Code, string Message);

/// <summary>Point-in-time numbers of one group, for Describe.</summary>
public sealed record GroupInfo(string Name, long AckFloor, long InFlight, long Backlog, int Consumers);

/// <summary>
/// One consumer's membership in a group. The group counts what the consumer holds unacknowledged; the consumer
/// asks for at most <see cref="MaxInFlight"/> minus that, and waits on <see cref="CreditReturned"/> when it holds
/// its maximum.
/// </summary>
public sealed class GroupMember(int id, int maxInFlight)
{
    internal int Id { get; } = id;

    /// <summary>Most deliveries this consumer holds unacknowledged.</summary>
    public int MaxInFlight { get; } = maxInFlight;

    /// <summary>Set whenever an ack (or a release) lowers what this consumer holds.</summary>
    public Logs.AsyncSignal CreditReturned { get; } = new();
}
