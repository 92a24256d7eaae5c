using Broker.Storage.Errors;
using Broker.Storage.Logs;
using Broker.Storage.Topics;
using FASTER.core;

namespace Broker.Storage.Groups;

/// <summary>
/// A consumer group at run time: the pure <see cref="ConsumerGroupState"/> behind a lock, one reader over the
/// topic's log shared by the group's consumers (they compete: each fetch takes the next messages), and the
/// durable record of acks.
/// <para>Durability: an ack is confirmed (the task of <see cref="AcknowledgeAsync"/> completes) only once its record
/// is durable. After a crash, every confirmed ack holds; a message whose ack was not confirmed is delivered again.
/// Delivery attempts are counted in memory: after a restart a redelivered message starts again at attempt 1.</para>
/// </summary>
public sealed class ConsumerGroup
{
    private static readonly IReadOnlyList<GroupDelivery> NoDeliveries = [];

    private readonly Topic _topic;
    private readonly GroupStateStore _store;
    private readonly Lock _gate = new();
    private readonly ConsumerGroupState _state;
    private readonly SemaphoreSlim _readerTurn = new(1, 1);
    private readonly AsyncSignal _visibleAgain = new();
    private readonly Dictionary<int, GroupMember> _members = [];
    private FasterLogScanIterator? _reader;
    private int _nextMemberId;

    internal ConsumerGroup(Topic topic, GroupStateStore store, string name, ConsumerGroupState state)
    {
        _topic = topic;
        _store = store;
        Name = name;
        _state = state;
    }

    /// <summary>The group's name.</summary>
    public string Name { get; }

    /// <summary>Adds a consumer to the group.</summary>
    public GroupMember Join(int maxInFlight)
    {
        lock (_gate)
        {
            var member = new GroupMember(_nextMemberId++, maxInFlight);
            _members.Add(member.Id, member);
            return member;
        }
    }

    /// <summary>Removes a consumer; everything it held unacknowledged becomes visible again at once.</summary>
    public void Leave(GroupMember member)
    {
        int released;
        lock (_gate)
        {
            _members.Remove(member.Id);
            released = _state.ReleaseConsumer(member.Id);
        }
        if (released > 0)
            _visibleAgain.Set();
    }

    /// <summary>How many deliveries <paramref name="member"/> may still receive before it must ack.</summary>
    public int FreeCredit(GroupMember member)
    {
        lock (_gate)
            return member.MaxInFlight - _state.InFlightOf(member.Id);
    }

    /// <summary>
    /// Waits until messages are available for the group, then hands up to <paramref name="maxCount"/> of them to
    /// <paramref name="member"/>: messages that became visible again first (lowest offset first), then new ones in
    /// log order. Only durable messages are ever delivered.
    /// </summary>
    public async Task<IReadOnlyList<GroupDelivery>> FetchAsync(GroupMember member, int maxCount, CancellationToken cancellationToken)
    {
        if (maxCount <= 0)
            return NoDeliveries;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _topic.Closing);
        await _readerTurn.WaitAsync(stop.Token).ConfigureAwait(false);
        try
        {
            while (true)
            {
                var visibleAgainWait = _visibleAgain.WaitTask;
                var redelivered = await TakeVisibleAgainAsync(member, maxCount, stop.Token).ConfigureAwait(false);
                if (redelivered.Count > 0)
                    return redelivered;
                var fresh = ReadNew(member, maxCount);
                if (fresh.Count > 0)
                    return fresh;
                await WaitForMessagesAsync(visibleAgainWait, stop.Token).ConfigureAwait(false);
            }
        }
        finally
        {
            _readerTurn.Release();
        }
    }

    /// <summary>
    /// Applies a batch of acks. Refused acks come back as failures and change nothing; the returned task completes
    /// once the accepted ones are durable.
    /// </summary>
    public async Task<(int Accepted, IReadOnlyList<AckFailure> Failures)> AcknowledgeAsync(
        IReadOnlyList<AckRequest> acks, CancellationToken cancellationToken)
    {
        var accepted = new List<long>(acks.Count);
        List<AckFailure>? failures = null;
        var creditReturnedTo = new HashSet<GroupMember>();
        long floor, floorAddress;
        lock (_gate)
        {
            foreach (var ack in acks)
            {
                switch (_state.Acknowledge(ack.Offset, ack.Token, out int consumerId))
                {
                    case AckOutcome.Acknowledged:
                        accepted.Add(ack.Offset);
                        if (_members.TryGetValue(consumerId, out var member))
                            creditReturnedTo.Add(member);
                        break;
                    case AckOutcome.Stale:
                        (failures ??= []).Add(new AckFailure(ack, BrokerErrorCode.StaleDeliveryToken,
                            $"offset {ack.Offset}: the token is not the current delivery's (a later attempt holds it, or it is already acknowledged)"));
                        break;
                    default:
                        (failures ??= []).Add(new AckFailure(ack, BrokerErrorCode.UnknownDelivery,
                            $"offset {ack.Offset}: this group has no such delivery"));
                        break;
                }
            }
            floor = _state.AckFloor;
            floorAddress = _state.FloorAddress;
        }
        foreach (var member in creditReturnedTo)
            member.CreditReturned.Set();
        if (accepted.Count > 0)
        {
            await _store.AppendAsync(new GroupRecord(GroupRecordKind.Acknowledged, Name, floor, floorAddress, accepted))
                .WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        return (accepted.Count, failures ?? (IReadOnlyList<AckFailure>)[]);
    }

    /// <summary>Numbers for Describe.</summary>
    public GroupInfo Describe(long nextOffset)
    {
        lock (_gate)
        {
            long backlog = Math.Max(0, nextOffset - _state.AckFloor - _state.AcknowledgedAboveFloorCount);
            return new GroupInfo(Name, _state.AckFloor, _state.InFlightCount, backlog, _members.Count);
        }
    }

    /// <summary>Disposes the reader once no fetch uses it (the topic's closing token has stopped new ones).</summary>
    internal async Task CloseAsync()
    {
        await _readerTurn.WaitAsync().ConfigureAwait(false);
        _reader?.Dispose();
        _reader = null;
    }

    private async Task<IReadOnlyList<GroupDelivery>> TakeVisibleAgainAsync(GroupMember member, int maxCount, CancellationToken cancellationToken)
    {
        List<InFlightMessage>? taken = null;
        lock (_gate)
        {
            while ((taken?.Count ?? 0) < maxCount && _state.TryTakeVisibleAgain(out var location, out int attempts))
                (taken ??= []).Add(_state.Deliver(location, member.Id, attempts));
        }
        if (taken is null)
            return NoDeliveries;
        var deliveries = new List<GroupDelivery>(taken.Count);
        foreach (var message in taken)
        {
            var stored = await _topic.ReadAsync(message.Location.Address, cancellationToken).ConfigureAwait(false);
            deliveries.Add(new GroupDelivery(stored, message.Attempt, message.Token));
        }
        return deliveries;
    }

    private List<GroupDelivery> ReadNew(GroupMember member, int maxCount)
    {
        var deliveries = new List<GroupDelivery>();
        _reader ??= _topic.Log.Scan(_state.FloorAddress);
        while (deliveries.Count < maxCount && _reader.GetNext(out byte[] entry, out int length, out long address, out long nextAddress))
        {
            var memory = entry.AsMemory(0, length);
            if (!MessageEntryFormat.TryDecode(memory, out var stored))
                throw new BrokerException(BrokerErrorCode.StorageFailure, $"topic '{_topic.Name}': unreadable entry at address {address}");
            lock (_gate)
            {
                if (_state.IsAcknowledged(stored!.Offset))
                {
                    _state.NoteAcknowledgedLocation(stored.Offset, nextAddress);
                    continue;
                }
                var message = _state.Deliver(new MessageLocation(stored.Offset, address, nextAddress), member.Id, previousAttempts: 0);
                deliveries.Add(new GroupDelivery(stored, message.Attempt, message.Token));
            }
        }
        return deliveries;
    }

    private async Task WaitForMessagesAsync(Task visibleAgainWait, CancellationToken cancellationToken)
    {
        using var waitEnd = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var newData = _reader!.WaitAsync(waitEnd.Token).AsTask();
        var first = await Task.WhenAny(newData, visibleAgainWait).ConfigureAwait(false);
        waitEnd.Cancel();
        // Observe the abandoned wait so its cancellation is not an unobserved exception.
        _ = newData.ContinueWith(static t => _ = t.Exception, TaskScheduler.Default);
        cancellationToken.ThrowIfCancellationRequested();
        if (first == newData && newData.IsCompletedSuccessfully && !newData.Result)
            throw new BrokerException(BrokerErrorCode.ShuttingDown, $"topic '{_topic.Name}' is closing");
    }
}
