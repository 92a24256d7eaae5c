using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace Broker.Storage.Topics;

/// <summary>
/// The deduplication window's index: a message id's 128-bit hash → the offset it was first published at. Open
/// addressing with linear probing over one array of 24-byte slots, at most half full.
/// <para>Why not a <see cref="Dictionary{TKey, TValue}"/>: at a hundred thousand ids a second the window is full and
/// every publish looks an id up, inserts it and evicts the oldest, each a cache miss in tens of megabytes. A
/// dictionary pays two misses for each (its bucket array, then its entry array); here a lookup is usually one line,
/// the insert after it the same line, and the caller can <see cref="Prefetch"/> a whole batch's lines at once so their
/// misses overlap instead of following each other (docs/perf.md, W9).</para>
/// <para>Keys are hashes already (seeded per process, see <see cref="DeduplicationWindow.Hash"/>), so their low bits
/// pick the slot. Removal shifts the entries after it back (no tombstones to clean up).</para>
/// </summary>
internal sealed class IdOffsetTable
{
    private const int MinimumSlots = 1024;

    // The key as two ulongs: a UInt128 field is 16-byte aligned, which would pad the slot to 32 bytes.
    private struct Slot
    {
        public ulong KeyLow, KeyHigh;
        // 0 marks an empty slot: offsets start at 0, so they are stored one up.
        public long OffsetPlusOne;

        public readonly bool Holds(UInt128 key) => KeyLow == (ulong)key && KeyHigh == (ulong)(key >> 64);

        public readonly UInt128 Key => new(KeyHigh, KeyLow);
    }

    private Slot[] _slots = new Slot[MinimumSlots];

    /// <summary>Ids in the table.</summary>
    public int Count { get; private set; }

    /// <summary>Slots allocated (a power of two, at least twice <see cref="Count"/>).</summary>
    public int Capacity => _slots.Length;

    public bool TryGet(UInt128 key, out long offset)
    {
        var slots = _slots;
        int mask = slots.Length - 1;
        for (int i = Home(key, mask); ; i = (i + 1) & mask)
        {
            ref var slot = ref slots[i];
            if (slot.OffsetPlusOne == 0)
            {
                offset = 0;
                return false;
            }
            if (slot.Holds(key))
            {
                offset = slot.OffsetPlusOne - 1;
                return true;
            }
        }
    }

    /// <summary>Maps <paramref name="key"/> to <paramref name="offset"/>; true when the key was not in the table.</summary>
    public bool Set(UInt128 key, long offset)
    {
        if ((Count + 1) * 2L > _slots.Length)
            Resize(_slots.Length * 2);
        var slots = _slots;
        int mask = slots.Length - 1;
        for (int i = Home(key, mask); ; i = (i + 1) & mask)
        {
            ref var slot = ref slots[i];
            if (slot.OffsetPlusOne == 0)
            {
                slot.KeyLow = (ulong)key;
                slot.KeyHigh = (ulong)(key >> 64);
                slot.OffsetPlusOne = offset + 1;
                Count++;
                return true;
            }
            if (slot.Holds(key))
            {
                slot.OffsetPlusOne = offset + 1;
                return false;
            }
        }
    }

    /// <summary>Removes <paramref name="key"/> if it still maps to <paramref name="offset"/>; true when it did.</summary>
    public bool Remove(UInt128 key, long offset)
    {
        var slots = _slots;
        int mask = slots.Length - 1;
        int hole = Home(key, mask);
        while (true)
        {
            ref var slot = ref slots[hole];
            if (slot.OffsetPlusOne == 0 || slot.Holds(key) && slot.OffsetPlusOne != offset + 1)
                return false;
            if (slot.Holds(key))
                break;
            hole = (hole + 1) & mask;
        }
        // Backward shift: an entry after the hole moves into it unless its home lies cyclically after the hole (then
        // its probe would never pass the hole, and it must stay where it is).
        for (int next = (hole + 1) & mask; slots[next].OffsetPlusOne != 0; next = (next + 1) & mask)
        {
            int home = Home(slots[next].Key, mask);
            if (((next - home) & mask) >= ((next - hole) & mask))
            {
                slots[hole] = slots[next];
                hole = next;
            }
        }
        slots[hole] = default;
        Count--;
        return true;
    }

    /// <summary>Asks the CPU to start loading the line a probe for <paramref name="key"/> begins at (a hint only).</summary>
    public unsafe void Prefetch(UInt128 key)
    {
        if (!Sse.IsSupported)
            return;
        var slots = _slots;
        // A prefetch never faults, so an array the GC moves meanwhile costs nothing but the hint.
        Sse.Prefetch0(Unsafe.AsPointer(ref slots[Home(key, slots.Length - 1)]));
    }

    /// <summary>Gives memory back after the window emptied out (run by maintenance, not on the publish path).</summary>
    public void Shrink()
    {
        int wanted = MinimumSlots;
        while (wanted < Count * 4L)
            wanted *= 2;
        if (wanted < _slots.Length)
            Resize(wanted);
    }

    private static int Home(UInt128 key, int mask) => (int)(ulong)key & mask;

    private void Resize(int slotCount)
    {
        var old = _slots;
        _slots = new Slot[slotCount];
        int mask = slotCount - 1;
        foreach (var slot in old)
        {
            if (slot.OffsetPlusOne == 0)
                continue;
            int i = Home(slot.Key, mask);
            while (_slots[i].OffsetPlusOne != 0)
                i = (i + 1) & mask;
            _slots[i] = slot;
        }
    }
}
