using System.Collections.Concurrent;
using System.Diagnostics;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Logs;
using Broker.Storage.Telemetry;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Topics;

/// <summary>
/// One topic: an append-only log of messages with sequential offsets (FasterLog under
/// <c>topics/&lt;name&gt;/log</c>) and the durable state of its consumer groups (<c>topics/&lt;name&gt;/groups</c>).
/// <para>Durability: <see cref="AppendAsync"/> returns only after the commit (fsync) covering every message of the
/// batch has completed. A batch is atomic: it is appended under one lock and no commit can split it, so after a
/// crash a batch is either wholly in the log or not at all. Only durable messages are ever delivered.</para>
/// </summary>
public sealed partial class Topic : IAsyncDisposable
{
    private readonly StorageOptions _options;
    private readonly GroupStateStore _groupStore;
    private readonly ConcurrentDictionary<string, ConsumerGroup> _groups = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _groupCreation = new(1, 1);
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _closing;
    private readonly TimeProvider _time;
    private readonly TopicStore _store;
    private readonly ILogger _logger;
    // Set once in OpenAsync, before the topic is handed out.
    private DeliverySchedule _schedule = null!;
    private DeduplicationWindow _deduplication = null!;

    private Topic(string name, string directory, TopicLayout layout, DurableLog log, GroupStateStore groupStore, StorageOptions options,
        TimeProvider time, TopicStore store)
    {
        Layout = layout;
        Name = name;
        Directory = directory;
        Log = log;
        _groupStore = groupStore;
        _options = options;
        _time = time;
        _store = store;
        _logger = store.LoggerFactory.CreateLogger<Topic>();
        _closing = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token, log.Failed, groupStore.Failed);
    }

    /// <summary>The topic's name.</summary>
    public string Name { get; }

    internal string Directory { get; }

    internal DurableLog Log { get; }

    internal TopicLayout Layout { get; }

    internal int MaxBatchMessages => _options.MaxBatchMessages;

    internal int MaxWaitingForTurn => _options.MaxWaitingForTurn;

    /// <summary>Scheduled messages waiting for their time.</summary>
    public int ScheduledCount => _schedule.PendingCount;

    /// <summary>Message ids in the deduplication window.</summary>
    public int DeduplicationIdCount => _deduplication.Count;

    internal ILoggerFactory LoggerFactory => _store.LoggerFactory;

    /// <summary>Cancelled when the topic closes (deletion, shutdown) or its storage has failed.</summary>
    public CancellationToken Closing => _closing.Token;

    /// <summary>True once a device error has put the message log or the group-state log in its failed state.</summary>
    public bool StorageFailed => Log.HasFailed || _groupStore.HasFailed;

    /// <summary>Why the topic's storage failed, as callers are told (null while it has not).</summary>
    public BrokerException? StorageFailure => Log.Failure ?? _groupStore.Failure;

    /// <summary>The offset the next message will get; every offset below it is durable.</summary>
    public long NextOffset => Log.Durable.Cookie;

    internal static async Task<Topic> OpenAsync(string name, string directory, TopicLayout layout, StorageOptions options, StoreDisk disk,
        TimeProvider time, TopicStore store, CancellationToken cancellationToken)
    {
        var log = DurableLog.Open(Path.Combine(directory, "log"), layout.LogGeometry, disk);
        GroupStateStore? groupStore = null;
        try
        {
            (groupStore, var recovered) = await GroupStateStore.OpenAsync(
                Path.Combine(directory, "groups"), layout.GroupStateGeometry, disk, name, store.LoggerFactory.CreateLogger<GroupStateStore>(),
                cancellationToken).ConfigureAwait(false);
            var topic = new Topic(name, directory, layout, log, groupStore, options, time, store);
            await topic.ReconcileLogEndAsync(recovered.Values).ConfigureAwait(false);
            topic._schedule = await DeliverySchedule.OpenAsync(topic, time, cancellationToken).ConfigureAwait(false);
            topic._deduplication = await DeduplicationWindow.OpenAsync(topic, options, time, cancellationToken).ConfigureAwait(false);
            foreach (var group in recovered.Values)
            {
                if (group.FloorAddress < log.BeginAddress)
                    await topic.RepairFloorBelowLogAsync(group, cancellationToken).ConfigureAwait(false);
                topic.AddGroup(group.Name, group.Policy, group.AckFloor, group.FloorAddress, group.AcknowledgedAboveFloor, group.Attempts,
                    group.LiveTimers);
            }
            return topic;
        }
        catch
        {
            // A repair that could not be written (a full disk, for one) fails the open: close both logs again.
            if (groupStore is not null)
                await groupStore.DisposeAsync().ConfigureAwait(false);
            await log.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Appends a batch, all or nothing, and returns once it is durable. The batch is checked whole before anything
    /// is written: one bad message rejects the batch. <paramref name="trusted"/> appends (dead letters, redrive) may
    /// exceed the message size limit by the headers the broker adds, and may use <see cref="ReservedHeaders"/>.
    /// A message with a delivery time in the future (<see cref="AppendMessage.DeliverAtUnixMs"/>,
    /// <see cref="AppendMessage.Delay"/>) is appended as a scheduled record: durable like the others when this returns,
    /// delivered to every group at its time (see <see cref="DeliverySchedule"/>). A message whose
    /// <see cref="AppendMessage.MessageId"/> is in the topic's deduplication window stores nothing: the result names it
    /// with the offset of the message first published with that id (see <see cref="DeduplicationWindow"/>).
    /// </summary>
    public Task<AppendResult> AppendAsync(IReadOnlyList<AppendMessage> batch, bool trusted = false)
    {
        if (batch.Count == 0)
            Throw.Broker(BrokerErrorCode.EmptyBatch, "a publish must carry at least one message");
        if (batch.Count > _options.MaxBatchMessages)
            Throw.Broker(BrokerErrorCode.BatchTooLarge, $"a batch holds at most {_options.MaxBatchMessages} messages; this one has {batch.Count}");
        long publishTime = _time.GetUtcNow().ToUnixTimeMilliseconds();
        int limit = trusted ? _options.MaxMessageBytes + StorageOptions.TrustedHeadroomBytes : _options.MaxMessageBytes;
        var entries = new AppendEntry[batch.Count];
        bool scheduled = false, identified = false;
        for (int i = 0; i < batch.Count; i++)
        {
            var schedule = CheckedSchedule(batch[i], i, publishTime);
            scheduled |= schedule.Kind == MessageEntryFormat.ScheduledRecord;
            CheckHeaders(batch[i], i, trusted);
            var (message, id) = WithReservedHeaders(batch[i], i);
            identified |= id is not null;
            entries[i] = new AppendEntry(message, schedule, CheckedEncodedLength(message, schedule.Kind, i, limit), id);
        }
        if (_stopping.IsCancellationRequested)
            Throw.Broker(BrokerErrorCode.ShuttingDown, $"topic '{Name}' is closing");
        if (scheduled)
            _schedule.EnsureEnabled();
        if (identified)
        {
            _deduplication.EnsureEnabled();
            // Outside the append lock, which every publish of the topic waits for: the window's lines are loaded before
            // it is taken, and the window is brought back to its capacity after it is released.
            for (int i = 0; i < entries.Length; i += IdPrefetchBatch)
                PrefetchIds(entries.AsSpan(i, Math.Min(IdPrefetchBatch, entries.Length - i)), _deduplication);
        }
        var (firstOffset, stored, end, duplicates) = AppendEntries(entries, publishTime);
        if (identified)
            _deduplication.EvictOverCapacity();
        if (scheduled)
            _schedule.Arm();
        // A batch of duplicates only still waits for the log's durable end: the messages it names may not be durable yet.
        return WaitDurableAsync(new AppendResult(firstOffset, stored) { Duplicates = (IReadOnlyList<(int, long)>?)duplicates ?? [] }, end, Stopwatch.GetTimestamp());
    }

    /// <summary>
    /// The message with its id and priority as reserved headers (when it has them), and the id's key in the
    /// deduplication window.
    /// </summary>
    private static (AppendMessage Message, UInt128? Id) WithReservedHeaders(in AppendMessage message, int index)
    {
        if (message.MessageId is null && message.Priority == 0)
            return (message, null);
        if (message.Priority is < 0 or > 255)
            Throw.Broker(BrokerErrorCode.InvalidRequest, $"message {index}: a priority must be between 0 and 255");
        var headers = new KeyValuePair<string, string>[message.Headers.Count + (message.MessageId is null ? 0 : 1) + (message.Priority == 0 ? 0 : 1)];
        int count = 0;
        for (; count < message.Headers.Count; count++)
            headers[count] = message.Headers[count];
        UInt128? key = null;
        if (message.MessageId is { } id)
        {
            int bytes = System.Text.Encoding.UTF8.GetByteCount(id);
            if (bytes is 0 or > StorageOptions.MaxMessageIdBytes || HasControlCharacter(id))
            {
                Throw.Broker(BrokerErrorCode.InvalidRequest,
                    $"message {index}: a message id must be 1 to {StorageOptions.MaxMessageIdBytes} UTF-8 bytes without control characters");
            }
            headers[count++] = new(ReservedHeaders.MessageId, id);
            key = DeduplicationWindow.Hash(id);
        }
        if (message.Priority != 0)
            headers[count] = new(ReservedHeaders.Priority, ReservedHeaders.PriorityText(message.Priority));
        return (message with { Headers = headers }, key);
    }

    /// <summary>The schedule's due copies, as one batch; returns once they are durable.</summary>
    internal Task AppendDueCopiesAsync(IReadOnlyList<(AppendMessage Message, EntrySchedule Schedule)> copies)
    {
        long now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var entries = new AppendEntry[copies.Count];
        for (int i = 0; i < copies.Count; i++)
            entries[i] = new AppendEntry(copies[i].Message, copies[i].Schedule, MessageEntryFormat.GetEncodedLength(copies[i].Message, MessageEntryFormat.DueCopy), null);
        var (_, _, end, _) = AppendEntries(entries, now);
        return Log.WaitForDurableAsync(end);
    }

    /// <summary>One message ready to append: its entry kind, encoded length, and its id's key when it has one.</summary>
    private readonly record struct AppendEntry(AppendMessage Message, EntrySchedule Schedule, int Length, UInt128? Id);

    // Under the log's append lock: offsets follow each other, a scheduled record is indexed before it can be durable,
    // and of two publishes with one id (in one batch or racing) exactly one is stored.
    private (long FirstOffset, int Stored, long End, List<(int Index, long Offset)>? Duplicates) AppendEntries(AppendEntry[] entries, long appendTime) =>
        Log.Append((entries, appendTime, _schedule, _deduplication), static (state, ref scope) =>
        {
            long first = scope.Cookie;
            long next = first;
            List<(int Index, long Offset)>? duplicates = null;
            for (int i = 0; i < state.entries.Length; i++)
            {
                var (message, schedule, length, id) = state.entries[i];
                if (id is { } key && state._deduplication.TryGetOffset(key, state.appendTime, out long original))
                {
                    (duplicates ??= []).Add((i, original));
                    continue;
                }
                long address = scope.Enqueue(new MessageLogEntry(message, schedule, length, next, state.appendTime));
                if (schedule.Kind == MessageEntryFormat.ScheduledRecord)
                    state._schedule.Add(next, address, message, schedule, length, state.appendTime);
                if (id is { } added)
                    state._deduplication.Add(added, next, address, state.appendTime);
                next++;
            }
            scope.Cookie = next;
            return (first, (int)(next - first), scope.TailAddress, duplicates);
        });

    // Ids whose window lines are loaded ahead at once (a batch of misses that overlap, instead of one miss after another).
    private const int IdPrefetchBatch = 64;

    private static void PrefetchIds(ReadOnlySpan<AppendEntry> entries, DeduplicationWindow window)
    {
        Span<UInt128> ids = stackalloc UInt128[IdPrefetchBatch];
        int count = 0;
        foreach (var entry in entries)
        {
            if (entry.Id is { } id)
                ids[count++] = id;
        }
        if (count > 0)
            window.Prefetch(ids[..count]);
    }

    /// <summary>How a message is appended: plain, or a scheduled record when its delivery time lies after the append.</summary>
    private static EntrySchedule CheckedSchedule(in AppendMessage message, int index, long publishTime)
    {
        if (message.DeliverAtUnixMs == 0 && message.Delay == TimeSpan.Zero)
            return EntrySchedule.None;
        if (message.DeliverAtUnixMs != 0 && message.Delay != TimeSpan.Zero)
            Throw.Broker(BrokerErrorCode.InvalidRequest, $"message {index}: give a delay or a delivery time, not both");
        if (message.Delay < TimeSpan.Zero || message.DeliverAtUnixMs < 0)
            Throw.Broker(BrokerErrorCode.InvalidRequest, $"message {index}: a delay or delivery time must not be negative");
        long horizon = publishTime + (long)StorageOptions.MaxScheduleHorizon.TotalMilliseconds;
        long deliverAt = message.DeliverAtUnixMs != 0
            ? message.DeliverAtUnixMs
            : publishTime + (long)Math.Min(message.Delay.TotalMilliseconds, StorageOptions.MaxScheduleHorizon.TotalMilliseconds + 1);
        if (deliverAt > horizon)
        {
            Throw.Broker(BrokerErrorCode.InvalidRequest,
                $"message {index}: a delivery time may lie at most {StorageOptions.MaxScheduleHorizon.TotalDays:0} days ahead");
        }
        return deliverAt > publishTime ? EntrySchedule.Record(deliverAt) : EntrySchedule.None;
    }

    private async Task<AppendResult> WaitDurableAsync(AppendResult result, long end, long appendedAt)
    {
        await Log.WaitForDurableAsync(end).ConfigureAwait(false);
        StorageInstruments.RecordPublishCommit(Name, appendedAt);
        return result;
    }

    private static void CheckHeaders(in AppendMessage message, int index, bool trusted)
    {
        for (int i = 0; i < message.Headers.Count; i++)
        {
            var header = message.Headers[i];
            if (string.IsNullOrEmpty(header.Key))
                Throw.Broker(BrokerErrorCode.InvalidRequest, $"message {index}: header names must not be empty");
            if (!trusted && ReservedHeaders.IsReserved(header.Key))
                Throw.Broker(BrokerErrorCode.InvalidRequest, $"message {index}: header names starting with '{ReservedHeaders.Prefix}' are reserved for the broker");
        }
    }

    private static bool HasControlCharacter(string text)
    {
        foreach (char c in text)
        {
            if (char.IsControl(c))
                return true;
        }
        return false;
    }

    private static int CheckedEncodedLength(in AppendMessage message, byte kind, int index, int limit)
    {
        if (message.Headers.Count > MessageEntryFormat.MaxHeaders)
            Throw.Broker(BrokerErrorCode.InvalidRequest, $"message {index} has {message.Headers.Count} headers; at most {MessageEntryFormat.MaxHeaders} are allowed");
        int length = MessageEntryFormat.GetEncodedLength(message, kind);
        int size = length - MessageEntryFormat.FixedPartLength - MessageEntryFormat.ExtensionLength(kind);
        if (length < 0 || size > limit)
        {
            Throw.Broker(BrokerErrorCode.MessageTooLarge,
                $"message {index} is {(length < 0 ? "over 2 GiB" : size + " bytes")}; the limit is {limit} bytes (key + payload + headers)");
        }
        return length;
    }

    /// <summary>
    /// The message log may recover to an earlier end than its groups have seen: FASTER's recovery stops at the first
    /// damaged entry within its last commits and drops the commits after it (docs/semantics.md). Those messages are
    /// gone; say so, and never hand their offsets out again (the group state still holds acks for them, which would
    /// silently swallow new messages): the next message gets the first offset no group has seen, and a group whose
    /// floor lies past the log's end reads on from the end. Its reader then counts the gap as lost offsets.
    /// </summary>
    private async Task ReconcileLogEndAsync(IEnumerable<RecoveredGroup> groups)
    {
        var end = Log.Durable;
        long seen = groups.Select(g => g.EndOffset).DefaultIfEmpty(0).Max();
        if (seen > end.Cookie)
        {
            Events.LogEndBehindGroups(_logger, Name, end.Cookie, seen);
            Log.AdvanceCookie(seen);
        }
        foreach (var group in groups)
        {
            // Written durably: the records before would otherwise bring back the floor's old address, past the end.
            if (group.FloorAddress > end.Address)
            {
                group.MoveFloor(group.AckFloor, end.Address);
                await PersistRepairAsync(group).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// A group whose durable floor lies below the log's begin address would scan from a position that no longer
    /// exists and never let the log be truncated again. The messages between its floor and the oldest one stored are
    /// gone (a broker before durable-floor truncation could truncate below acks that were not yet durable, and a
    /// damaged group-state log can lose records): say how many, and move the group durably to the oldest message.
    /// </summary>
    private async Task RepairFloorBelowLogAsync(RecoveredGroup group, CancellationToken cancellationToken)
    {
        var (first, firstAddress) = await FindAsync(_ => true, cancellationToken).ConfigureAwait(false);
        long lost = Math.Max(0, first - group.AckFloor - group.AcknowledgedAboveFloor.Count(offset => offset < first));
        Events.GroupFloorBelowLog(_logger, Name, group.Name, group.AckFloor, first, lost);
        group.MoveFloor(first, firstAddress);
        await PersistRepairAsync(group).ConfigureAwait(false);
    }

    /// <summary>A group repaired at recovery, written as a snapshot (which replaces its earlier records) and waited for.</summary>
    private Task PersistRepairAsync(RecoveredGroup group) =>
        _groupStore.AppendAsync(GroupRecord.Snapshot(group.Name, group.AckFloor, group.FloorAddress, group.Policy,
            group.AcknowledgedAboveFloor, [.. group.Attempts.Select(a => new AttemptCount(a.Key, a.Value))], [.. group.LiveTimers]));

    /// <summary>Reads the message at a log address.</summary>
    internal async Task<StoredMessage> ReadAsync(long address, CancellationToken cancellationToken) =>
        await TryReadAsync(address, cancellationToken).ConfigureAwait(false)
        ?? throw new BrokerException(BrokerErrorCode.StorageFailure, $"topic '{Name}': unreadable entry at address {address}");

    /// <summary>
    /// Reads the message at a log address; null when no whole, intact entry starts there any more (its page was
    /// damaged on disk after it was first read, and the damage reported, or the log was truncated past it).
    /// </summary>
    internal async Task<StoredMessage?> TryReadAsync(long address, CancellationToken cancellationToken)
    {
        var entry = await Log.ReadAsync(address, cancellationToken).ConfigureAwait(false);
        return entry is not null && MessageEntryFormat.TryDecode(entry, out var message) ? message : null;
    }

    /// <summary>The offset of the oldest message still stored (<see cref="NextOffset"/> when the topic is empty).</summary>
    public async Task<long> GetFirstOffsetAsync(CancellationToken cancellationToken)
    {
        var (offset, _) = await FindAsync(_ => true, cancellationToken).ConfigureAwait(false);
        return offset;
    }

    /// <summary>
    /// The first durable message that satisfies <paramref name="stopAt"/>, scanning from the oldest, as (offset,
    /// address); the end of the log when none does.
    /// </summary>
    internal async Task<(long Offset, long Address)> FindAsync(Func<StoredMessage, bool> stopAt, CancellationToken cancellationToken)
    {
        var durable = Log.Durable;
        await foreach (var (entry, length, address) in Log.ReadRangeAsync(Log.BeginAddress, durable.Address, ReportDamage, cancellationToken).ConfigureAwait(false))
        {
            if (MessageEntryFormat.TryDecode(entry.AsMemory(0, length), out var message) && stopAt(message!))
                return (message!.Offset, address);
        }
        return (durable.Cookie, durable.Address);
    }

    /// <summary>A reader of the message log from <paramref name="beginAddress"/> on that skips and reports damaged entries.</summary>
    internal LogReader ScanMessages(long beginAddress) => Log.Scan(beginAddress, ReportDamage);

    /// <summary>
    /// Reports entries of the message log a reader skipped because FASTER found them damaged; every reader that meets
    /// the damage reports it (each group, each scan for a start or for Describe), so it cannot go unnoticed.
    /// </summary>
    internal void ReportDamage(LogDamage damage)
    {
        int segmentBits = Layout.LogGeometry.SegmentSizeBits;
        Events.LogDamaged(_logger, Name, "message", damage.FromAddress, damage.ResumeAddress, damage.FromAddress >> segmentBits,
            damage.FromAddress & ((1L << segmentBits) - 1), damage.Reason);
    }

    /// <summary>A group's reader found offsets missing where damaged entries were skipped; the group counts them as gone.</summary>
    internal void ReportLostOffsets(string group, long fromOffset, long toOffset) =>
        Events.OffsetsLostToDamage(_logger, Name, group, fromOffset, toOffset - 1, toOffset - fromOffset);

    /// <summary>
    /// The numbers kept in memory, at once and without I/O (for metrics): first offset and the oldest unacknowledged
    /// message's time are left out (-1 and null), since finding them reads the log.
    /// </summary>
    internal TopicInfo DescribeInMemory()
    {
        long next = NextOffset;
        var groups = _groups.Values.OrderBy(g => g.Name, StringComparer.Ordinal).Select(g => g.Describe(next, null)).ToList();
        return new TopicInfo(Name, -1, next, Math.Max(0, Log.Durable.Address - Log.BeginAddress), groups, _store.RetentionOf(Name))
        {
            ScheduledCount = ScheduledCount,
        };
    }

    /// <summary>Numbers for Describe.</summary>
    public async Task<TopicInfo> DescribeAsync(CancellationToken cancellationToken)
    {
        long next = NextOffset;
        long first = await GetFirstOffsetAsync(cancellationToken).ConfigureAwait(false);
        var groups = new List<GroupInfo>();
        foreach (var group in _groups.Values.OrderBy(g => g.Name, StringComparer.Ordinal))
        {
            var (floor, floorAddress) = group.Floor();
            long? oldest = null;
            if (floor < next)
            {
                try
                {
                    oldest = (await ReadAsync(floorAddress, cancellationToken).ConfigureAwait(false)).PublishTimeUnixMs;
                }
                catch (BrokerException)
                {
                    // The floor moved on (and the log was truncated) while we looked: no unacked message there.
                }
            }
            groups.Add(group.Describe(next, oldest));
        }
        return new TopicInfo(Name, first, next, Math.Max(0, Log.Durable.Address - Log.BeginAddress), groups, _store.RetentionOf(Name))
        {
            ScheduledCount = ScheduledCount,
        };
    }

    /// <summary>For crash tests: the next dispose closes both logs without their final commits.</summary>
    internal void AbandonOnDispose()
    {
        Log.AbandonOnDispose();
        _groupStore.AbandonOnDispose();
    }

    /// <summary>Stops consumers, commits what was appended and closes the files.</summary>
    public async ValueTask DisposeAsync()
    {
        _stopping.Cancel();
        // Before the log closes: a firing run appends to it.
        if (_schedule is not null)
            await _schedule.DisposeAsync().ConfigureAwait(false);
        foreach (var group in _groups.Values)
            await group.CloseAsync().ConfigureAwait(false);
        await _groupStore.DisposeAsync().ConfigureAwait(false);
        await Log.DisposeAsync().ConfigureAwait(false);
        // The cancellation sources stay undisposed: calls still holding this topic read Closing after it closed.
    }
}

public sealed partial class Topic
{
    private static partial class Events
    {
        [LoggerMessage(EventId = 3005, Level = LogLevel.Error,
            Message = "Topic {Topic}: its message log recovered to offset {RecoveredEnd}, but its groups had seen offsets up to {SeenEnd}: the messages in between were lost (damage within the log's last commits). New messages start at offset {SeenEnd}.")]
        public static partial void LogEndBehindGroups(ILogger logger, string topic, long recoveredEnd, long seenEnd);

        [LoggerMessage(EventId = 3001, Level = LogLevel.Warning,
            Message = "Topic {Topic}, group {Group}: its durable ack floor {Floor} lies below the oldest stored message {FirstOffset}; {Lost} messages it never acknowledged were truncated and are gone. The group moves on to offset {FirstOffset}.")]
        public static partial void GroupFloorBelowLog(ILogger logger, string topic, string group, long floor, long firstOffset, long lost);

        [LoggerMessage(EventId = 3004, Level = LogLevel.Error,
            Message = "Topic {Topic}, group {Group}: offsets {FromOffset} to {ToOffset} ({Count} messages) were in damaged entries of the message log and are gone; the group will never deliver them and moves past them")]
        public static partial void OffsetsLostToDamage(ILogger logger, string topic, string group, long fromOffset, long toOffset, long count);

        [LoggerMessage(EventId = 3002, Level = LogLevel.Error,
            Message = "Topic {Topic}, {Log} log: damaged entries at addresses {FromAddress} to {ToAddress} (file log.{Segment} from byte {FileOffset}) were skipped, not served: {Reason}")]
        public static partial void LogDamaged(ILogger logger, string topic, string log, long fromAddress, long toAddress, long segment, long fileOffset, string reason);
    }
}

/// <summary>Point-in-time numbers of one topic.</summary>
public sealed record TopicInfo(string Name, long FirstOffset, long NextOffset, long LogBytes, IReadOnlyList<GroupInfo> Groups,
    TopicRetention Retention)
{
    /// <summary>Scheduled messages waiting for their time (not yet in any group's backlog).</summary>
    public int ScheduledCount { get; init; }
}
