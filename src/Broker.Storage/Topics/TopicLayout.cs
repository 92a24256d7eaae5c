using Broker.Storage.Logs;

namespace Broker.Storage.Topics;

/// <summary>
/// Page and segment sizes a topic's logs were created with, in bits. They are part of the data on disk (an entry
/// never crosses a page, a segment file holds a fixed address range), so a topic keeps the layout it was created
/// with, recorded in its metadata, whatever the broker's settings are later.
/// </summary>
internal sealed record TopicLayout(int LogPageSizeBits, int LogSegmentSizeBits, int GroupStatePageSizeBits)
{
    /// <summary>Page size of topics created past the page budget, and of dead-letter topics, in bits (64 KiB).</summary>
    public const int SmallPageSizeBits = 16;

    private const int NewGroupStatePageSizeBits = 15;

    private const int GroupStateSegmentSizeBits = 24;

    /// <summary>
    /// The message log's sizes. A full-size topic (pages above <see cref="SmallPageSizeBits"/>, up to 1 MiB for four)
    /// keeps four pages in memory, others two. Why: an append that needs a new page waits until the page it replaces
    /// is flushed, holding the log's append lock, and with two pages that is the page just filled. W2 measured, five
    /// interleaved pairs: 95.5k msg/s with four 256 KiB pages against 87.0k with two, publish→ack p50 42–53 ms
    /// against 51–59 ms. Not recorded in the topic's metadata: the in-memory size is not part of the data on disk.
    /// </summary>
    public LogGeometry LogGeometry => LogPageSizeBits > SmallPageSizeBits && LogPageSizeBits + 2 <= 20
        ? LogGeometry.FourPages(LogPageSizeBits, LogSegmentSizeBits)
        : LogGeometry.TwoPages(LogPageSizeBits, LogSegmentSizeBits);

    public LogGeometry GroupStateGeometry => LogGeometry.TwoPages(GroupStatePageSizeBits, GroupStateSegmentSizeBits);

    /// <summary>Memory the topic's logs keep once open: the message log's pages and two of the group-state log.</summary>
    public long PageMemoryBytes => LogGeometry.MemoryBytes + GroupStateGeometry.MemoryBytes;

    /// <summary>
    /// The layout a new topic gets. It has <see cref="StorageOptions.TopicPageSizeBits"/> pages while the pages of
    /// every topic, this one included, fit in <see cref="StorageOptions.TopicPageBudgetMiB"/>; past that budget, and
    /// for dead-letter topics, pages of <see cref="SmallPageSizeBits"/>. Why: large pages buy throughput for a few
    /// busy topics, but a broker with a thousand topics spreads its traffic thin, and large pages for every topic would
    /// be most of its memory (measured, W8 with 1,000 topics: 1,137 MiB with 256 KiB pages, 691 MiB with 64 KiB
    /// pages, at the same throughput). Dead letters are rare by nature.
    /// </summary>
    public static TopicLayout ForNewTopic(StorageOptions options, long pageMemoryInUse, bool deadLetters)
    {
        int smallBits = Math.Min(SmallPageSizeBits, options.TopicPageSizeBits);
        var full = WithPageBits(options, options.TopicPageSizeBits);
        bool fits = pageMemoryInUse + full.PageMemoryBytes <= options.TopicPageBudgetMiB * (1L << 20);
        return deadLetters || !fits ? WithPageBits(options, smallBits) : full;
    }

    private static TopicLayout WithPageBits(StorageOptions options, int pageBits) =>
        new(pageBits, Math.Max(options.TopicSegmentSizeBits, pageBits), NewGroupStatePageSizeBits);

    /// <summary>
    /// The layout of a topic created before layouts were recorded: pages were then sized to hold the largest
    /// message whole (at least 1 MiB), group-state pages to hold the largest ack frame (at least 256 KiB).
    /// </summary>
    public static TopicLayout Legacy(StorageOptions options)
    {
        int logPageBits = SmallestPageBits(options.MaxMessageBytes + 64, minimumBits: 20);
        int groupPageBits = SmallestPageBits(options.MaxAcksPerFrame * 8 + 1024, minimumBits: 18);
        return new TopicLayout(logPageBits, Math.Max(options.TopicSegmentSizeBits, logPageBits), groupPageBits);
    }

    private static int SmallestPageBits(int entryBytes, int minimumBits)
    {
        int bits = minimumBits;
        while ((1 << bits) - 64 < entryBytes)
            bits++;
        return bits;
    }
}
