namespace Broker.Storage.Logs;

/// <summary>Where an <see cref="EntryArena"/> keeps one entry.</summary>
internal readonly record struct ArenaEntry(int Chunk, int Position, int Length);

/// <summary>
/// Entries kept in memory for a while, side by side in 16 KiB chunks instead of an array each: a priority group's
/// read-ahead (kept until the message is picked) and a topic's scheduled records due soon (kept until they fire).
/// <para>Why: an array per entry that lives for milliseconds to seconds outlives the youngest generation, and the
/// garbage collector then copies it once or twice before it dies; at a hundred thousand messages a second that copying
/// and the allocation cost as much as the rest of the feature (docs/perf.md, W9). A chunk goes back to the arena's
/// free list once every entry in it is released, and is reused for the next entries.</para>
/// <para>Bounded: at most <c>budgetBytes</c> of chunks, counting a chunk whole while any entry in it lives, so an entry
/// kept long (a low-priority message under a stream of urgent ones) pins at most one chunk. An entry that does not fit
/// is not kept (<see cref="TryAdd"/> returns false) and the caller reads it from the log when it needs it.</para>
/// <para>Not thread-safe: the owner calls it under its own lock.</para>
/// </summary>
internal sealed class EntryArena(long budgetBytes)
{
    /// <summary>Size of one chunk; larger entries are never kept.</summary>
    // Small: an entry left behind (an old low-priority message, a record due later than its neighbours) pins only its
    // chunk, and a chunk the free list cannot supply is a young-generation allocation (far below the large-object
    // threshold, whose allocations count toward full collections).
    internal const int ChunkBytes = 16 << 10;

    // Free chunks are kept for reuse as long as they and the held ones stay within the budget: entries leave in bursts
    // (a fetch's worth of picks, the old low-priority entries once the urgent ones run out, a firing run), often
    // hundreds of chunks at once, and the next reads refill as many; a group that keeps up empties its arena after
    // every fetch and fills it again with the next. A chunk left to the garbage collector instead is one allocated
    // again: W9 allocated a chunk for nearly every entry while the arena kept 64 free chunks and only 4 once it
    // emptied (docs/perf.md). Free chunks the arena did not need for a whole maintenance period are given back then
    // (TrimUnusedFree), down to IdleFreeChunks.
    private const int IdleFreeChunks = 4;

    private readonly List<Chunk?> _chunks = [];
    private readonly Stack<int> _unusedIds = new();
    private readonly Stack<byte[]> _free = new();
    private int _freeLowWater; // the fewest free chunks since the last TrimUnusedFree: so many were not needed
    private int _current = -1;

    private sealed class Chunk(byte[] memory)
    {
        public readonly byte[] Memory = memory;
        public int Used;
        public int Live;
    }

    /// <summary>Bytes of the chunks that hold live entries (what counts against the budget).</summary>
    public long HeldBytes { get; private set; }

    /// <summary>Entries kept and not released.</summary>
    public int Count { get; private set; }

    /// <summary>Bytes of the entries kept and not released (at most <see cref="HeldBytes"/>).</summary>
    public long LiveBytes { get; private set; }

    /// <summary>Chunks allocated over the arena's life, for tests: the rest were reused from its free list.</summary>
    internal long ChunksAllocated { get; private set; }

    /// <summary>Copies <paramref name="entry"/> in; false (nothing kept) when it is too large or the budget is used up.</summary>
    public bool TryAdd(ReadOnlySpan<byte> entry, out ArenaEntry kept)
    {
        if (!TryReserve(entry.Length, out kept, out var space))
            return false;
        entry.CopyTo(space);
        return true;
    }

    /// <summary>
    /// Makes room for an entry of <paramref name="length"/> bytes for the caller to write into <paramref name="space"/>
    /// at once; false (nothing kept) when it is too large or the budget is used up.
    /// </summary>
    public bool TryReserve(int length, out ArenaEntry kept, out Span<byte> space)
    {
        kept = default;
        space = default;
        if (length > ChunkBytes || length <= 0)
            return false;
        var chunk = _current >= 0 ? _chunks[_current] : null;
        if (chunk is null || ChunkBytes - chunk.Used < length)
        {
            if (HeldBytes + ChunkBytes > budgetBytes)
                return false;
            StartChunk();
            chunk = _chunks[_current]!;
        }
        space = chunk.Memory.AsSpan(chunk.Used, length);
        kept = new ArenaEntry(_current, chunk.Used, length);
        chunk.Used += length;
        chunk.Live++;
        Count++;
        LiveBytes += length;
        return true;
    }

    /// <summary>The bytes of a kept entry; valid until it is released.</summary>
    public ReadOnlySpan<byte> Get(ArenaEntry entry) => GetMemory(entry).Span;

    /// <summary>The bytes of a kept entry as memory (for decoding in place); valid until it is released.</summary>
    public ReadOnlyMemory<byte> GetMemory(ArenaEntry entry) => _chunks[entry.Chunk]!.Memory.AsMemory(entry.Position, entry.Length);

    /// <summary>The entry is no longer needed; its chunk is freed with its last entry.</summary>
    public void Release(ArenaEntry entry)
    {
        var chunk = _chunks[entry.Chunk]!;
        chunk.Live--;
        Count--;
        LiveBytes -= entry.Length;
        if (chunk.Live == 0)
        {
            if (entry.Chunk == _current)
                chunk.Used = 0; // The current chunk emptied out: start it over instead of moving on.
            else
                FreeChunk(entry.Chunk);
        }
    }

    /// <summary>
    /// Run periodically (topic maintenance): lets go of the free chunks that stayed unused since the last call, keeping
    /// at least a few, so an arena that was busy gives its memory back one period after it went quiet.
    /// </summary>
    public void TrimUnusedFree()
    {
        for (int unused = _freeLowWater; unused > 0 && _free.Count > IdleFreeChunks; unused--)
            _free.Pop();
        _freeLowWater = _free.Count;
    }

    /// <summary>Releases every entry (the owner dropped all it kept).</summary>
    public void Clear()
    {
        for (int id = 0; id < _chunks.Count; id++)
        {
            if (_chunks[id] is not null)
                FreeChunk(id);
        }
        _current = -1;
        Count = 0;
        LiveBytes = 0;
        while (_free.Count > IdleFreeChunks)
            _free.Pop();
        _freeLowWater = Math.Min(_freeLowWater, _free.Count);
    }

    /// <summary>
    /// Takes the memory of an arena being retired (its entries copied elsewhere or no longer needed) for reuse here, as
    /// far as this arena's budget allows; <paramref name="retired"/> is left empty.
    /// </summary>
    public void TakeChunksOf(EntryArena retired)
    {
        TakeFreeChunksOf(retired);
        foreach (var chunk in retired._chunks)
        {
            if (chunk is not null)
                KeepFree(chunk.Memory);
        }
        retired._chunks.Clear();
        retired._unusedIds.Clear();
        retired._current = -1;
        retired.HeldBytes = 0;
        retired.Count = 0;
        retired.LiveBytes = 0;
    }

    /// <summary>Takes the free chunks of <paramref name="other"/> (which stays usable) for reuse here, as far as this arena's budget allows.</summary>
    public void TakeFreeChunksOf(EntryArena other)
    {
        // The chunks the other arena did not use since its last trim stay counted as unused here: a group that
        // compacts often still gives them back one period after it went quiet.
        int unused = other._freeLowWater, moved = 0;
        while (other._free.TryPop(out var memory))
        {
            if (KeepFree(memory))
                moved++;
        }
        other._freeLowWater = 0;
        _freeLowWater = Math.Min(_free.Count, _freeLowWater + Math.Min(unused, moved));
    }

    // The chunk being left stays while entries in it live (it has some: a current chunk that empties starts over, and
    // then has room for any entry).
    private void StartChunk()
    {
        if (_free.TryPop(out var memory))
        {
            _freeLowWater = Math.Min(_freeLowWater, _free.Count);
        }
        else
        {
            memory = new byte[ChunkBytes];
            ChunksAllocated++;
        }
        var chunk = new Chunk(memory);
        if (_unusedIds.TryPop(out int id))
        {
            _chunks[id] = chunk;
        }
        else
        {
            id = _chunks.Count;
            _chunks.Add(chunk);
        }
        _current = id;
        HeldBytes += ChunkBytes;
    }

    private void FreeChunk(int id)
    {
        var chunk = _chunks[id]!;
        _chunks[id] = null;
        _unusedIds.Push(id);
        HeldBytes -= ChunkBytes;
        KeepFree(chunk.Memory);
        if (id == _current)
            _current = -1;
    }

    private bool KeepFree(byte[] memory)
    {
        if (HeldBytes + (_free.Count + 1L) * ChunkBytes > budgetBytes)
            return false;
        _free.Push(memory);
        return true;
    }
}
