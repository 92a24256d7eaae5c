namespace Broker.Storage.Groups;

/// <summary>Where a message sits in the topic's log: its address and the address of the entry after it.</summary>
internal readonly record struct MessageLocation(long Offset, long Address, long NextAddress);

/// <summary>A point in time twice: a monotonic timestamp for leases and delays, wall-clock time for people.</summary>
internal readonly record struct Moment(long Timestamp, long UnixMs);

/// <summary>A message handed to a consumer and not yet settled. Its deadline moves on extend.</summary>
internal sealed class InFlightMessage(MessageLocation location, ulong token, int consumerId, int attempt, long deadline,
    long firstDeliveredUnixMs, long lastDeliveredUnixMs, string? lastError)
{
    public MessageLocation Location { get; } = location;
    public ulong Token { get; } = token;
    public int ConsumerId { get; } = consumerId;
    public int Attempt { get; } = attempt;
    public long Deadline { get; set; } = deadline;

    /// <summary>The lease was extended: its deadline is persisted, so a restart keeps the delivery with its consumer.</summary>
    public bool Extended { get; set; }
    public long FirstDeliveredUnixMs { get; } = firstDeliveredUnixMs;
    public long LastDeliveredUnixMs { get; } = lastDeliveredUnixMs;
    public string? LastError { get; } = lastError;

    public WaitingMessage ToWaiting(int attempts, string? lastError) =>
        new(Location, attempts, FirstDeliveredUnixMs, LastDeliveredUnixMs, lastError ?? LastError);
}

/// <summary>A message waiting for its next delivery, with what its earlier deliveries left behind.</summary>
internal sealed record WaitingMessage(MessageLocation Location, int Attempts, long FirstDeliveredUnixMs, long LastDeliveredUnixMs, string? LastError);

/// <summary>A message on its way to the dead-letter topic, and why.</summary>
internal sealed record DeadLetter(WaitingMessage Message, string Reason);

/// <summary>What a settle request (ack, nack, extend, release) did.</summary>
internal enum SettleOutcome
{
    /// <summary>The delivery was in flight with this token; the request took effect.</summary>
    Done,
    /// <summary>The token belongs to an earlier attempt, or the message is already settled.</summary>
    Stale,
    /// <summary>The group never delivered this offset.</summary>
    Unknown,
}

/// <summary>
/// The pure state of one consumer group, after nats JetStream's consumer state: an ack floor (every offset below
/// it is acknowledged), the messages in flight (each with token, consumer, attempt and lease deadline), the offsets
/// acknowledged above the floor, messages visible again, messages delayed by a nack, and messages on their way to
/// the dead-letter topic. No locks, no I/O, no clock: the caller serializes access and passes time in.
/// <para>The floor may lag behind the truth (it only moves over acknowledged offsets whose next address is known);
/// a lagging floor costs a rescan after restart, never a lost or duplicated ack.</para>
/// </summary>
internal sealed class ConsumerGroupState
{
    private const long UnknownAddress = -1;

    /// <summary>The holder of a delivery restored from before a restart: no consumer of this run.</summary>
    public const int OrphanConsumer = -1;

    /// <summary>Longest a restored timer may hold a message from now: a wall clock set back cannot hold it longer.</summary>
    public static readonly long MaxRestoredHoldMs = (long)GroupPolicy.MaxVisibilityTimeout.TotalMilliseconds;

    private readonly int _maxDeliveries;
    private readonly long _timestampFrequency;
    private readonly RetryBackoff? _retryBackoff;
    // Uniform in [0, 1): the backoff's jitter. Injected so tests can pin it.
    private readonly Func<double> _random;
    // Null unless the group is ordered by key.
    private readonly KeyTurns? _keyTurns;
    // Null unless the group has a delivery order of its own (priority levels, newest first): what it read ahead.
    private readonly ReadyMessages? _ready;
    // A turn passed to a message that became visible, delayed or a dead letter: the caller must wake fetchers.
    private bool _turnPassed;
    private readonly Dictionary<long, InFlightMessage> _inFlight = [];
    // Lazy deletion: an entry is live only while it is still the in-flight message with that deadline.
    private readonly PriorityQueue<InFlightMessage, long> _byDeadline = new();
    // Offset → address of the entry after it (UnknownAddress until the reader passes it after a restart).
    private readonly Dictionary<long, long> _acknowledgedAboveFloor = [];
    private readonly SortedDictionary<long, WaitingMessage> _visibleAgain = [];
    // Delayed messages with the time they become visible (also in _delayedByTime, for the timer).
    private readonly Dictionary<long, (WaitingMessage Message, long VisibleAt)> _delayed = [];
    private readonly PriorityQueue<WaitingMessage, long> _delayedByTime = new();
    private readonly Dictionary<long, DeadLetter> _deadLettering = [];
    private readonly Queue<DeadLetter> _deadLetterOutbox = new();
    private readonly Dictionary<int, int> _inFlightByConsumer = [];
    // Delivery counts recovered from the state log for offsets not delivered since the restart.
    private readonly Dictionary<long, int> _restoredAttempts = [];
    // Settle timers recovered from the state log (delayed nacks, extended leases), applied when the reader reaches
    // their offset: until then only the offset is known, not where the message is.
    private readonly Dictionary<long, SettleTimer> _restoredTimers = [];
    private ulong _nextToken;

    public ConsumerGroupState(long ackFloor, long floorAddress, IEnumerable<long> acknowledgedAboveFloor, ulong firstToken, int maxDeliveries,
        IReadOnlyDictionary<long, int>? restoredAttempts = null, IEnumerable<SettleTimer>? restoredTimers = null,
        long timestampFrequency = TimeSpan.TicksPerSecond, RetryBackoff? retryBackoff = null, Func<double>? random = null,
        bool orderedByKey = false, int priorityLevels = 0, bool newestFirst = false)
    {
        _keyTurns = orderedByKey ? new KeyTurns() : null;
        _ready = priorityLevels > 1 || newestFirst ? new ReadyMessages(priorityLevels, newestFirst) : null;
        _timestampFrequency = timestampFrequency;
        _retryBackoff = retryBackoff;
        _random = random ?? Random.Shared.NextDouble;
        AckFloor = ackFloor;
        FloorAddress = floorAddress;
        foreach (long offset in acknowledgedAboveFloor)
        {
            if (offset >= ackFloor)
                _acknowledgedAboveFloor[offset] = UnknownAddress;
        }
        _nextToken = firstToken;
        _maxDeliveries = maxDeliveries;
        foreach (var (offset, attempts) in restoredAttempts ?? new Dictionary<long, int>())
        {
            if (attempts > 0 && !IsAcknowledged(offset))
                _restoredAttempts[offset] = attempts;
        }
        foreach (var timer in restoredTimers ?? [])
        {
            if (timer.Kind != SettleTimerKind.Cleared && !IsAcknowledged(timer.Offset))
                _restoredTimers[timer.Offset] = timer;
        }
    }

    /// <summary>Every offset below the floor is acknowledged.</summary>
    public long AckFloor { get; private set; }

    /// <summary>Log address of the message at <see cref="AckFloor"/> (or of the log's end if it is not written yet).</summary>
    public long FloorAddress { get; private set; }

    public int InFlightCount => _inFlight.Count;
    public int AcknowledgedAboveFloorCount => _acknowledgedAboveFloor.Count;
    public int DelayedCount => _delayed.Count;
    public bool HasDeadLetters => _deadLetterOutbox.Count > 0;

    /// <summary>Since this state was built: messages acknowledged, redelivered, and dead-lettered.</summary>
    public long AcknowledgedTotal { get; private set; }
    public long RedeliveredTotal { get; private set; }
    public long DeadLetteredTotal { get; private set; }
    /// <summary>Deliveries handed out since this state was built (first deliveries and redeliveries); for metrics.</summary>
    public long DeliveredTotal { get; private set; }
    /// <summary>Retry nacks accepted since this state was built; for metrics.</summary>
    public long NackedTotal { get; private set; }
    /// <summary>Leases that ran out (the message went back to the group) since this state was built; for metrics.</summary>
    public long LeasesExpiredTotal { get; private set; }

    public int InFlightOf(int consumerId) => _inFlightByConsumer.GetValueOrDefault(consumerId);

    /// <summary>
    /// Whether the group reads ahead and picks what goes out by an order of its own (priority levels, newest first)
    /// rather than handing messages out as it reads them.
    /// </summary>
    public bool ReadsAhead => _ready is not null;

    /// <summary>Messages read ahead and not handed out yet (groups that read ahead).</summary>
    public int ReadyCount => _ready?.Count ?? 0;

    /// <summary>A message read ahead that may go out, with its priority: it waits among the ready ones for its pick.</summary>
    public void AddReady(MessageLocation location, int priority) => _ready!.Add(location, priority);

    /// <summary>Whether messages with one key go out one at a time, in offset order.</summary>
    public bool OrderedByKey => _keyTurns is not null;

    /// <summary>Messages read and waiting for their key's turn (ordered groups).</summary>
    public int WaitingForTurnCount => _keyTurns?.WaitingCount ?? 0;

    /// <summary>
    /// For an ordered group: true when the message read at <paramref name="location"/> may go out (no earlier message
    /// with its key is outstanding); else it waits for its turn, and comes back visible when the turn passes to it.
    /// </summary>
    public bool TryTakeTurn(MessageLocation location, ulong key) => _keyTurns?.TryTakeTurn(location, key) ?? true;

    /// <summary>True once after a turn passed to a waiting message (now visible, delayed or a dead letter): wake fetchers.</summary>
    public bool TakeTurnPassed()
    {
        bool passed = _turnPassed;
        _turnPassed = false;
        return passed;
    }

    /// <summary>The attempt number of the delivery in flight at <paramref name="offset"/> (0 when none).</summary>
    public int AttemptOf(long offset) => _inFlight.TryGetValue(offset, out var message) ? message.Attempt : 0;

    public int? ConsumerOf(long offset) => _inFlight.TryGetValue(offset, out var message) ? message.ConsumerId : null;

    public bool IsAcknowledged(long offset) => offset < AckFloor || _acknowledgedAboveFloor.ContainsKey(offset);

    /// <summary>The earliest lease deadline or delay end still pending, if any (may be stale: then nothing is due).</summary>
    public long? NextDue
    {
        get
        {
            long? due = null;
            if (_byDeadline.TryPeek(out _, out long deadline))
                due = deadline;
            if (_delayedByTime.TryPeek(out _, out long visibleAt) && (due is null || visibleAt < due))
                due = visibleAt;
            return due;
        }
    }

    /// <summary>The reader passed an acknowledged offset and learned where the next entry starts.</summary>
    public void NoteAcknowledgedLocation(long offset, long nextAddress)
    {
        if (_acknowledgedAboveFloor.ContainsKey(offset))
        {
            _acknowledgedAboveFloor[offset] = nextAddress;
            AdvanceFloor();
        }
    }

    /// <summary>
    /// The reader found offsets <paramref name="from"/> to <paramref name="to"/> (exclusive) missing from the log: their
    /// entries were damaged and skipped, so they can never be delivered. They count as acknowledged (never served, and
    /// the floor must not wait for them forever), continuing at <paramref name="address"/>, the entry of
    /// <paramref name="to"/>. Offsets this group already knows (settled, held, delivered before the damage) keep their state.
    /// </summary>
    public void MarkLost(long from, long to, long address)
    {
        for (long offset = Math.Max(from, AckFloor); offset < to; offset++)
        {
            // Acknowledged before a restart, its entry gone: the reader will never pass it to say where it ends.
            if (_acknowledgedAboveFloor.TryGetValue(offset, out long next) && next == UnknownAddress)
            {
                _acknowledgedAboveFloor[offset] = address;
                continue;
            }
            if (IsAcknowledged(offset) || _inFlight.ContainsKey(offset) || _visibleAgain.ContainsKey(offset) || _delayed.ContainsKey(offset)
                || _deadLettering.ContainsKey(offset))
                continue;
            _restoredTimers.Remove(offset);
            _acknowledgedAboveFloor[offset] = address;
        }
        AdvanceFloor();
    }

    /// <summary>
    /// A message handed out that turned out unreadable (damaged on disk since its first delivery): it leaves the
    /// consumer and counts as done, like offsets lost in damaged entries.
    /// </summary>
    public void MarkLostInFlight(InFlightMessage message, Moment now)
    {
        if (!_inFlight.TryGetValue(message.Location.Offset, out var current) || current != message)
            return;
        RemoveInFlight(message);
        MarkAcknowledged(message.Location, now);
    }

    /// <summary>
    /// The reader passed an entry the group never delivers (a scheduled record, whose due copy it delivers later): it
    /// counts as done, so the floor moves over it.
    /// </summary>
    public void PassOver(MessageLocation location)
    {
        // A message a filter passes over may have had a timer or a count from before a restart (or an update that
        // added the filter): they go with it.
        _restoredTimers.Remove(location.Offset);
        _restoredAttempts.Remove(location.Offset);
        if (!IsAcknowledged(location.Offset))
            MarkAcknowledged(location, null);
    }

    /// <summary>Hands a message to a consumer: a new token, one more attempt, a lease until now + <paramref name="lease"/>.</summary>
    public InFlightMessage Deliver(MessageLocation location, int consumerId, WaitingMessage? previous, Moment now, long lease)
    {
        int prior = previous?.Attempts ?? (_restoredAttempts.Remove(location.Offset, out int restored) ? restored : 0);
        // A message never delivered before (read ahead, or handed its key's turn) comes as a waiting one with 0 attempts.
        var message = new InFlightMessage(location, _nextToken++, consumerId, prior + 1, now.Timestamp + lease,
            previous is { Attempts: > 0, FirstDeliveredUnixMs: > 0 } ? previous.FirstDeliveredUnixMs : now.UnixMs, now.UnixMs, previous?.LastError);
        DeliveredTotal++;
        if (prior > 0)
            RedeliveredTotal++;
        _inFlight.Add(location.Offset, message);
        _byDeadline.Enqueue(message, message.Deadline);
        CompactDeadlinesIfMostlyStale();
        _inFlightByConsumer[consumerId] = InFlightOf(consumerId) + 1;
        return message;
    }

    /// <summary>
    /// A message read anew after a restart that already had its maximum deliveries before it (the broker went down
    /// while it was out, perhaps because of it) goes to the dead letters instead of out again.
    /// </summary>
    public bool RouteIfExhausted(MessageLocation location, Moment now)
    {
        if (!_restoredAttempts.TryGetValue(location.Offset, out int attempts) || attempts < _maxDeliveries)
            return false;
        _restoredAttempts.Remove(location.Offset);
        QueueDeadLetter(new WaitingMessage(location, attempts, now.UnixMs, now.UnixMs, null),
            $"max deliveries ({_maxDeliveries}) reached; last failure: the broker restarted while it was delivered");
        return true;
    }

    /// <summary>
    /// A message read anew after a restart whose delayed nack or extended lease has not run out is held instead of
    /// delivered: delayed until its time, or in flight with its old token (no consumer of this run holds it) until its
    /// lease ends. A timer is held for at most <see cref="MaxRestoredHoldMs"/> from now.
    /// </summary>
    public bool HoldIfTimerRestored(MessageLocation location, Moment now)
    {
        if (!_restoredTimers.Remove(location.Offset, out var timer))
            return false;
        long remainingMs = Math.Min(timer.UnixMs - now.UnixMs, MaxRestoredHoldMs);
        if (remainingMs <= 0)
            return false;
        long until = now.Timestamp + remainingMs * _timestampFrequency / 1000;
        _restoredAttempts.Remove(location.Offset);
        if (timer.Kind == SettleTimerKind.Delayed)
        {
            var waiting = new WaitingMessage(location, timer.Attempt, now.UnixMs, now.UnixMs, null);
            _delayed[location.Offset] = (waiting, until);
            _delayedByTime.Enqueue(waiting, until);
            return true;
        }
        var message = new InFlightMessage(location, timer.Token, OrphanConsumer, timer.Attempt, until, now.UnixMs, now.UnixMs, null) { Extended = true };
        _inFlight.Add(location.Offset, message);
        _byDeadline.Enqueue(message, until);
        _inFlightByConsumer[OrphanConsumer] = InFlightOf(OrphanConsumer) + 1;
        return true;
    }

    /// <summary>
    /// What a restart must remember of <paramref name="offset"/>'s settle state now: its extended lease, its nack
    /// delay, a restored timer not yet reached, or nothing (<see cref="SettleTimerKind.Cleared"/>).
    /// </summary>
    public SettleTimer TimerOf(long offset, Moment now)
    {
        if (_inFlight.TryGetValue(offset, out var message))
        {
            return message.Extended
                ? new SettleTimer(offset, message.Attempt, SettleTimerKind.Leased, WallClock(message.Deadline, now), message.Token)
                : SettleTimer.Cleared(offset, message.Attempt);
        }
        if (_restoredTimers.TryGetValue(offset, out var restored))
            return restored;
        if (_delayed.TryGetValue(offset, out var delayed))
            return new SettleTimer(offset, delayed.Message.Attempts, SettleTimerKind.Delayed, WallClock(delayed.VisibleAt, now), 0);
        return SettleTimer.Cleared(offset, 0);
    }

    /// <summary>Every timer a restart must remember, for a snapshot.</summary>
    public List<SettleTimer> SettleTimers(Moment now)
    {
        var timers = new List<SettleTimer>(_restoredTimers.Values);
        foreach (var message in _inFlight.Values.Where(m => m.Extended))
            timers.Add(new SettleTimer(message.Location.Offset, message.Attempt, SettleTimerKind.Leased, WallClock(message.Deadline, now), message.Token));
        foreach (var (offset, (waiting, visibleAt)) in _delayed)
            timers.Add(new SettleTimer(offset, waiting.Attempts, SettleTimerKind.Delayed, WallClock(visibleAt, now), 0));
        return timers;
    }

    private long WallClock(long timestamp, Moment now) => now.UnixMs + (timestamp - now.Timestamp) * 1000 / _timestampFrequency;

    /// <summary>Delivery counts of every offset not yet acknowledged that has had a delivery, for a snapshot.</summary>
    public List<AttemptCount> AttemptCounts()
    {
        var counts = new List<AttemptCount>();
        counts.AddRange(_inFlight.Values.Select(m => new AttemptCount(m.Location.Offset, m.Attempt)));
        counts.AddRange(_visibleAgain.Values.Select(w => new AttemptCount(w.Location.Offset, w.Attempts)));
        counts.AddRange(_delayed.Values.Select(d => new AttemptCount(d.Message.Location.Offset, d.Message.Attempts)));
        // On its way to the dead letters: recorded as exhausted, so a restart routes it there rather than to a worker.
        counts.AddRange(_deadLettering.Values.Select(d => new AttemptCount(d.Message.Location.Offset, Math.Max(d.Message.Attempts, _maxDeliveries))));
        counts.AddRange(_restoredAttempts.Select(r => new AttemptCount(r.Key, r.Value)));
        counts.RemoveAll(c => c.Attempts <= 0);
        return counts;
    }

    /// <summary>
    /// Takes the lowest message that became visible again, for redelivery; then, in a group that reads ahead, the next
    /// ready message by the group's order (as a first delivery, or with the count a restart restored).
    /// </summary>
    public bool TryTakeVisibleAgain(out WaitingMessage message)
    {
        // Counted first: enumerating a SortedDictionary allocates its stack even when it is empty, and a group that
        // reads ahead asks once per message it hands out.
        if (_visibleAgain.Count > 0)
        {
            var (offset, waiting) = _visibleAgain.First();
            _visibleAgain.Remove(offset);
            message = waiting;
            return true;
        }
        if (_ready is not null && _ready.TryTake(out var location))
        {
            int attempts = _restoredAttempts.Remove(location.Offset, out int restored) ? restored : 0;
            message = new WaitingMessage(location, attempts, 0, 0, null);
            return true;
        }
        message = null!;
        return false;
    }

    /// <summary>Acknowledges a delivery if <paramref name="token"/> is its current token.</summary>
    public SettleOutcome Acknowledge(long offset, ulong token, Moment now, out int consumerId)
    {
        var outcome = TakeInFlight(offset, token, out var message);
        consumerId = message?.ConsumerId ?? -1;
        if (outcome == SettleOutcome.Done)
        {
            MarkAcknowledged(message!.Location, now);
            AcknowledgedTotal++;
        }
        else if (outcome == SettleOutcome.Unknown && IsRestoredLease(offset, token, now))
        {
            // A worker that held an extended lease across a restart finishes: its ack holds, even before the reader
            // has reached the message again (the floor moves over it once the reader learns where it ends).
            _restoredTimers.Remove(offset);
            _restoredAttempts.Remove(offset);
            _acknowledgedAboveFloor[offset] = UnknownAddress;
            AcknowledgedTotal++;
            outcome = SettleOutcome.Done;
        }
        return outcome;
    }

    // A restored lease still running: once its deadline passed, the delivery is as stale as an expired lease.
    private bool IsRestoredLease(long offset, ulong token, Moment now) =>
        _restoredTimers.TryGetValue(offset, out var timer) && timer.Kind == SettleTimerKind.Leased && timer.Token == token && timer.UnixMs > now.UnixMs;

    /// <summary>
    /// A failed delivery: the message becomes visible again after <paramref name="delay"/> (when 0: after the group's
    /// retry backoff, or now without one), or goes to the dead letters when it has had its maximum deliveries.
    /// </summary>
    public SettleOutcome Nack(long offset, ulong token, long delay, string? lastError, Moment now, out int consumerId)
    {
        var outcome = TakeInFlight(offset, token, out var message);
        consumerId = message?.ConsumerId ?? -1;
        if (outcome == SettleOutcome.Done)
        {
            NackedTotal++;
            long wait = delay > 0 ? delay : BackoffAfter(message!.Attempt);
            Fail(message!, "nacked", lastError, now.Timestamp + wait, now);
        }
        return outcome;
    }

    /// <summary>Sends a delivery to the dead letters now, whatever its attempt count.</summary>
    public SettleOutcome DeadLetterNow(long offset, ulong token, string reason, string? lastError, out int consumerId)
    {
        var outcome = TakeInFlight(offset, token, out var message);
        consumerId = message?.ConsumerId ?? -1;
        if (outcome == SettleOutcome.Done)
            QueueDeadLetter(message!.ToWaiting(message.Attempt, lastError), reason);
        return outcome;
    }

    /// <summary>Pushes a delivery's lease out to now + <paramref name="lease"/>.</summary>
    public SettleOutcome Extend(long offset, ulong token, long lease, Moment now)
    {
        var outcome = Find(offset, token, out var message);
        if (outcome == SettleOutcome.Done)
        {
            message!.Deadline = now.Timestamp + lease;
            message.Extended = true;
            _byDeadline.Enqueue(message, message.Deadline);
        }
        else if (outcome == SettleOutcome.Unknown && IsRestoredLease(offset, token, now))
        {
            _restoredTimers[offset] = _restoredTimers[offset] with { UnixMs = now.UnixMs + lease * 1000 / _timestampFrequency };
            outcome = SettleOutcome.Done;
        }
        return outcome;
    }

    /// <summary>Gives a delivery back unprocessed: visible again at once, and this attempt does not count.</summary>
    public SettleOutcome Release(long offset, ulong token, out int consumerId)
    {
        var outcome = TakeInFlight(offset, token, out var message);
        consumerId = message?.ConsumerId ?? -1;
        if (outcome == SettleOutcome.Done)
            _visibleAgain[offset] = message!.ToWaiting(message.Attempt - 1, null);
        return outcome;
    }

    /// <summary>
    /// A consumer's stream ended: everything it held becomes visible again (each counted as a failed delivery). The
    /// leases it had extended, whose persisted deadlines no longer hold, are added to <paramref name="endedLeases"/>.
    /// </summary>
    public int ReleaseConsumer(int consumerId, Moment now, List<SettleTimer>? endedLeases = null)
    {
        if (InFlightOf(consumerId) == 0)
            return 0;
        var released = _inFlight.Values.Where(m => m.ConsumerId == consumerId).OrderBy(m => m.Location.Offset).ToList();
        foreach (var message in released)
        {
            RemoveInFlight(message);
            if (message.Extended)
                endedLeases?.Add(SettleTimer.Cleared(message.Location.Offset, message.Attempt));
            Fail(message, "consumer left", null, now.Timestamp, now);
        }
        return released.Count;
    }

    /// <summary>
    /// Expires every lease whose deadline passed and ends every delay that is over. Adds the consumers whose leases
    /// expired to <paramref name="consumersWithCredit"/>, and the offsets an expiry delayed (the group's retry backoff)
    /// to <paramref name="delayedByBackoff"/>; returns true when a message became visible, delayed or a dead letter.
    /// </summary>
    public bool ExpireDue(Moment now, ISet<int> consumersWithCredit, List<long>? delayedByBackoff = null)
    {
        bool changed = false;
        while (_byDeadline.TryPeek(out var message, out long deadline) && deadline <= now.Timestamp)
        {
            _byDeadline.Dequeue();
            if (!_inFlight.TryGetValue(message.Location.Offset, out var current) || current != message || message.Deadline != deadline)
                continue;
            RemoveInFlight(message);
            consumersWithCredit.Add(message.ConsumerId);
            LeasesExpiredTotal++;
            long wait = BackoffAfter(message.Attempt);
            Fail(message, "visibility timeout expired", null, now.Timestamp + wait, now);
            if (wait > 0 && _delayed.ContainsKey(message.Location.Offset))
                delayedByBackoff?.Add(message.Location.Offset);
            changed = true;
        }
        while (_delayedByTime.TryPeek(out var waiting, out long visibleAt) && visibleAt <= now.Timestamp)
        {
            _delayedByTime.Dequeue();
            if (_delayed.Remove(waiting.Location.Offset))
            {
                _visibleAgain[waiting.Location.Offset] = waiting;
                changed = true;
            }
        }
        return changed;
    }

    // The group's wait after failed attempt n, in timestamp ticks; 0 without a retry backoff.
    private long BackoffAfter(int failedAttempt) =>
        _retryBackoff is null ? 0 : (long)(_retryBackoff.DelayAfter(failedAttempt, _random()).TotalSeconds * _timestampFrequency);

    /// <summary>Takes the next message to route to the dead-letter topic.</summary>
    public bool TryTakeDeadLetter(out DeadLetter deadLetter) => _deadLetterOutbox.TryDequeue(out deadLetter!);

    /// <summary>The dead letter is durable in the dead-letter topic: the message is done for this group.</summary>
    public void CompleteDeadLetter(long offset, Moment now)
    {
        if (_deadLettering.Remove(offset, out var deadLetter))
        {
            MarkAcknowledged(deadLetter.Message.Location, now);
            DeadLetteredTotal++;
        }
    }

    /// <summary>Routing a dead letter failed; it waits to be taken again.</summary>
    public void RetryDeadLetter(DeadLetter deadLetter) => _deadLetterOutbox.Enqueue(deadLetter);

    private void Fail(InFlightMessage message, string cause, string? lastError, long visibleAt, Moment now)
    {
        var waiting = message.ToWaiting(message.Attempt, lastError);
        if (message.Attempt >= _maxDeliveries)
            QueueDeadLetter(waiting, $"max deliveries ({_maxDeliveries}) reached; last failure: {cause}");
        else if (visibleAt > now.Timestamp)
        {
            _delayed[message.Location.Offset] = (waiting, visibleAt);
            _delayedByTime.Enqueue(waiting, visibleAt);
        }
        else
            _visibleAgain[message.Location.Offset] = waiting;
    }

    // Acks leave their deadline entries behind; rebuild before stale ones outweigh the live ones.
    private void CompactDeadlinesIfMostlyStale()
    {
        if (_byDeadline.Count <= 2 * _inFlight.Count + 1024)
            return;
        _byDeadline.Clear();
        foreach (var message in _inFlight.Values)
            _byDeadline.Enqueue(message, message.Deadline);
    }

    /// <summary>
    /// The first broken invariant of this state, or null: every tracked offset lies at or above the floor and in
    /// exactly one of in flight, acknowledged above the floor, visible again, delayed, or on its way to the dead
    /// letters; the floor has advanced over every acknowledged offset it can; the per-consumer counts match the
    /// messages in flight; every dead letter queued for routing is one being routed; every delay is scheduled.
    /// Costs a pass over everything: for tests (the model test calls it after every step).
    /// </summary>
    public string? CheckInvariants()
    {
        var seen = new Dictionary<long, string>();
        foreach (var (name, offsets) in new (string, IEnumerable<long>)[]
        {
            ("in flight", _inFlight.Keys), ("acknowledged", _acknowledgedAboveFloor.Keys), ("visible again", _visibleAgain.Keys),
            ("delayed", _delayed.Keys), ("dead-lettering", _deadLettering.Keys), ("waiting for its turn", _keyTurns?.WaitingOffsets ?? []),
            ("read ahead", _ready?.Offsets ?? []),
        })
        {
            foreach (long offset in offsets)
            {
                if (offset < AckFloor)
                    return $"offset {offset} is {name} but below the floor {AckFloor}";
                // Legal: a lease restored across a restart acked by its worker while the message waits for its key's
                // turn (the turn passes over it when it comes).
                if (!seen.TryAdd(offset, name) && !(seen[offset] == "acknowledged" && name == "waiting for its turn"))
                    return $"offset {offset} is both {seen[offset]} and {name}";
            }
        }
        if (_acknowledgedAboveFloor.TryGetValue(AckFloor, out long next) && next != UnknownAddress)
            return $"the floor {AckFloor} is acknowledged with a known next address but did not advance";
        foreach (var group in _inFlight.Values.GroupBy(m => m.ConsumerId))
        {
            if (InFlightOf(group.Key) != group.Count())
                return $"consumer {group.Key} holds {group.Count()} but is counted with {InFlightOf(group.Key)}";
        }
        if (_inFlightByConsumer.Values.Sum() != _inFlight.Count || _inFlightByConsumer.Values.Any(count => count <= 0))
            return "the per-consumer in-flight counts do not add up";
        foreach (var (offset, message) in _inFlight)
        {
            if (message.Attempt < 1 || message.Location.Offset != offset)
                return $"offset {offset} is in flight as offset {message.Location.Offset}, attempt {message.Attempt}";
        }
        if (_deadLetterOutbox.FirstOrDefault(d => !_deadLettering.ContainsKey(d.Message.Location.Offset)) is { } lost)
            return $"offset {lost.Message.Location.Offset} is queued for the dead letters but not being routed";
        var scheduled = _delayedByTime.UnorderedItems.Select(item => item.Element).ToHashSet();
        if (_delayed.FirstOrDefault(d => !scheduled.Contains(d.Value.Message)) is { Value.Message: not null } unscheduled)
            return $"offset {unscheduled.Key} is delayed with no time to end it";
        foreach (long holder in _keyTurns?.Holders ?? [])
        {
            if (seen.GetValueOrDefault(holder) is null or "acknowledged" or "waiting for its turn")
                return $"offset {holder} holds its key's turn but is not outstanding";
        }
        foreach (long offset in _restoredTimers.Keys)
        {
            if (IsAcknowledged(offset) || _inFlight.ContainsKey(offset))
                return $"offset {offset} still has a restored timer but is acknowledged or in flight";
        }
        return null;
    }

    /// <summary>The offsets acknowledged above the floor, for a snapshot.</summary>
    public long[] AcknowledgedAboveFloor() => [.. _acknowledgedAboveFloor.Keys.Order()];

    private void QueueDeadLetter(WaitingMessage message, string reason)
    {
        var deadLetter = new DeadLetter(message, reason);
        _deadLettering[message.Location.Offset] = deadLetter;
        _deadLetterOutbox.Enqueue(deadLetter);
    }

    private SettleOutcome Find(long offset, ulong token, out InFlightMessage? message)
    {
        if (_inFlight.TryGetValue(offset, out message))
            return message.Token == token ? SettleOutcome.Done : SettleOutcome.Stale;
        if (IsAcknowledged(offset) || _visibleAgain.ContainsKey(offset) || _delayed.ContainsKey(offset) || _deadLettering.ContainsKey(offset))
            return SettleOutcome.Stale;
        return SettleOutcome.Unknown;
    }

    private SettleOutcome TakeInFlight(long offset, ulong token, out InFlightMessage? message)
    {
        var outcome = Find(offset, token, out message);
        if (outcome == SettleOutcome.Done)
            RemoveInFlight(message!);
        return outcome;
    }

    private void MarkAcknowledged(MessageLocation location, Moment? now)
    {
        _acknowledgedAboveFloor[location.Offset] = location.NextAddress;
        AdvanceFloor();
        PassTurn(location.Offset, now);
    }

    // The message at offset is done: the next one waiting with its key takes the turn and goes out as a first delivery
    // (or is held by a timer or routed to the dead letters, as the reader would have done). One acknowledged while it
    // waited (a lease restored across a restart, acked by its worker) passes the turn on at once.
    private void PassTurn(long offset, Moment? now)
    {
        while (_keyTurns is not null && _keyTurns.TryPassTurn(offset, out var next))
        {
            if (IsAcknowledged(next.Offset))
            {
                NoteAcknowledgedLocation(next.Offset, next.NextAddress);
                offset = next.Offset;
                continue;
            }
            _turnPassed = true;
            if (now is { } at && (HoldIfTimerRestored(next, at) || RouteIfExhausted(next, at)))
                return;
            long unixMs = now?.UnixMs ?? 0;
            int attempts = _restoredAttempts.Remove(next.Offset, out int restored) ? restored : 0;
            _visibleAgain[next.Offset] = new WaitingMessage(next, attempts, unixMs, unixMs, null);
            return;
        }
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
