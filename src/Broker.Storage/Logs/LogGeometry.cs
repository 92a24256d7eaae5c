namespace Broker.Storage.Logs;

/// <summary>
/// Sizes of one FasterLog, in bits (a value of 22 means 4 MiB). A page must hold the largest entry; the memory
/// part holds at least two pages; a segment is one file on disk and the unit in which truncation frees space.
/// </summary>
public sealed record LogGeometry(int PageSizeBits, int MemorySizeBits, int SegmentSizeBits)
{
    /// <summary>Largest entry a page of this geometry holds, leaving room for FasterLog's entry header.</summary>
    public int MaxEntryBytes => (1 << PageSizeBits) - 64;

    /// <summary>The smallest page that holds an entry of <paramref name="entryBytes"/>, and two pages of memory.</summary>
    public static LogGeometry ForLargestEntry(int entryBytes, int minimumPageSizeBits, int segmentSizeBits)
    {
        int pageBits = minimumPageSizeBits;
        while ((1 << pageBits) - 64 < entryBytes)
            pageBits++;
        return new LogGeometry(pageBits, pageBits + 1, Math.Max(segmentSizeBits, pageBits));
    }
}
