namespace Broker.Storage.Topics;

/// <summary>A pending scheduled record: when it is due, its offset, and where it is in the log.</summary>
internal readonly record struct PendingRecord(long DeliverAtUnixMs, long Offset, long Address);

/// <summary>
/// A binary min-heap of pending records by delivery time, stored in fixed chunks of 2,048 entries (48 KiB each, below
/// the large-object threshold) instead of one array. A <see cref="PriorityQueue{TElement,TPriority}"/> of a million
/// records is one 24 MiB array that doubles as it grows: the arrays it leaves behind are large objects the GC kept
/// committed, and S1 measured 110 MiB more RSS than plain messages for 25 MiB of live records. Chunks are never copied
/// when the heap grows, and are given back when it shrinks.
/// </summary>
internal sealed class ScheduleHeap
{
    private const int ChunkBits = 11;
    private const int ChunkSize = 1 << ChunkBits;
    private const int ChunkMask = ChunkSize - 1;

    private readonly List<PendingRecord[]> _chunks = [];

    public int Count { get; private set; }

    private ref PendingRecord At(int index) => ref _chunks[index >> ChunkBits][index & ChunkMask];

    /// <summary>Room for <paramref name="capacity"/> records without allocating again.</summary>
    public void EnsureCapacity(int capacity)
    {
        while (_chunks.Count * ChunkSize < capacity)
            _chunks.Add(new PendingRecord[ChunkSize]);
    }

    public void Push(PendingRecord record)
    {
        EnsureCapacity(Count + 1);
        int index = Count++;
        while (index > 0)
        {
            int parent = (index - 1) >> 1;
            if (At(parent).DeliverAtUnixMs <= record.DeliverAtUnixMs)
                break;
            At(index) = At(parent);
            index = parent;
        }
        At(index) = record;
    }

    public bool TryPeek(out PendingRecord record)
    {
        record = Count > 0 ? At(0) : default;
        return Count > 0;
    }

    public PendingRecord Pop()
    {
        if (Count == 0)
            throw new InvalidOperationException("the schedule heap is empty");
        var top = At(0);
        var last = At(--Count);
        int index = 0;
        while (true)
        {
            int child = 2 * index + 1;
            if (child >= Count)
                break;
            if (child + 1 < Count && At(child + 1).DeliverAtUnixMs < At(child).DeliverAtUnixMs)
                child++;
            if (last.DeliverAtUnixMs <= At(child).DeliverAtUnixMs)
                break;
            At(index) = At(child);
            index = child;
        }
        if (Count > 0)
            At(index) = last;
        // Keep one spare chunk, give back the rest.
        while (_chunks.Count > 1 && (_chunks.Count - 2) * ChunkSize >= Count)
            _chunks.RemoveAt(_chunks.Count - 1);
        return top;
    }

    /// <summary>Every pending record, in no particular order.</summary>
    public IEnumerable<PendingRecord> Unordered()
    {
        for (int i = 0; i < Count; i++)
            yield return At(i);
    }

    /// <summary>The lowest log address of a pending record, or <paramref name="none"/> when there is none.</summary>
    public long LowestAddress(long none)
    {
        long lowest = none;
        for (int c = 0, seen = 0; c < _chunks.Count && seen < Count; c++)
        {
            var chunk = _chunks[c];
            int inChunk = Math.Min(ChunkSize, Count - seen);
            for (int i = 0; i < inChunk; i++)
                lowest = Math.Min(lowest, chunk[i].Address);
            seen += inChunk;
        }
        return lowest;
    }

    public void Clear()
    {
        Count = 0;
        _chunks.Clear();
    }
}
