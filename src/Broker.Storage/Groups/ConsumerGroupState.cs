namespace Broker.Storage.Groups;

/// <summary>Where a message sits in the topic's log: its address and the address of the entry after it.</summary>
internal readonly record struct MessageLocation(long Offset, long Address, long NextAddress);

/// <summary>A message handed to a consumer and not yet acknowledged.</summary>
internal sealed record InFlightMessage(MessageLocation Location, ulong Token, int ConsumerId, int Attempt);

/// <summary>What an ack did.</summary>
internal enum AckOutcome
{
    /// <summary>The delivery was in flight with this token; it is now acknowledged.</summary>
    Acknowledged,
    /// <summary>The token belongs to an earlier attempt, or the message is already acknowledged.</summary>
    Stale,
    /// <summary>The group never delivered this offset.</summary>
    Unknown,
}

/// <summary>
/// The pure state of one consumer group: an ack floor (every offset below it is acknowledged), the messages in
/// flight (by offset, each with its current token, consumer and attempt), the offsets acknowledged above the floor,
/// and the messages that became visible again. No locks, no I/O, no clock: the caller serializes access.
/// <para>The floor may lag behind the truth (it only moves over acknowledged offsets whose next address is known);
/// a lagging floor costs a rescan after restart, never a lost or duplicated ack.</para>
/// </summary>
internal sealed class ConsumerGroupState
{
    private const long UnknownAddress = -1;

    private readonly Dictionary<long, InFlightMessage> _inFlight = [];
    // Offset → address of the entry after it (UnknownAddress until the reader passes it after a restart).
    private readonly Dictionary<long, long> _acknowledgedAboveFloor = [];
    // Messages whose delivery ended without an ack, lowest offset first; the value carries attempts so far.
    private readonly SortedDictionary<long, (MessageLocation Location, int Attempts)> _visibleAgain = [];
    private readonly Dictionary<int, int> _inFlightByConsumer = [];
    private ulong _nextToken;

    public ConsumerGroupState(long ackFloor, long floorAddress, IEnumerable<long> acknowledgedAboveFloor, ulong firstToken)
    {
        AckFloor = ackFloor;
        FloorAddress = floorAddress;
        foreach (long offset in acknowledgedAboveFloor)
        {
            if (offset >= ackFloor)
                _acknowledgedAboveFloor[offset] = UnknownAddress;
        }
        _nextToken = firstToken;
    }

    /// <summary>Every offset below the floor is acknowledged.</summary>
    public long AckFloor { get; private set; }

    /// <summary>Log address of the message at <see cref="AckFloor"/> (or of the log's end if it is not written yet).</summary>
    public long FloorAddress { get; private set; }

    public int InFlightCount => _inFlight.Count;

    public int AcknowledgedAboveFloorCount => _acknowledgedAboveFloor.Count;

    public int VisibleAgainCount => _visibleAgain.Count;

    public int InFlightOf(int consumerId) => _inFlightByConsumer.GetValueOrDefault(consumerId);

    public bool IsAcknowledged(long offset) => offset < AckFloor || _acknowledgedAboveFloor.ContainsKey(offset);

    /// <summary>The reader passed an acknowledged offset and learned where the next entry starts.</summary>
    public void NoteAcknowledgedLocation(long offset, long nextAddress)
    {
        if (_acknowledgedAboveFloor.ContainsKey(offset))
        {
            _acknowledgedAboveFloor[offset] = nextAddress;
            AdvanceFloor();
        }
    }

    /// <summary>Hands a message to a consumer: a new token, one more attempt.</summary>
    public InFlightMessage Deliver(MessageLocation location, int consumerId, int previousAttempts)
    {
        var message = new InFlightMessage(location, _nextToken++, consumerId, previousAttempts + 1);
        _inFlight.Add(location.Offset, message);
        _inFlightByConsumer[consumerId] = InFlightOf(consumerId) + 1;
        return message;
    }

    /// <summary>Takes the lowest message that became visible again, for redelivery.</summary>
    public bool TryTakeVisibleAgain(out MessageLocation location, out int attempts)
    {
        foreach (var (_, entry) in _visibleAgain)
        {
            _visibleAgain.Remove(entry.Location.Offset);
            (location, attempts) = entry;
            return true;
        }
        location = default;
        attempts = 0;
        return false;
    }

    /// <summary>Acknowledges a delivery if <paramref name="token"/> is its current token.</summary>
    public AckOutcome Acknowledge(long offset, ulong token, out int consumerId)
    {
        consumerId = -1;
        if (_inFlight.TryGetValue(offset, out var message))
        {
            if (message.Token != token)
                return AckOutcome.Stale;
            consumerId = message.ConsumerId;
            RemoveInFlight(message);
            _acknowledgedAboveFloor[offset] = message.Location.NextAddress;
            AdvanceFloor();
            return AckOutcome.Acknowledged;
        }
        if (IsAcknowledged(offset) || _visibleAgain.ContainsKey(offset))
            return AckOutcome.Stale;
        return AckOutcome.Unknown;
    }

    /// <summary>Makes every message in flight at <paramref name="consumerId"/> visible again (its stream ended).</summary>
    public int ReleaseConsumer(int consumerId)
    {
        if (InFlightOf(consumerId) == 0)
            return 0;
        var released = _inFlight.Values.Where(m => m.ConsumerId == consumerId).ToList();
        foreach (var message in released)
        {
            RemoveInFlight(message);
            _visibleAgain[message.Location.Offset] = (message.Location, message.Attempt);
        }
        _inFlightByConsumer.Remove(consumerId);
        return released.Count;
    }

    private void RemoveInFlight(InFlightMessage message)
    {
        _inFlight.Remove(message.Location.Offset);
        int remaining = InFlightOf(message.ConsumerId) - 1;
        if (remaining > 0)
            _inFlightByConsumer[message.ConsumerId] = remaining;
        else
            _inFlightByConsumer.Remove(message.ConsumerId);
    }

    private void AdvanceFloor()
    {
        while (_acknowledgedAboveFloor.TryGetValue(AckFloor, out long nextAddress) && nextAddress != UnknownAddress)
        {
            _acknowledgedAboveFloor.Remove(AckFloor);
            AckFloor++;
            FloorAddress = nextAddress;
        }
    }
}
