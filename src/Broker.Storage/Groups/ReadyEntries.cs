using Broker.Storage.Logs;

namespace Broker.Storage.Groups;

/// <summary>
/// The entries of a read-ahead group's ready messages (priority levels or newest first), kept in memory from the read
/// until the message is picked, so that handing it out needs no second read from the log (by then its page has usually
/// left memory, and each read would be a disk read and two thread-pool hops).
/// <para>Kept in an <see cref="EntryArena"/>, found by offset in a table of <see cref="IndexSlots"/> slots (offset modulo its
/// size). The budget, <see cref="ConsumerGroup.ReadyEntryBudgetBytes"/>, counts the entries' own bytes; the arena may
/// hold twice that in chunks, because a chunk stays while any entry in it waits (old low-priority messages left behind
/// by urgent ones): when it is full of such gaps, the entries are copied together into fresh chunks
/// (<see cref="Compact"/>), so the group still reads ahead its whole budget. A message whose slot is taken by another
/// kept entry (ready messages more than that many offsets apart), or that comes when the budget is used up, is simply
/// not kept: it is read from the log when picked, as every message was before this existed.</para>
/// <para>Not thread-safe: the group calls it under its lock.</para>
/// </summary>
internal sealed class ReadyEntries
{
    internal const int IndexSlots = 1 << 16;

    // Larger entries are kept as arrays of their own: in chunks they could leave a chunk nearly half empty, and then
    // copying the entries together would not make room.
    internal const int MaxArenaEntryBytes = EntryArena.ChunkBytes / 4;

    private EntryArena _arena = NewArena();
    private readonly (long OffsetPlusOne, ArenaEntry Entry)[] _index = new (long, ArenaEntry)[IndexSlots];
    private readonly Dictionary<long, byte[]> _large = [];
    private long _largeBytes;
    private long _chunksAllocatedBefore;

    /// <summary>False once the kept entries fill the budget: the group reads ahead no further.</summary>
    public bool HasRoom => _arena.LiveBytes + _largeBytes < ConsumerGroup.ReadyEntryBudgetBytes;

    /// <summary>Entries kept.</summary>
    public int Count => _arena.Count + _large.Count;

    /// <summary>Bytes of chunks held (for tests: at most twice the budget).</summary>
    internal long HeldBytes => _arena.HeldBytes;

    /// <summary>Chunks allocated by the arenas so far (for tests: the rest were reused).</summary>
    internal long ChunksAllocated => _chunksAllocatedBefore + _arena.ChunksAllocated;

    /// <summary>Times the entries were copied together (for tests).</summary>
    internal int Compactions { get; private set; }

    private static EntryArena NewArena() => new(2 * ConsumerGroup.ReadyEntryBudgetBytes);

    /// <summary>Keeps the entry of a message just made ready, if its slot is free and the budget allows.</summary>
    public void Keep(long offset, ReadOnlySpan<byte> entry)
    {
        if (!HasRoom)
            return;
        if (entry.Length > MaxArenaEntryBytes)
        {
            if (_large.TryAdd(offset, entry.ToArray()))
                _largeBytes += entry.Length;
            return;
        }
        ref var slot = ref _index[offset & (IndexSlots - 1)];
        if (slot.OffsetPlusOne != 0)
            return;
        if (!_arena.TryAdd(entry, out var kept))
        {
            // The chunks are full but the entries are not: gaps left by entries taken out of order.
            if (_arena.LiveBytes * 2 > _arena.HeldBytes)
                return;
            Compact();
            if (!_arena.TryAdd(entry, out kept))
                return;
        }
        slot = (offset + 1, kept);
    }

    // Copies every kept entry into a fresh arena, side by side, and hands it the old chunks for reuse: the free ones
    // first (so the copies land in them), the ones copied from after.
    private void Compact()
    {
        var fresh = NewArena();
        fresh.TakeFreeChunksOf(_arena);
        for (int i = 0; i < _index.Length; i++)
        {
            ref var slot = ref _index[i];
            if (slot.OffsetPlusOne == 0)
                continue;
            // The fresh arena holds the live bytes (under the budget, half its room) with at most a quarter of each chunk
            // left over, so they fit.
            if (!fresh.TryAdd(_arena.Get(slot.Entry), out var moved))
                throw new InvalidOperationException("compacted read-ahead entries did not fit their arena");
            slot.Entry = moved;
        }
        fresh.TakeChunksOf(_arena);
        _chunksAllocatedBefore += _arena.ChunksAllocated;
        _arena = fresh;
        Compactions++;
    }

    /// <summary>Lets go of the arena's free chunks that stayed unused since the last call (see <see cref="EntryArena.TrimUnusedFree"/>).</summary>
    public void TrimUnusedFree() => _arena.TrimUnusedFree();

    /// <summary>
    /// The kept entry of a message being handed out, copied into <paramref name="into"/> (the delivery's memory) and
    /// dropped here; false when it was not kept.
    /// </summary>
    public bool TryTake(long offset, ReadBufferLease into, out Memory<byte> entry)
    {
        if (_large.Count > 0 && _large.Remove(offset, out var large))
        {
            _largeBytes -= large.Length;
            entry = large;
            return true;
        }
        ref var slot = ref _index[offset & (IndexSlots - 1)];
        if (slot.OffsetPlusOne != offset + 1)
        {
            entry = default;
            return false;
        }
        entry = into.Copy(_arena.Get(slot.Entry));
        _arena.Release(slot.Entry);
        slot = default;
        return true;
    }
}
