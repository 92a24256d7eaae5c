using System.Diagnostics;
using Broker.Storage.Errors;
using Broker.Storage.Logs;
using Broker.Storage.Telemetry;
using Broker.Storage.Topics;
using FASTER.core;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Groups;

/// <summary>
/// A consumer group at run time: the pure <see cref="ConsumerGroupState"/> behind a lock, one reader over the
/// topic's log shared by the group's consumers (they compete: each fetch takes the next messages), a timer for
/// lease expiry and nack delays, a router for dead letters, and the durable record of acks.
/// <para>Durability: an ack is confirmed (its task completes) only once its record is durable. After a crash,
/// every confirmed ack holds; every message without a durable ack is delivered again. Nack delays and extended leases
/// are recorded as wall-clock settle timers with a commit asked for but not awaited, so a restart keeps them (up to
/// the last commit before a crash). Attempt counts ride along with the group-state log's next commit, so after a
/// restart they continue from the last commit.</para>
/// </summary>
public sealed partial class ConsumerGroup
{

    /// <summary>Most messages a group with priority levels or newest-first order reads ahead to choose from (24 bytes each).</summary>
    internal const int MaxReadAhead = 100_000;

    /// <summary>
    /// Bytes of read-ahead entries such a group keeps in memory, so that handing them out needs no second read from the
    /// log (by then their pages have usually left memory, and each read would be a disk read): it reads ahead no further
    /// than this (or <see cref="MaxReadAhead"/> messages).
    /// </summary>
    internal const long ReadyEntryBudgetBytes = 16 << 20;

    private readonly Topic _topic;
    private readonly GroupStateStore _store;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private readonly ConsumerGroupState _state;
    private readonly Lock _orderedAckAppends = new();
    private readonly SemaphoreSlim _readerTurn = new(1, 1);
    private readonly AsyncSignal _visibleAgain = new();
    private readonly Dictionary<int, GroupMember> _members = [];
    private readonly DeadLetterRouter _deadLetters;
    private readonly ITimer _dueTimer;
    // This incarnation's right to append; a reset, a purge, retention or a deletion retires it (see GroupWriter).
    private readonly GroupWriter _writer = new();
    // Cancelled when this incarnation is retired or the topic closes: its consumers' streams end.
    private readonly CancellationTokenSource _closing;
    private long? _timerDue;
    // Entries of ready (read-ahead) messages within the budget, by offset (groups that read ahead); guarded by _gate.
    private ReadyEntries? _readyEntries;
    private LogReader? _reader;
    private long _readerNextOffset;
    // The floor a restart would rebuild: carried by a group-state record whose commit has completed. Truncation of
    // the topic's log follows this one, never the in-memory floor, whose acks may not be durable yet.
    private (long Floor, long FloorAddress) _durableFloor;
    private int _nextMemberId;
    // When the group last had no consumer after having one (or was created, opened or replaced): retention's grace.
    private long _idleSince;

    internal ConsumerGroup(Topic topic, GroupStateStore store, string name, GroupPolicy policy, ConsumerGroupState state,
        TimeProvider time, Func<string, CancellationToken, Task<Topic>> deadLetterTopics, (long Floor, long FloorAddress)? durableFloor = null)
    {
        _topic = topic;
        _store = store;
        _time = time;
        Name = name;
        Policy = policy;
        _state = state;
        _durableFloor = durableFloor ?? (state.AckFloor, state.FloorAddress);
        _closing = CancellationTokenSource.CreateLinkedTokenSource(topic.Closing);
        _idleSince = time.GetTimestamp();
        _deadLetters = new DeadLetterRouter(this, topic, policy.DeadLetterTopicFor(topic.Name), deadLetterTopics, time,
            topic.LoggerFactory.CreateLogger<DeadLetterRouter>());
        _dueTimer = time.CreateTimer(static group => ((ConsumerGroup)group!).OnDue(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>The group's name.</summary>
    public string Name { get; }

    /// <summary>The group's delivery rules.</summary>
    public GroupPolicy Policy { get; }

    internal Topic Topic => _topic;

    /// <summary>
    /// Cancelled when this group ends for its consumers: the topic closes, or the group was reset (also by a purge or
    /// by retention) or deleted. Its consumers' streams end then; see <see cref="Retirement"/> for why.
    /// </summary>
    public CancellationToken Closing => _closing.Token;

    /// <summary>
    /// Why this group object serves no more (null while it does): <see cref="BrokerErrorCode.GroupReset"/> when the group
    /// was reset, purged or moved by retention (its consumers subscribe again and get the new state), or
    /// <see cref="BrokerErrorCode.GroupNotFound"/> when it was deleted.
    /// </summary>
    public BrokerException? Retirement => _writer.Retirement;

    /// <summary>True while at least one consumer is subscribed.</summary>
    internal bool HasConsumers
    {
        get
        {
            lock (_gate)
                return _members.Count > 0;
        }
    }

    /// <summary>
    /// Live for retention: a consumer is subscribed, or the last one left less than <paramref name="grace"/> ago (and
    /// every group is live for that long after it was created, opened at a broker start, or replaced), so workers that
    /// reconnect after a broker restart or a quick redeploy still find what they had not acknowledged.
    /// </summary>
    internal bool IsLive(TimeSpan grace)
    {
        lock (_gate)
            return _members.Count > 0 || _time.GetElapsedTime(_idleSince) < grace;
    }

    /// <summary>Under the group-state log's append lock: this incarnation appends nothing more.</summary>
    internal void RetireWrites(BrokerException reason) => _writer.Retire(reason);

    /// <summary>After <see cref="RetireWrites"/>, outside any lock: ends the consumers' streams and stops the group.</summary>
    internal async Task EndAsync()
    {
        _closing.Cancel();
        await CloseAsync().ConfigureAwait(false);
    }

    /// <summary>Adds a consumer; its deliveries are leased for <paramref name="visibilityTimeout"/> (the group's when null).</summary>
    public GroupMember Join(int maxInFlight, TimeSpan? visibilityTimeout = null)
    {
        lock (_gate)
        {
            var member = new GroupMember(_nextMemberId++, maxInFlight, visibilityTimeout ?? Policy.VisibilityTimeout);
            _members.Add(member.Id, member);
            return member;
        }
    }

    /// <summary>Removes a consumer; everything it held unsettled becomes visible again at once.</summary>
    public void Leave(GroupMember member)
    {
        int released;
        var endedLeases = new List<SettleTimer>();
        lock (_gate)
        {
            if (_members.Remove(member.Id) && _members.Count == 0)
                _idleSince = _time.GetTimestamp();
            released = _state.ReleaseConsumer(member.Id, Now(), endedLeases);
        }
        RecordTimers(endedLeases);
        if (released > 0)
            AfterFailures();
    }

    /// <summary>How many deliveries <paramref name="member"/> may still receive before it must settle some.</summary>
    public int FreeCredit(GroupMember member)
    {
        lock (_gate)
            return member.MaxInFlight - _state.InFlightOf(member.Id);
    }

    /// <summary>
    /// Waits until messages are available for the group, then hands up to <paramref name="maxCount"/> of them to
    /// <paramref name="member"/>: messages visible again first (lowest offset first), then new ones in log order.
    /// Only durable messages are ever delivered.
    /// </summary>
    public async Task<DeliveryBatch> FetchAsync(GroupMember member, int maxCount, CancellationToken cancellationToken)
    {
        if (maxCount <= 0)
            return DeliveryBatch.Empty;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, Closing);
        await _readerTurn.WaitAsync(stop.Token).ConfigureAwait(false);
        try
        {
            while (true)
            {
                var visibleAgainWait = _visibleAgain.WaitTask;
                var available = await TakeAvailableAsync(member, maxCount, stop.Token).ConfigureAwait(false);
                if (available.Count > 0)
                    return available;
                await WaitForMessagesAsync(visibleAgainWait, stop.Token).ConfigureAwait(false);
            }
        }
        finally
        {
            _readerTurn.Release();
        }
    }

    /// <summary>Like <see cref="FetchAsync"/>, but returns at once with whatever is available (possibly nothing).</summary>
    public async Task<DeliveryBatch> FetchAvailableAsync(GroupMember member, int maxCount, CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, Closing);
        await _readerTurn.WaitAsync(stop.Token).ConfigureAwait(false);
        try
        {
            return await TakeAvailableAsync(member, maxCount, stop.Token).ConfigureAwait(false);
        }
        finally
        {
            _readerTurn.Release();
        }
    }

    /// <summary>
    /// Applies one settle action to a batch of deliveries. Refused items come back as failures and change nothing.
    /// For acks the task completes once the accepted ones are durable; other actions take effect in memory at once.
    /// </summary>
    public Task<SettleResult> SettleAsync(SettleAction action, IReadOnlyList<DeliveryRef> deliveries)
    {
        if (action is not SettleAction.Ack || !_state.OrderedByKey)
            return Settle(action, deliveries);
        // An ack in an ordered group passes its key's turn in memory: the key's next message can be delivered and
        // acknowledged before this ack's record is appended. Appended in that order, a crash between the two commits
        // would keep the later ack and lose the earlier, and the earlier message would be redelivered after the later
        // one was done: the key's order broken. So an ordered group applies and appends its acks under one lock
        // (fetches do not take it), and their records reach the log in the order the turns passed.
        lock (_orderedAckAppends)
            return Settle(action, deliveries);
    }

    /// <summary>Test seam: runs after an ack is applied in memory (its turn passed) and before its record is appended.</summary>
    internal Action? AckAppliedBeforeAppend { get; set; }

    private Task<SettleResult> Settle(SettleAction action, IReadOnlyList<DeliveryRef> deliveries)
    {
        var accepted = new List<long>(deliveries.Count);
        List<SettleFailure>? failures = null;
        var creditReturnedTo = new HashSet<GroupMember>();
        List<AttemptCount>? recordedAttempts = null;
        List<SettleTimer>? timers = null;
        long floor, floorAddress;
        bool turnPassed;
        lock (_gate)
        {
            var now = Now();
            foreach (var delivery in deliveries)
            {
                int attemptBefore = _state.AttemptOf(delivery.Offset);
                var outcome = Apply(action, delivery, now, out int consumerId);
                if (outcome == SettleOutcome.Done)
                {
                    accepted.Add(delivery.Offset);
                    if (action is SettleAction.Release)
                        (recordedAttempts ??= []).Add(new AttemptCount(delivery.Offset, attemptBefore - 1));
                    // Recorded as exhausted: a restart before the letter is durable in the dead-letter topic routes it
                    // there when the reader passes (as a message that ran out of deliveries), not to a worker again.
                    if (action is SettleAction.DeadLetter)
                        (recordedAttempts ??= []).Add(new AttemptCount(delivery.Offset, Math.Max(attemptBefore, Policy.MaxDeliveries)));
                    // Every settle but an ack changes what a restart must remember: a delay, a lease, or neither.
                    if (action is not SettleAction.Ack)
                        (timers ??= []).Add(_state.TimerOf(delivery.Offset, now));
                    if (action is not SettleAction.Extend && _members.TryGetValue(consumerId, out var member))
                        creditReturnedTo.Add(member);
                }
                else
                {
                    (failures ??= []).Add(Refusal(delivery, outcome));
                }
            }
            floor = _state.AckFloor;
            floorAddress = _state.FloorAddress;
            turnPassed = _state.TakeTurnPassed();
        }
        foreach (var member in creditReturnedTo)
            member.CreditReturned.Set();
        // An ack that passed a key's turn made the next message with that key visible: wake the fetchers for it.
        if (turnPassed)
            AfterFailures();
        var result = new SettleResult(accepted.Count, failures ?? (IReadOnlyList<SettleFailure>)[]);
        if (recordedAttempts is not null)
            RecordAttempts(recordedAttempts);
        if (timers is not null)
            RecordTimers(timers);
        if (action is SettleAction.Ack && accepted.Count > 0)
        {
            AckAppliedBeforeAppend?.Invoke();
            // The record is appended synchronously, before AckDurablyAsync's first await (its order in the log is set).
            return AckDurablyAsync(GroupRecord.Acknowledged(Name, floor, floorAddress, accepted), result);
        }
        if (action is not SettleAction.Ack && accepted.Count > 0)
            AfterFailures();
        return Task.FromResult(result);
    }

    private SettleOutcome Apply(SettleAction action, DeliveryRef delivery, Moment now, out int consumerId)
    {
        consumerId = -1;
        switch (action)
        {
            case SettleAction.Ack:
                return _state.Acknowledge(delivery.Offset, delivery.Token, now, out consumerId);
            case SettleAction.Retry retry:
                return _state.Nack(delivery.Offset, delivery.Token, ToTicks(retry.Delay), retry.LastError, now, out consumerId);
            case SettleAction.DeadLetter deadLetter:
                return _state.DeadLetterNow(delivery.Offset, delivery.Token, deadLetter.Reason, deadLetter.LastError, out consumerId);
            case SettleAction.Release:
                return _state.Release(delivery.Offset, delivery.Token, out consumerId);
            case SettleAction.Extend extend:
                var lease = extend.By ?? LeaseOf(delivery);
                return _state.Extend(delivery.Offset, delivery.Token, ToTicks(lease), now);
            default:
                throw new ArgumentOutOfRangeException(nameof(action));
        }
    }

    private TimeSpan LeaseOf(DeliveryRef delivery) =>
        _state.ConsumerOf(delivery.Offset) is int id && _members.TryGetValue(id, out var member) ? member.VisibilityTimeout : Policy.VisibilityTimeout;

    private static SettleFailure Refusal(DeliveryRef delivery, SettleOutcome outcome) => outcome == SettleOutcome.Stale
        ? new SettleFailure(delivery, BrokerErrorCode.StaleDeliveryToken,
            $"offset {delivery.Offset}: the token is not the current delivery's (the lease expired and the message went elsewhere, or it is already settled)")
        : new SettleFailure(delivery, BrokerErrorCode.UnknownDelivery, $"offset {delivery.Offset}: this group has no such delivery");

    /// <summary>
    /// Records delivery counts in the state log without asking for a commit: they ride along with the next one (an
    /// ack's, a group creation's, a checkpoint's, or the final one at shutdown), so a poison message keeps its count
    /// across a graceful restart and, usually, a crash. Only acks wait for durability.
    /// </summary>
    private void RecordAttempts(List<AttemptCount> attempts)
    {
        if (attempts.Count == 0)
            return;
        var (floor, floorAddress) = Floor();
        AppendWithoutWaiting(GroupRecord.AttemptsChanged(Name, floor, floorAddress, attempts), commitSoon: false);
    }

    /// <summary>
    /// Records settle timers (nack delays, extended leases, their end) and asks for a commit without waiting for it:
    /// the settle is answered at once, and a crash loses at most the timers of the last moments (their messages are
    /// then delivered again at once, as before timers were persisted).
    /// </summary>
    private void RecordTimers(List<SettleTimer> timers)
    {
        if (timers.Count == 0)
            return;
        var (floor, floorAddress) = Floor();
        AppendWithoutWaiting(GroupRecord.TimersChanged(Name, floor, floorAddress, timers), commitSoon: true);
    }

    private void AppendWithoutWaiting(GroupRecord record, bool commitSoon)
    {
        try
        {
            _store.AppendWithNextCommit(record, commitSoon, _writer);
        }
        catch (BrokerException)
        {
            // A closing or failed log: what the record held is lost with it, as documented.
        }
    }

    private async Task<SettleResult> AckDurablyAsync(GroupRecord record, SettleResult result)
    {
        long started = Stopwatch.GetTimestamp();
        await _store.AppendAsync(record, _writer).ConfigureAwait(false);
        NoteDurable(record);
        StorageInstruments.RecordAckCommit(_topic.Name, Name, started);
        return result;
    }

    /// <summary>Run by topic maintenance: the read-ahead lets go of the memory it did not use since the last run.</summary>
    internal void TrimUnusedMemory()
    {
        lock (_gate)
            _readyEntries?.TrimUnusedFree();
    }

    /// <summary>A record of this group has committed: the floor it carries is what a restart rebuilds (at least).</summary>
    internal void NoteDurable(in GroupRecord record)
    {
        lock (_gate)
        {
            // Records of concurrent frames commit out of floor order; the floor only moves up.
            if (record.AckFloor > _durableFloor.Floor)
                _durableFloor = (record.AckFloor, record.FloorAddress);
        }
    }

    /// <summary>The durable floor and its address: every message below it stays acknowledged across a crash.</summary>
    internal (long Floor, long FloorAddress) DurableFloor()
    {
        lock (_gate)
            return _durableFloor;
    }

    /// <summary>
    /// Makes the in-memory floor durable when it is ahead of the durable one (a floor record with no offsets), so
    /// that truncation may follow it. Floors move without a record of their own when the reader passes offsets
    /// acknowledged before a restart.
    /// </summary>
    internal async Task PersistFloorAsync()
    {
        GroupRecord record;
        lock (_gate)
        {
            if (_state.AckFloor <= _durableFloor.Floor)
                return;
            record = GroupRecord.Acknowledged(Name, _state.AckFloor, _state.FloorAddress, []);
        }
        await _store.AppendAsync(record, _writer).ConfigureAwait(false);
        NoteDurable(record);
    }

    /// <summary>Numbers for Describe.</summary>
    internal GroupInfo Describe(long nextOffset, long? oldestUnackedPublishUnixMs)
    {
        lock (_gate)
        {
            long backlog = Math.Max(0, nextOffset - _state.AckFloor - _state.AcknowledgedAboveFloorCount);
            return new GroupInfo(Name, Policy, _state.AckFloor, _state.InFlightCount, backlog, _members.Count, _state.DelayedCount,
                _state.AcknowledgedTotal, _state.RedeliveredTotal, _state.DeadLetteredTotal, oldestUnackedPublishUnixMs,
                _state.DeliveredTotal, _state.NackedTotal, _state.LeasesExpiredTotal);
        }
    }

    /// <summary>The floor and its address, for truncation and Describe.</summary>
    internal (long Floor, long FloorAddress) Floor()
    {
        lock (_gate)
            return (_state.AckFloor, _state.FloorAddress);
    }

    /// <summary>The first broken invariant of the group's state, or null (for tests).</summary>
    internal string? CheckInvariants()
    {
        lock (_gate)
            return _state.CheckInvariants();
    }

    /// <summary>This group's snapshot record, for a checkpoint of the state log.</summary>
    internal GroupRecord Snapshot()
    {
        lock (_gate)
        {
            return GroupRecord.Snapshot(Name, _state.AckFloor, _state.FloorAddress, Policy, _state.AcknowledgedAboveFloor(), _state.AttemptCounts(),
                _state.SettleTimers(Now()));
        }
    }

    /// <summary>Stops the timer and the dead-letter router, then disposes the reader once no fetch uses it.</summary>
    internal async Task CloseAsync()
    {
        await _dueTimer.DisposeAsync().ConfigureAwait(false);
        await _deadLetters.StopAsync().ConfigureAwait(false);
        await _readerTurn.WaitAsync().ConfigureAwait(false);
        _reader?.Dispose();
        _reader = null;
    }

    private Moment Now() => new(_time.GetTimestamp(), _time.GetUtcNow().ToUnixTimeMilliseconds());

    private long ToTicks(TimeSpan duration) => (long)(duration.TotalSeconds * _time.TimestampFrequency);

    private async Task<DeliveryBatch> TakeAvailableAsync(GroupMember member, int maxCount, CancellationToken cancellationToken)
    {
        // A group with an order of its own reads what has arrived into its ready set first, then picks from it (after
        // the redeliveries), so a message just published with a high priority, or the newest one, can go out next.
        if (_state.ReadsAhead)
            ReadNew(member, maxCount);
        var taken = await TakeVisibleAgainAsync(member, maxCount, cancellationToken).ConfigureAwait(false);
        if (taken.Count > 0)
            return taken;
        return _state.ReadsAhead ? DeliveryBatch.Empty : ReadNew(member, maxCount);
    }

    private async Task<DeliveryBatch> TakeVisibleAgainAsync(GroupMember member, int maxCount, CancellationToken cancellationToken)
    {
        List<InFlightMessage>? taken = null;
        lock (_gate)
        {
            var now = Now();
            long lease = ToTicks(member.VisibilityTimeout);
            while ((taken?.Count ?? 0) < maxCount && _state.TryTakeVisibleAgain(out var waiting))
                (taken ??= []).Add(_state.Deliver(waiting.Location, member.Id, waiting, now, lease));
        }
        if (taken is null)
            return DeliveryBatch.Empty;
        RecordAttempts(taken.Select(m => new AttemptCount(m.Location.Offset, m.Attempt)).ToList());
        ScheduleDue();
        var deliveries = new List<GroupDelivery>(taken.Count);
        var buffers = new ReadBufferLease();
        var kept = TakeReadyEntries(taken, buffers);
        for (int i = 0; i < taken.Count; i++)
        {
            var message = taken[i];
            // A ready message whose entry was kept when it was read ahead is decoded from memory instead of read again.
            // Not cancellable: these are leased to the member already, and a cancelled read would leave them leased
            // to nobody (a stop frame or a long poll's end cancels fetches).
            var stored = kept is not null && !kept[i].IsEmpty && MessageEntryFormat.TryDecode(kept[i], out var decoded) ? decoded
                : await _topic.TryReadAsync(message.Location.Address, CancellationToken.None).ConfigureAwait(false);
            if (stored is null)
            {
                // Damaged on disk since it was first delivered: lost. Counting it done keeps every later fetch (and
                // the floor) from stopping at it forever.
                DropLost(message);
                continue;
            }
            deliveries.Add(new GroupDelivery(stored, message.Attempt, message.Token));
        }
        return new DeliveryBatch(deliveries, buffers);
    }

    // The kept entries of the messages taken (empty where none was kept), copied into the delivery's memory under one
    // lock; null when the group keeps none.
    private Memory<byte>[]? TakeReadyEntries(List<InFlightMessage> taken, ReadBufferLease buffers)
    {
        lock (_gate)
        {
            if (_readyEntries is not { Count: > 0 } entries)
                return null;
            var kept = new Memory<byte>[taken.Count];
            for (int i = 0; i < taken.Count; i++)
                entries.TryTake(taken[i].Location.Offset, buffers, out kept[i]);
            return kept;
        }
    }

    /// <summary>A message that can no longer be read is done for the group: reported, and its credit returned.</summary>
    private void DropLost(InFlightMessage message)
    {
        long offset = message.Location.Offset;
        GroupMember? member;
        bool turnPassed;
        lock (_gate)
        {
            _state.MarkLostInFlight(message, Now());
            turnPassed = _state.TakeTurnPassed();
            member = _members.GetValueOrDefault(message.ConsumerId);
        }
        _topic.ReportLostOffsets(Name, offset, offset + 1);
        member?.CreditReturned.Set();
        if (turnPassed)
            AfterFailures();
    }

    private DeliveryBatch ReadNew(GroupMember member, int maxCount)
    {
        var deliveries = new List<GroupDelivery>();
        var buffers = new ReadBufferLease();
        bool exhausted = false, held = false;
        if (_reader is null)
        {
            var (floor, floorAddress) = Floor();
            _reader = _topic.ScanMessages(floorAddress);
            _readerNextOffset = floor;
        }
        long lease = ToTicks(member.VisibilityTimeout);
        var now = Now();
        // An ordered group stops reading ahead while too many messages wait for their key's turn (one busy key must not
        // fill memory); it reads on as turns pass.
        bool readsAhead = _state.ReadsAhead;
        if (readsAhead)
            _readyEntries ??= new ReadyEntries();
        while ((readsAhead ? _state.ReadyCount < MaxReadAhead && _readyEntries!.HasRoom : deliveries.Count < maxCount)
            && _state.WaitingForTurnCount < _topic.MaxWaitingForTurn
            && _reader.TryGetNext(buffers, out var entry, out long address, out long nextAddress))
        {
            // Acknowledged offsets (after a restart) are skipped on their offset alone, without decoding the message.
            if (!MessageEntryFormat.TryReadOffset(entry.Span, out long offset))
                throw new BrokerException(BrokerErrorCode.StorageFailure, $"topic '{_topic.Name}': unreadable entry at address {address}");
            var location = new MessageLocation(offset, address, nextAddress);
            bool filteredOut = Policy.Filter is { } filter && !IsFor(filter, entry);
            // Offsets have no gaps, so a jump means the reader skipped damaged entries (reported by the topic).
            long missingFrom = _readerNextOffset;
            _readerNextOffset = offset + 1;
            lock (_gate)
            {
                if (offset > missingFrom)
                {
                    _state.MarkLost(missingFrom, offset, address);
                    _topic.ReportLostOffsets(Name, missingFrom, offset);
                }
                if (_state.IsAcknowledged(offset))
                {
                    _state.NoteAcknowledgedLocation(offset, nextAddress);
                    buffers.UndoLastCopy(entry);
                    continue;
                }
                // A scheduled record is held for its time (its due copy, appended then, is what the group delivers); a
                // message the group's filter does not want is done for it at once.
                if (MessageEntryFormat.IsScheduledRecord(entry.Span) || filteredOut)
                {
                    _state.PassOver(location);
                    buffers.UndoLastCopy(entry);
                    continue;
                }
                // Ordered by key: an earlier message with this key is still outstanding, so this one waits its turn.
                if (_state.OrderedByKey && MessageEntryFormat.TryReadKey(entry.Span, out var key) && key.Length > 0
                    && !_state.TryTakeTurn(location, KeyTurns.Hash(key)))
                {
                    buffers.UndoLastCopy(entry);
                    continue;
                }
                if (_state.HoldIfTimerRestored(location, now))
                {
                    held = true;
                    buffers.UndoLastCopy(entry);
                    continue;
                }
                if (_state.RouteIfExhausted(location, now))
                {
                    exhausted = true;
                    buffers.UndoLastCopy(entry);
                    continue;
                }
                if (readsAhead)
                {
                    _state.AddReady(location, Policy.PriorityLevels > 1 ? PriorityOf(entry) : 0);
                    _readyEntries!.Keep(offset, entry.Span);
                    buffers.UndoLastCopy(entry);
                    continue;
                }
            }
            if (!MessageEntryFormat.TryDecode(entry, out var stored))
                throw new BrokerException(BrokerErrorCode.StorageFailure, $"topic '{_topic.Name}': unreadable entry at address {address}");
            lock (_gate)
            {
                var message = _state.Deliver(location, member.Id, null, now, lease);
                deliveries.Add(new GroupDelivery(stored!, message.Attempt, message.Token));
            }
        }
        if (exhausted)
            AfterFailures();
        if (held)
            ScheduleDue();
        if (deliveries.Count == 0)
        {
            buffers.Release();
            return DeliveryBatch.Empty;
        }
        RecordAttempts(deliveries.Select(d => new AttemptCount(d.Offset, d.Attempt)).ToList());
        ScheduleDue();
        return new DeliveryBatch(deliveries, buffers);
    }

    // A message's priority: its broker-priority header (0 without one), read in place.
    private static int PriorityOf(ReadOnlyMemory<byte> entry) =>
        MessageEntryFormat.TryReadHeader(entry.Span, ReservedHeaders.PriorityUtf8, out var value)
        && System.Buffers.Text.Utf8Parser.TryParse(value, out int priority, out int consumed) && consumed == value.Length ? priority : 0;

    // The key alone when the filter names no headers (no decoding); else the decoded key and headers.
    private static bool IsFor(GroupFilter filter, ReadOnlyMemory<byte> entry)
    {
        if (filter.Headers.Count == 0)
            return MessageEntryFormat.TryReadKey(entry.Span, out var key) && filter.Matches(key, []);
        return MessageEntryFormat.TryDecode(entry, out var message) && filter.Matches(message!.Key.Span, message.Headers);
    }

    private async Task WaitForMessagesAsync(Task visibleAgainWait, CancellationToken cancellationToken)
    {
        // An ordered group that stopped reading ahead (too many messages wait for their key's turn) has unread entries
        // in the log, which would end the reader's wait at once, over and over: only a passed turn (which makes a
        // message visible) can let it go on.
        if (_state.WaitingForTurnCount >= _topic.MaxWaitingForTurn)
        {
            await visibleAgainWait.WaitAsync(cancellationToken).ConfigureAwait(false);
            return;
        }
        using var waitEnd = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var newData = _reader!.WaitAsync(waitEnd.Token).AsTask();
        var first = await Task.WhenAny(newData, visibleAgainWait).ConfigureAwait(false);
        waitEnd.Cancel();
        // Observe the abandoned wait so its cancellation is not an unobserved exception.
        _ = newData.ContinueWith(static t => _ = t.Exception, TaskScheduler.Default);
        cancellationToken.ThrowIfCancellationRequested();
        if (first == newData && newData.IsCompletedSuccessfully && !newData.Result)
            throw Retirement ?? new BrokerException(BrokerErrorCode.ShuttingDown, $"topic '{_topic.Name}' is closing");
    }
}
