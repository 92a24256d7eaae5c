using Broker.Storage.Errors;
using Broker.Storage.Logs;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Topics;

/// <summary>
/// Scheduled delivery for one topic. A message published with a delivery time is appended at once as a
/// <em>scheduled record</em> (durable before its publish is answered, with the offset the publish returns); every
/// group's reader passes over scheduled records. At its time the record's <em>due copy</em> is appended at the end of
/// the log, carrying the record's offset, and every group delivers that copy like any new message.
/// <para>The index: one 24-byte struct per pending record (deliver-at, offset, address) in a heap ordered by time, so a
/// million scheduled messages cost about 24 MiB and no object each; the messages themselves stay on disk in the log.
/// One timer, armed for the earliest time, fires them: an idle schedule costs no CPU.</para>
/// <para>Records due soon (within <see cref="KeepHorizon"/> of their append) are also kept in memory, up to
/// <see cref="KeptBudgetBytes"/>, so that firing them needs no read from the log: a read of a record appended a second
/// ago is a disk read and two thread-pool hops each, which made a scheduled message cost as much as ten plain ones
/// (docs/perf.md, W9). A record not kept is read from the log when it fires, as every one was before.</para>
/// <para>Exactly once: a record stays pending until its copy is durable (a crash before that fires it again after the
/// restart), and the copy names its record, so the scan that rebuilds the index at the start sees both and drops the
/// record. That scan reads the log from <c>schedule.json</c>'s address: written durably before the topic's first
/// scheduled record, then moved up (never past a pending record) as records fire. A pending record also holds
/// retention back: the log is never truncated at or past it.</para>
/// </summary>
internal sealed partial class DeliverySchedule : IAsyncDisposable
{
    private const string FileName = "schedule.json";

    // A wall clock set back, or a timer limit, must not leave the timer silent: re-check at least this often.
    private static readonly TimeSpan MaxTimerWait = TimeSpan.FromHours(1);
    private static readonly TimeSpan FailedRunRetry = TimeSpan.FromSeconds(1);
    // What _armedFor holds while the timer waits to retry a failed run (no deliver-at time is this low).
    private const long RetryArmed = long.MinValue;

    private readonly Topic _topic;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly ScheduleHeap _pending = new();
    // The records of the run in progress, taken out of _pending: until their copies are durable they still hold the
    // log (a truncation past them would leave nothing to copy), and a failed run puts them back.
    private List<PendingRecord> _firing = [];
    private readonly ITimer _timer;
    private readonly SemaphoreSlim _oneRun = new(1, 1);
    private readonly CancellationTokenSource _closing = new();
    private long? _armedFor;
    private readonly ScanStart _scanStart;
    // Records due soon, encoded as in the log, by offset; guarded by _gate.
    private readonly EntryArena _kept = new(KeptBudgetBytes);
    private readonly Dictionary<long, ArenaEntry> _keptByOffset = [];

    /// <summary>Records due at most this long after their append are kept in memory (within the budget).</summary>
    internal static readonly TimeSpan KeepHorizon = TimeSpan.FromSeconds(10);

    /// <summary>Bytes of soon-due records a topic keeps in memory.</summary>
    internal const long KeptBudgetBytes = 32 << 20;

    private DeliverySchedule(Topic topic, TimeProvider time, ILogger logger, ScanStart scanStart)
    {
        _topic = topic;
        _time = time;
        _logger = logger;
        _scanStart = scanStart;
        _timer = time.CreateTimer(static schedule => ((DeliverySchedule)schedule!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Scheduled messages not yet due (or due and not yet copied).</summary>
    public int PendingCount
    {
        get
        {
            lock (_gate)
                return _pending.Count + _firing.Count;
        }
    }

    /// <summary>
    /// Opens the topic's schedule: when the topic ever had a scheduled message, rebuilds the index from the log (from
    /// the persisted scan address to the durable end) and arms the timer; records already due fire at once.
    /// </summary>
    public static async Task<DeliverySchedule> OpenAsync(Topic topic, TimeProvider time, CancellationToken cancellationToken)
    {
        var logger = topic.LoggerFactory.CreateLogger<DeliverySchedule>();
        var scanStart = ScanStart.Open(topic.Directory, FileName, time);
        var schedule = new DeliverySchedule(topic, time, logger, scanStart);
        if (scanStart.Address is long from)
        {
            var pending = new Dictionary<long, (long Address, long DeliverAt)>();
            var log = topic.Log;
            await foreach (var (entry, length, address) in log.ReadRangeAsync(Math.Max(from, log.BeginAddress), log.Durable.Address,
                topic.ReportDamage, cancellationToken).ConfigureAwait(false))
            {
                if (!MessageEntryFormat.TryReadSchedule(entry.AsSpan(0, length), out long offset, out var entrySchedule))
                    continue;
                if (entrySchedule.Kind == MessageEntryFormat.ScheduledRecord)
                    pending[offset] = (address, entrySchedule.DeliverAtUnixMs);
                else if (entrySchedule.Kind == MessageEntryFormat.DueCopy)
                    pending.Remove(entrySchedule.RecordOffset);
            }
            // Sized once: growing by doubling would leave a trail of large arrays for the GC after a big schedule.
            schedule._pending.EnsureCapacity(pending.Count);
            foreach (var (offset, (address, deliverAt)) in pending)
                schedule._pending.Push(new PendingRecord(deliverAt, offset, address));
            if (pending.Count > 0)
                Events.Recovered(logger, topic.Name, pending.Count);
            schedule.Arm();
        }
        return schedule;
    }

    /// <summary>
    /// Before the topic's first scheduled record is appended: writes <c>schedule.json</c> durably, so the scan at the
    /// next start looks for records (it starts below any record appended from now on).
    /// </summary>
    public void EnsureEnabled() => _scanStart.EnsureWritten(_topic.Log.TailAddress);

    /// <summary>
    /// A scheduled record was enqueued (called under the log's append lock, so a durable record is always indexed):
    /// indexed, and kept in memory when it is due soon (<paramref name="message"/> is encoded again for that).
    /// </summary>
    public void Add(long offset, long address, in AppendMessage message, in EntrySchedule schedule, int encodedLength, long appendTimeUnixMs)
    {
        lock (_gate)
        {
            _pending.Push(new PendingRecord(schedule.DeliverAtUnixMs, offset, address));
            if (schedule.DeliverAtUnixMs - appendTimeUnixMs <= KeepHorizon.TotalMilliseconds
                && _kept.TryReserve(encodedLength, out var kept, out var space))
            {
                MessageEntryFormat.Encode(space, message, schedule, offset, appendTimeUnixMs);
                _keptByOffset[offset] = kept;
            }
        }
    }

    /// <summary>
    /// The lowest log address a pending record may have, given the durable end read before: retention keeps everything
    /// from there, and the scan at the next start begins there. Reads the durable end first, then the index: a record
    /// below that end was indexed when it was enqueued.
    /// </summary>
    public long LowestPendingAddress()
    {
        long lowest = _topic.Log.Durable.Address;
        lock (_gate)
        {
            lowest = _pending.LowestAddress(lowest);
            foreach (var record in _firing)
                lowest = Math.Min(lowest, record.Address);
        }
        return lowest;
    }

    /// <summary>Run by topic maintenance: the kept records' arena lets go of the memory it did not use since the last run.</summary>
    public void TrimUnusedMemory()
    {
        lock (_gate)
            _kept.TrimUnusedFree();
    }

    /// <summary>
    /// A purge dropped every message below <paramref name="address"/>: scheduled records there are dropped too, and
    /// durably so (the scan at the next start begins at <paramref name="address"/>), before the log is truncated.
    /// </summary>
    public async Task DropBelowAsync(long address)
    {
        await _oneRun.WaitAsync().ConfigureAwait(false);
        try
        {
            lock (_gate)
            {
                var kept = _pending.Unordered().Where(record => record.Address >= address).ToList();
                _pending.Clear();
                foreach (var record in kept)
                    _pending.Push(record);
                _armedFor = null;
                // What stays pending is read from the log when it fires.
                _kept.Clear();
                _keptByOffset.Clear();
            }
            _scanStart.MoveUp(address);
        }
        finally
        {
            _oneRun.Release();
        }
        Arm();
    }

    /// <summary>Arms the timer for the earliest pending record, when that changed.</summary>
    public void Arm()
    {
        lock (_gate)
        {
            if (_closing.IsCancellationRequested || !_pending.TryPeek(out var earliest) || _armedFor == earliest.DeliverAtUnixMs)
                return;
            _armedFor = earliest.DeliverAtUnixMs;
            long waitMs = Math.Max(0, earliest.DeliverAtUnixMs - _time.GetUtcNow().ToUnixTimeMilliseconds());
            _timer.Change(TimeSpan.FromMilliseconds(Math.Min(waitMs, MaxTimerWait.TotalMilliseconds)), Timeout.InfiniteTimeSpan);
        }
    }

    private void OnTimer()
    {
        lock (_gate)
            _armedFor = null;
        _ = FireDueAsync();
    }

    /// <summary>
    /// Appends the due copies of every record whose time has come, a batch at a time, and takes each record out of the
    /// index once its copy is durable. One run at a time; a failed append leaves the records pending (the next timer,
    /// or the next start, fires them).
    /// </summary>
    internal async Task FireDueAsync()
    {
        if (!await _oneRun.WaitAsync(0).ConfigureAwait(false))
            return;
        bool failed = false;
        try
        {
            while (!_closing.IsCancellationRequested && !_topic.StorageFailed)
            {
                var due = TakeDue(_topic.MaxBatchMessages);
                if (due.Count == 0)
                    break;
                bool appended = false;
                try
                {
                    appended = await TryAppendCopiesAsync(due).ConfigureAwait(false);
                }
                finally
                {
                    // Only now do the records leave the index: pending again after a failure (or an exception), done
                    // once their copies are durable.
                    lock (_gate)
                    {
                        if (!appended)
                        {
                            foreach (var record in due)
                                _pending.Push(record);
                        }
                        _firing = [];
                    }
                }
                if (!appended)
                {
                    failed = true;
                    break;
                }
            }
            _scanStart.MoveUpWhenDue(LowestPendingAddress);
        }
        catch (Exception error)
        {
            // A background run: nothing above it would see the error. What did not fire stays pending.
            Events.FireFailed(_logger, _topic.Name, error);
            failed = true;
        }
        finally
        {
            _oneRun.Release();
        }
        if (failed)
            RetryLater();
        else
            Arm();
    }

    // After a failed run the earliest record is already due: wait a little rather than spin on a failing log.
    private void RetryLater()
    {
        lock (_gate)
        {
            if (_closing.IsCancellationRequested)
                return;
            _armedFor = RetryArmed;
            _timer.Change(FailedRunRetry, Timeout.InfiniteTimeSpan);
        }
    }

    private List<PendingRecord> TakeDue(int max)
    {
        var due = new List<PendingRecord>();
        long now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        lock (_gate)
        {
            while (due.Count < max && _pending.TryPeek(out var earliest) && earliest.DeliverAtUnixMs <= now)
                due.Add(_pending.Pop());
            _firing = due;
        }
        return due;
    }

    private async Task<bool> TryAppendCopiesAsync(List<PendingRecord> due)
    {
        var copies = new List<(AppendMessage Message, EntrySchedule Schedule)>(due.Count);
        var fromMemory = new List<ArenaEntry>();
        try
        {
            // A record may come due before its own commit (a delay shorter than the commit takes, or a clock that
            // jumped): the log cannot be read there yet, and reading would find nothing and lose the message.
            await _topic.Log.WaitForDurableAsync(due.Max(record => record.Address) + 1).ConfigureAwait(false);
            foreach (var (deliverAt, offset, address) in due)
            {
                var record = TakeKept(offset, fromMemory) ?? await _topic.TryReadAsync(address, CancellationToken.None).ConfigureAwait(false);
                if (record is null || record.Offset != offset)
                {
                    // Damaged on disk since it was appended (the damage is reported by the read): it cannot be delivered.
                    Events.RecordLost(_logger, _topic.Name, offset, address);
                    continue;
                }
                copies.Add((new AppendMessage(record.Key, record.Headers, record.Payload),
                    EntrySchedule.Copy(offset, record.PublishTimeUnixMs, deliverAt)));
            }
            if (copies.Count == 0)
                return true;
            Task durable;
            try
            {
                // The copies are encoded into the log before this returns: the kept records' memory may go after it.
                durable = _topic.AppendDueCopiesAsync(copies);
            }
            finally
            {
                ReleaseKept(fromMemory);
            }
            await durable.ConfigureAwait(false);
            return true;
        }
        catch (BrokerException error)
        {
            if (!_closing.IsCancellationRequested)
                Events.FireFailed(_logger, _topic.Name, error);
            return false;
        }
        finally
        {
            // A run that failed before its append: the records stay pending and are read from the log next time.
            ReleaseKept(fromMemory);
        }
    }

    // A record kept in memory, decoded in place (its memory stays until ReleaseKept); null when it was not kept.
    private StoredMessage? TakeKept(long offset, List<ArenaEntry> fromMemory)
    {
        ReadOnlyMemory<byte> entry;
        lock (_gate)
        {
            if (!_keptByOffset.Remove(offset, out var kept))
                return null;
            fromMemory.Add(kept);
            entry = _kept.GetMemory(kept);
        }
        return MessageEntryFormat.TryDecode(entry, out var record) ? record : null;
    }

    private void ReleaseKept(List<ArenaEntry> fromMemory)
    {
        if (fromMemory.Count == 0)
            return;
        lock (_gate)
        {
            foreach (var kept in fromMemory)
                _kept.Release(kept);
        }
        fromMemory.Clear();
    }

    /// <summary>Stops the timer and waits for a firing run to end; pending records stay in the log for the next start.</summary>
    public async ValueTask DisposeAsync()
    {
        _closing.Cancel();
        await _timer.DisposeAsync().ConfigureAwait(false);
        await _oneRun.WaitAsync().ConfigureAwait(false);
        _oneRun.Release();
    }

    private static partial class Events
    {
        [LoggerMessage(EventId = 3010, Level = LogLevel.Information, Message = "Topic {Topic}: {Count} scheduled messages wait for their time")]
        public static partial void Recovered(ILogger logger, string topic, int count);

        [LoggerMessage(EventId = 3011, Level = LogLevel.Warning, Message = "Topic {Topic}: due scheduled messages could not be appended; they stay pending and are tried again")]
        public static partial void FireFailed(ILogger logger, string topic, Exception error);

        [LoggerMessage(EventId = 3012, Level = LogLevel.Error, Message = "Topic {Topic}: the scheduled message at offset {Offset} (address {Address}) is unreadable (damaged on disk) and cannot be delivered")]
        public static partial void RecordLost(ILogger logger, string topic, long offset, long address);
    }
}
