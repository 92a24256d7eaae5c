using Broker.Storage.Logs;

namespace Broker.Storage.Tests;

public sealed class ReadBufferLeaseTests
{
    [Fact]
    public void Copies_keep_their_bytes_across_chunk_boundaries_and_large_entries_get_their_own_array()
    {
        var lease = new ReadBufferLease();
        var entries = Enumerable.Range(0, 300)
            .Select(i => Enumerable.Range(0, i % 50 == 0 ? ReadBufferLease.ChunkBytes + i : 1 + i * 37 % 3_000).Select(j => (byte)(i + j * 3)).ToArray())
            .ToList();

        var copies = entries.Select(entry => lease.Copy(entry)).ToList();

        for (int i = 0; i < entries.Count; i++)
            Assert.True(entries[i].AsSpan().SequenceEqual(copies[i].Span), $"entry {i} changed");
        // No copy overlaps another: they may share a chunk, never bytes.
        var ranges = copies.Where(c => c.Length <= ReadBufferLease.ChunkBytes)
            .Select(c => System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(c, out var segment) ? segment : default)
            .GroupBy(segment => segment.Array)
            .ToList();
        Assert.True(ranges.Count > 1, "300 entries of up to 3 KB span several chunks");
        foreach (var chunk in ranges)
        {
            var ordered = chunk.OrderBy(segment => segment.Offset).ToList();
            for (int i = 1; i < ordered.Count; i++)
                Assert.True(ordered[i - 1].Offset + ordered[i - 1].Count <= ordered[i].Offset);
        }
        lease.Release();
        lease.Release(); // a second release gives nothing back twice
    }

    [Fact]
    public void A_skipped_entry_gives_its_space_back_to_the_next_copy()
    {
        var lease = new ReadBufferLease();
        var kept = lease.Copy(new byte[] { 1, 2, 3 });
        var skipped = lease.Copy(new byte[] { 4, 5, 6, 7 });

        lease.UndoLastCopy(skipped);
        var next = lease.Copy(new byte[] { 8, 9 });
        lease.UndoLastCopy(kept); // not the last copy any more: nothing happens

        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(skipped, out var skippedAt));
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(next, out var nextAt));
        Assert.Same(skippedAt.Array, nextAt.Array);
        Assert.Equal(skippedAt.Offset, nextAt.Offset);
        Assert.Equal(new byte[] { 1, 2, 3 }, kept.ToArray());
        Assert.Equal(new byte[] { 8, 9 }, next.ToArray());
        lease.Release();
    }
}
