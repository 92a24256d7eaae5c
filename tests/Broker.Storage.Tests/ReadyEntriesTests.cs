using Broker.Storage.Groups;
using Broker.Storage.Logs;

namespace Broker.Storage.Tests;

/// <summary>
/// A priority group's kept read-ahead: when urgent messages are taken and old ones stay behind, scattered over the
/// chunks, the group still keeps its whole budget of entries (copied together), never holds more than twice it, and
/// hands every entry back intact, reusing its chunks instead of allocating new ones; entries too large for the chunks
/// are kept too.
/// </summary>
public sealed class ReadyEntriesTests
{
    private static byte[] Entry(long offset, int length)
    {
        var bytes = new byte[length];
        new Random((int)offset).NextBytes(bytes);
        return bytes;
    }

    // Keeps entries until the budget is used, or until a thousand in a row were not kept (then the test fails on what
    // was kept instead of looping).
    private static long KeepUntilFull(ReadyEntries entries, long from, int length)
    {
        long offset = from;
        for (int refusedInARow = 0; entries.HasRoom && refusedInARow < 1000; offset++)
        {
            int before = entries.Count;
            entries.Keep(offset, Entry(offset, length));
            refusedInARow = entries.Count > before ? 0 : refusedInARow + 1;
        }
        return offset;
    }

    [Fact]
    public void Entries_left_behind_in_every_chunk_do_not_shrink_the_read_ahead_and_all_read_back_intact()
    {
        var entries = new ReadyEntries();
        const int Length = 1000;
        long end = KeepUntilFull(entries, 0, Length);
        int full = entries.Count;
        Assert.True(full * (long)Length >= ConsumerGroup.ReadyEntryBudgetBytes);

        // Three times over: urgent ones go out, one in ten stays behind in every chunk, new ones are read ahead.
        long allocatedAfterFirstRound = 0;
        for (int round = 0; round < 3; round++)
        {
            var lease = new ReadBufferLease();
            for (long offset = 0; offset < end; offset++)
            {
                if (offset % 10 != 0 && entries.TryTake(offset, lease, out var taken))
                    Assert.Equal(Entry(offset, Length), taken.ToArray());
            }
            lease.Release();
            end = KeepUntilFull(entries, end, Length);
            Assert.True(entries.Count >= full - 1, $"round {round}: the read-ahead kept {entries.Count} entries, {full} before the gaps");
            Assert.True(entries.HeldBytes <= 2 * ConsumerGroup.ReadyEntryBudgetBytes);
            // Chunks freed by the picks (and those a compaction copied from) are what the next reads fill: once the
            // arena has its chunks, a round allocates none (with 64 free chunks kept, each round allocated ~800).
            if (round == 2)
                Assert.Equal(allocatedAfterFirstRound, entries.ChunksAllocated);
            else if (round == 1)
                allocatedAfterFirstRound = entries.ChunksAllocated;
        }
        Assert.True(entries.Compactions >= 1, "the test meant the chunks to fill with gaps");

        var last = new ReadBufferLease();
        int handedBack = 0;
        for (long offset = 0; offset < end; offset++)
        {
            if (entries.TryTake(offset, last, out var taken))
            {
                Assert.Equal(Entry(offset, Length), taken.ToArray());
                handedBack++;
            }
        }
        Assert.Equal((0, full - 1 <= handedBack), (entries.Count, true));
    }

    [Fact]
    public void An_entry_larger_than_a_quarter_chunk_is_kept_on_its_own_and_counts_against_the_budget()
    {
        var entries = new ReadyEntries();
        int length = ReadyEntries.MaxArenaEntryBytes + 1;
        entries.Keep(7, Entry(7, length));
        entries.Keep(8, Entry(8, 100));
        Assert.Equal(2, entries.Count);
        Assert.True(entries.TryTake(7, new ReadBufferLease(), out var large));
        Assert.Equal(Entry(7, length), large.ToArray());
        Assert.False(entries.TryTake(7, new ReadBufferLease(), out _));

        long end = KeepUntilFull(entries, 100, 200_000);
        Assert.InRange(end - 100, ConsumerGroup.ReadyEntryBudgetBytes / 200_000, ConsumerGroup.ReadyEntryBudgetBytes / 200_000 + 1);
    }
}
