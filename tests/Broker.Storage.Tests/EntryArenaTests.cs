using Broker.Storage.Logs;

namespace Broker.Storage.Tests;

/// <summary>
/// The arena that keeps read-ahead entries and soon-due scheduled records: every kept entry reads back its own bytes
/// while others come and go, a chunk is freed with its last entry, and the budget refuses what would exceed it.
/// </summary>
public sealed class EntryArenaTests
{
    private static byte[] Entry(int id, int length)
    {
        var bytes = new byte[length];
        new Random(id).NextBytes(bytes);
        return bytes;
    }

    [Fact]
    public void Kept_entries_read_back_intact_through_random_keeps_and_releases_and_the_held_bytes_follow_the_live_chunks()
    {
        var arena = new EntryArena(8L * EntryArena.ChunkBytes);
        var live = new Dictionary<int, (ArenaEntry Kept, int Length)>();
        var random = new Random(5);
        int refused = 0;
        for (int id = 0; id < 40_000; id++)
        {
            if (live.Count == 0 || random.Next(3) > 0)
            {
                int length = random.Next(1, 3000);
                if (arena.TryAdd(Entry(id, length), out var kept))
                    live.Add(id, (kept, length));
                else
                    refused++;
            }
            else
            {
                // Release in no particular order (as priority picks do), checking the bytes on the way out.
                int victim = live.Keys.ElementAt(random.Next(live.Count));
                Assert.Equal(Entry(victim, live[victim].Length), arena.Get(live[victim].Kept).ToArray());
                arena.Release(live[victim].Kept);
                live.Remove(victim);
            }
            Assert.Equal(live.Count, arena.Count);
            Assert.True(arena.HeldBytes <= 8L * EntryArena.ChunkBytes);
        }
        Assert.True(refused > 0, "the test meant to reach the budget");
        foreach (var (id, (kept, length)) in live)
            Assert.Equal(Entry(id, length), arena.Get(kept).ToArray());
        foreach (var (kept, _) in live.Values)
            arena.Release(kept);
        Assert.Equal(0, arena.Count);
        Assert.True(arena.HeldBytes <= EntryArena.ChunkBytes, "only the current chunk may stay held once everything is released");
    }

    [Fact]
    public void Chunks_freed_in_a_burst_are_reused_by_the_next_entries_and_an_emptied_arena_keeps_few()
    {
        const int Chunks = 256;
        var arena = new EntryArena(Chunks * (long)EntryArena.ChunkBytes);
        var kept = new List<ArenaEntry>();
        while (arena.TryAdd(Entry(kept.Count, 1000), out var entry))
            kept.Add(entry);
        Assert.Equal(Chunks, arena.ChunksAllocated);

        // Every entry but the first leaves at once (the urgent ones all picked): hundreds of chunks free together.
        foreach (var entry in kept.Skip(1))
            arena.Release(entry);
        kept.RemoveRange(1, kept.Count - 1);
        while (arena.TryAdd(Entry(kept.Count, 1000), out var entry))
            kept.Add(entry);
        Assert.Equal(Chunks, arena.ChunksAllocated);
        Assert.Equal(Entry(0, 1000), arena.Get(kept[0]).ToArray());

        // Emptied out, it keeps its free chunks until maintenance has seen them unused for a whole period.
        foreach (var entry in kept)
            arena.Release(entry);
        arena.TrimUnusedFree();
        var busy = FillChunks(arena, 100);
        Assert.Equal(Chunks, arena.ChunksAllocated);
        foreach (var entry in busy)
            arena.Release(entry);

        // A period in which 100 chunks were used (the one an emptied arena keeps current among them): those stay, the
        // rest go.
        arena.TrimUnusedFree();
        FillChunks(arena, 100);
        Assert.Equal(Chunks, arena.ChunksAllocated);
        FillChunks(arena, 1);
        Assert.Equal(Chunks + 1, arena.ChunksAllocated);
    }

    private static List<ArenaEntry> FillChunks(EntryArena arena, int chunks) =>
        [.. Enumerable.Range(0, chunks).Select(i => arena.TryAdd(Entry(i, EntryArena.ChunkBytes), out var entry) ? entry : throw new InvalidOperationException("refused"))];

    [Fact]
    public void A_retired_arena_hands_its_chunks_over_within_the_budget_of_the_one_taking_them()
    {
        var old = new EntryArena(64L * EntryArena.ChunkBytes);
        var kept = new List<ArenaEntry>();
        while (old.TryAdd(new byte[EntryArena.ChunkBytes], out var entry))
            kept.Add(entry);
        for (int i = 0; i < 16; i++)
            old.Release(kept[i]);
        var fresh = new EntryArena(40L * EntryArena.ChunkBytes);
        fresh.TakeFreeChunksOf(old);
        fresh.TakeChunksOf(old);
        Assert.Equal((0, 0L), (old.Count, old.HeldBytes));
        for (int i = 0; i < 40; i++)
            Assert.True(fresh.TryAdd(new byte[EntryArena.ChunkBytes], out _));
        Assert.Equal(0, fresh.ChunksAllocated);
        Assert.False(fresh.TryAdd(new byte[1], out _));
    }

    [Fact]
    public void Free_chunks_a_retired_arena_left_unused_are_given_back_by_the_one_taking_them_a_period_later()
    {
        var old = new EntryArena(64L * EntryArena.ChunkBytes);
        foreach (var entry in FillChunks(old, 40))
            old.Release(entry);
        old.TrimUnusedFree(); // a period starts in which its 39 free chunks go unused
        var fresh = new EntryArena(64L * EntryArena.ChunkBytes);
        fresh.TakeFreeChunksOf(old);
        fresh.TrimUnusedFree(); // the period ends: all but a few go
        FillChunks(fresh, 10);
        Assert.Equal(10 - 4, fresh.ChunksAllocated);
    }

    [Fact]
    public void An_entry_larger_than_a_chunk_or_past_the_budget_is_refused_and_clear_frees_everything()
    {
        var arena = new EntryArena(EntryArena.ChunkBytes);
        Assert.False(arena.TryAdd(new byte[EntryArena.ChunkBytes + 1], out _));
        Assert.True(arena.TryAdd(new byte[EntryArena.ChunkBytes - 10], out var first));
        Assert.False(arena.TryAdd(new byte[11], out _));
        Assert.True(arena.TryAdd(new byte[10], out _));
        arena.Release(first);
        arena.Clear();
        Assert.Equal((0, 0L), (arena.Count, arena.HeldBytes));
        Assert.True(arena.TryAdd(new byte[100], out var again));
        Assert.Equal(100, arena.Get(again).Length);
    }
}
