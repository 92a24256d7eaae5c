namespace Broker.Storage.Logs;

/// <summary>
/// Sizes of one FasterLog, in bits (a value of 18 means 256 KiB). The memory part (two or four pages) is what each
/// open log keeps in RAM, so it is sized for many logs, not one; entries larger than a page are stored as fragments
/// (<see cref="EntryFragments"/>). A segment is one file on disk and the unit in which truncation frees space.
/// </summary>
public sealed record LogGeometry(int PageSizeBits, int MemorySizeBits, int SegmentSizeBits)
{
    /// <summary>Largest entry stored whole on one page, leaving room for FasterLog's entry header.</summary>
    public int MaxEntryBytes => (1 << PageSizeBits) - 64;

    /// <summary>Bytes of pages this log keeps in memory once open.</summary>
    public long MemoryBytes => 1L << MemorySizeBits;

    /// <summary>Two pages of <paramref name="pageSizeBits"/> in memory, segments of <paramref name="segmentSizeBits"/>.</summary>
    public static LogGeometry TwoPages(int pageSizeBits, int segmentSizeBits) => Pages(pageSizeBits, segmentSizeBits, memoryPageBits: 1);

    /// <summary>Four pages of <paramref name="pageSizeBits"/> in memory, segments of <paramref name="segmentSizeBits"/>.</summary>
    public static LogGeometry FourPages(int pageSizeBits, int segmentSizeBits) => Pages(pageSizeBits, segmentSizeBits, memoryPageBits: 2);

    private static LogGeometry Pages(int pageSizeBits, int segmentSizeBits, int memoryPageBits) =>
        new(pageSizeBits, pageSizeBits + memoryPageBits, Math.Max(segmentSizeBits, pageSizeBits));
}
