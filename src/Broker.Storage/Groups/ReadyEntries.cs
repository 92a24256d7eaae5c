using Broker.Storage.Logs;

namespace Broker.Storage.Groups;

/// <summary>
/// The entries of a read-ahead group's ready messages (priority levels or newest first), kept in memory from the read
/// until the message is picked, so that handing it out needs no second read from the log (by then its page has usually
/// left memory, and each read would be a disk read and two thread-pool hops).
/// <para>Kept in an <see cref="EntryArena"/> within <see cref="ConsumerGroup.ReadyEntryBudgetBytes"/>, found by offset in
/// a table of <see cref="IndexSlots"/> slots (offset modulo its size). A message whose slot is taken by another kept
/// entry (ready messages more than that many offsets apart) or that finds the budget used up is simply not kept: it
/// is read from the log when picked, as every message was before this existed.</para>
/// <para>Not thread-safe: the group calls it under its lock.</para>
/// </summary>
internal sealed class ReadyEntries
{
    internal const int IndexSlots = 1 << 16;

    private readonly EntryArena _arena = new(ConsumerGroup.ReadyEntryBudgetBytes);
    private readonly (long OffsetPlusOne, ArenaEntry Entry)[] _index = new (long, ArenaEntry)[IndexSlots];

    /// <summary>False once the kept entries fill the budget: the group reads ahead no further.</summary>
    public bool HasRoom => _arena.HeldBytes < ConsumerGroup.ReadyEntryBudgetBytes;

    /// <summary>Entries kept.</summary>
    public int Count => _arena.Count;

    /// <summary>Keeps the entry of a message just made ready, if its slot is free and the budget allows.</summary>
    public void Keep(long offset, ReadOnlySpan<byte> entry)
    {
        ref var slot = ref _index[offset & (IndexSlots - 1)];
        if (slot.OffsetPlusOne == 0 && _arena.TryAdd(entry, out var kept))
            slot = (offset + 1, kept);
    }

    /// <summary>
    /// The kept entry of a message being handed out, copied into <paramref name="into"/> (the delivery's memory) and
    /// dropped here; false when it was not kept.
    /// </summary>
    public bool TryTake(long offset, ReadBufferLease into, out Memory<byte> entry)
    {
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
