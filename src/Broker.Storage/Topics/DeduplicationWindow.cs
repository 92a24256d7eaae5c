using System.IO.Hashing;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Topics;

/// <summary>
/// Publish deduplication for one topic. A message published with a message id is stored with it (the reserved header
/// <see cref="ReservedHeaders.MessageId"/>); a second publish of the same id within the window is answered with the
/// first one's offset and stores nothing.
/// <para>The index: the id's 128-bit hash (XxHash128 of its UTF-8 bytes, seeded per process so nobody can pick ids that
/// collide in it) → offset in an <see cref="IdOffsetTable"/>, plus a queue in append order, so an id costs about 90
/// bytes whatever its length, and expiry pops the queue's head. At most
/// <see cref="StorageOptions.MaxDeduplicationIds"/> ids are kept (plus one batch's, for the moment between its append and
/// the evictions after it): past that the oldest leave early (the window then covers less time; a counter says how
/// often).</para>
/// <para>Restarts: the index is rebuilt by scanning the log from <c>dedup.json</c>'s address (written durably before the
/// topic's first id, then moved up as ids expire), and the log's drained segments are not freed below the oldest id in
/// the window, so the scan still finds every id a restart must remember. Retention and purge do delete them.</para>
/// <para>Lookups and additions happen under the log's append lock (one publish at a time decides what is a duplicate);
/// the queue is also read by maintenance, hence the lock of its own.</para>
/// </summary>
internal sealed partial class DeduplicationWindow
{
    private const string FileName = "dedup.json";

    private readonly Topic _topic;
    private readonly TimeProvider _time;
    private readonly long _windowMs;
    private readonly int _capacity;
    private readonly Lock _gate = new();
    private readonly IdOffsetTable _offsets = new();
    private readonly ChunkedQueue<IdAge> _byAge = new();

    // One id of the window in append order. The id as two ulongs: a UInt128 field is 16-byte aligned, which would pad
    // the entry from 40 bytes to 48.
    private readonly record struct IdAge(ulong IdLow, ulong IdHigh, long Offset, long Address, long AppendTimeUnixMs)
    {
        public IdAge(UInt128 id, long offset, long address, long appendTimeUnixMs)
            : this((ulong)id, (ulong)(id >> 64), offset, address, appendTimeUnixMs)
        {
        }

        public UInt128 Id => new(IdHigh, IdLow);
    }
    private readonly ScanStart _scanStart;

    private DeduplicationWindow(Topic topic, TimeProvider time, TimeSpan window, int capacity, ScanStart scanStart)
    {
        _topic = topic;
        _time = time;
        _windowMs = (long)window.TotalMilliseconds;
        _capacity = capacity;
        _scanStart = scanStart;
    }

    /// <summary>Ids in the window.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
                return _offsets.Count;
        }
    }

    /// <summary>Ids that left the window before their time because it was full (since the topic opened).</summary>
    public long EvictedEarly { get; private set; }

    // Per process: the keys live in memory only (a restart hashes the ids again as it rebuilds the window).
    private static readonly long Seed = Random.Shared.NextInt64();

    /// <summary>The id's key in the index (ids are at most 128 UTF-8 bytes; longer ones are hashed from the heap).</summary>
    public static UInt128 Hash(string messageId)
    {
        int length = Encoding.UTF8.GetMaxByteCount(messageId.Length);
        Span<byte> bytes = length <= 512 ? stackalloc byte[length] : new byte[length];
        return XxHash128.HashToUInt128(bytes[..Encoding.UTF8.GetBytes(messageId, bytes)], Seed);
    }

    /// <summary>Opens the topic's window: when the topic ever had a message id, rebuilds it from the log.</summary>
    public static async Task<DeduplicationWindow> OpenAsync(Topic topic, StorageOptions options, TimeProvider time, CancellationToken cancellationToken)
    {
        var scanStart = ScanStart.Open(topic.Directory, FileName, time);
        var window = new DeduplicationWindow(topic, time, options.DeduplicationWindow, options.MaxDeduplicationIds, scanStart);
        if (scanStart.Address is long from)
        {
            long now = time.GetUtcNow().ToUnixTimeMilliseconds();
            var log = topic.Log;
            await foreach (var (entry, length, address) in log.ReadRangeAsync(Math.Max(from, log.BeginAddress), log.Durable.Address,
                topic.ReportDamage, cancellationToken).ConfigureAwait(false))
            {
                // A scheduled message's due copy carries its id too, but the publish was the record's: only that one counts.
                if (!MessageEntryFormat.TryDecode(entry.AsMemory(0, length), out var message) || message!.AppendTimeUnixMs + window._windowMs <= now
                    || message.Schedule is { } schedule && schedule.RecordOffset != message.Offset)
                    continue;
                foreach (var header in message.Headers)
                {
                    if (header.Key == ReservedHeaders.MessageId)
                    {
                        window.Add(Hash(header.Value), message.Offset, address, message.AppendTimeUnixMs);
                        window.EvictOverCapacity();
                    }
                }
            }
            if (window.Count > 0)
                Events.Recovered(topic.LoggerFactory.CreateLogger<DeduplicationWindow>(), topic.Name, window.Count);
        }
        return window;
    }

    /// <summary>
    /// Before the topic's first message with an id is appended: writes <c>dedup.json</c> durably, so the scan at the
    /// next start looks for ids (it starts below any message appended from now on).
    /// </summary>
    public void EnsureEnabled() => _scanStart.EnsureWritten(_topic.Log.TailAddress);

    /// <summary>The offset of the message first published with this id, if that was within the window.</summary>
    public bool TryGetOffset(UInt128 id, long nowUnixMs, out long offset)
    {
        lock (_gate)
        {
            ExpireLocked(nowUnixMs);
            return _offsets.TryGet(id, out offset);
        }
    }

    /// <summary>
    /// Before a batch's lookups and additions (under the append lock): starts loading the table lines that the lookups
    /// of <paramref name="ids"/> and as many evictions of the oldest ids will touch, so the cache misses overlap.
    /// </summary>
    public void Prefetch(ReadOnlySpan<UInt128> ids)
    {
        Span<IdAge> oldest = stackalloc IdAge[ids.Length];
        lock (_gate)
        {
            foreach (var id in ids)
                _offsets.Prefetch(id);
            // Evictions come when the window is full; expiries at a steady rate take about as many from the head.
            int n = _byAge.PeekHead(oldest);
            for (int i = 0; i < n; i++)
                _offsets.Prefetch(oldest[i].Id);
        }
    }

    /// <summary>A message with this id was appended at <paramref name="offset"/> (under the append lock).</summary>
    public void Add(UInt128 id, long offset, long address, long appendTimeUnixMs)
    {
        lock (_gate)
        {
            _offsets.Set(id, offset);
            _byAge.Enqueue(new IdAge(id, offset, address, appendTimeUnixMs));
        }
    }

    /// <summary>
    /// After a batch's additions, outside the append lock: the oldest ids leave until the window holds its capacity
    /// again (so it holds at most one batch more for a moment).
    /// </summary>
    public void EvictOverCapacity()
    {
        lock (_gate)
        {
            while (_byAge.Count > _capacity)
            {
                RemoveOldestLocked();
                EvictedEarly++;
            }
        }
    }

    /// <summary>
    /// The log address below which no id of the window lies (<paramref name="end"/> when there is none): drained
    /// segments are freed only below it, so a restart's scan finds every id still in the window.
    /// </summary>
    public long LowestAddress(long end)
    {
        lock (_gate)
        {
            ExpireLocked(_time.GetUtcNow().ToUnixTimeMilliseconds());
            return _byAge.TryPeek(out var oldest) ? Math.Min(oldest.Address, end) : end;
        }
    }

    /// <summary>Run by maintenance: expires ids and, every 10 s at most, moves the restart scan's start up to the oldest id kept.</summary>
    // The durable end first: an id appended after it is above it, and one appended before is in the queue.
    public void Maintain()
    {
        _scanStart.MoveUpWhenDue(() => LowestAddress(_topic.Log.Durable.Address));
        // The table keeps its size as ids expire; a window that emptied out gives the memory back here.
        lock (_gate)
            _offsets.Shrink();
    }

    private void ExpireLocked(long nowUnixMs)
    {
        while (_byAge.TryPeek(out var oldest) && oldest.AppendTimeUnixMs + _windowMs <= nowUnixMs)
            RemoveOldestLocked();
    }

    private void RemoveOldestLocked()
    {
        var oldest = _byAge.Dequeue();
        // The same id published again after it expired maps to the newer offset: that entry is not this one's to remove.
        _offsets.Remove(oldest.Id, oldest.Offset);
    }

    private static partial class Events
    {
        [LoggerMessage(EventId = 3013, Level = LogLevel.Information, Message = "Topic {Topic}: {Count} message ids in the deduplication window")]
        public static partial void Recovered(ILogger logger, string topic, int count);
    }
}
