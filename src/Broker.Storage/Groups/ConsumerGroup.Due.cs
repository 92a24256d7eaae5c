namespace Broker.Storage.Groups;

public sealed partial class ConsumerGroup
{
    /// <summary>
    /// Arms the timer for the earliest lease deadline or nack delay. One timer per group, on the monotonic clock of
    /// the <see cref="TimeProvider"/>: a wall-clock jump moves no deadline.
    /// </summary>
    private void ScheduleDue()
    {
        lock (_gate)
        {
            if (_state.NextDue is not long due || (_timerDue is long armed && armed <= due))
                return;
            _timerDue = due;
            var delay = TimeSpan.FromSeconds(Math.Max(0, due - _time.GetTimestamp()) / (double)_time.TimestampFrequency);
            _dueTimer.Change(delay + TimeSpan.FromMilliseconds(1), Timeout.InfiniteTimeSpan);
        }
    }

    private void OnDue()
    {
        var consumers = new HashSet<int>();
        var members = new List<GroupMember>();
        var delayedByBackoff = new List<long>();
        List<SettleTimer>? timers = null;
        bool changed;
        lock (_gate)
        {
            _timerDue = null;
            var now = Now();
            changed = _state.ExpireDue(now, consumers, delayedByBackoff);
            foreach (int id in consumers)
            {
                if (_members.TryGetValue(id, out var member))
                    members.Add(member);
            }
            // A lease that ran out into the group's retry backoff is a delay a restart must keep, as a nack's is.
            if (delayedByBackoff.Count > 0)
                timers = [.. delayedByBackoff.Select(offset => _state.TimerOf(offset, now))];
        }
        foreach (var member in members)
            member.CreditReturned.Set();
        if (timers is not null)
            RecordTimers(timers);
        if (changed)
            AfterFailures();
        ScheduleDue();
    }

    /// <summary>Messages became visible again, delayed, or dead letters: wake fetchers, the router and the timer.</summary>
    private void AfterFailures()
    {
        _visibleAgain.Set();
        bool deadLetters;
        lock (_gate)
            deadLetters = _state.HasDeadLetters;
        if (deadLetters)
            _deadLetters.Wake();
        ScheduleDue();
    }

    internal bool TryTakeDeadLetter(out DeadLetter deadLetter)
    {
        lock (_gate)
            return _state.TryTakeDeadLetter(out deadLetter);
    }

    internal void ReturnDeadLetter(DeadLetter deadLetter)
    {
        lock (_gate)
            _state.RetryDeadLetter(deadLetter);
    }

    /// <summary>The dead letter is durable in the dead-letter topic; record the message as done for this group.</summary>
    internal async Task CompleteDeadLetterAsync(DeadLetter deadLetter)
    {
        long offset = deadLetter.Message.Location.Offset;
        GroupRecord record;
        bool turnPassed;
        lock (_gate)
        {
            _state.CompleteDeadLetter(offset, Now());
            turnPassed = _state.TakeTurnPassed();
            record = GroupRecord.Acknowledged(Name, _state.AckFloor, _state.FloorAddress, [offset]);
        }
        if (turnPassed)
            AfterFailures();
        await _store.AppendAsync(record, _writer).ConfigureAwait(false);
        NoteDurable(record);
    }
}
