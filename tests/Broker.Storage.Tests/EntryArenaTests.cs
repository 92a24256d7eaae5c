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
