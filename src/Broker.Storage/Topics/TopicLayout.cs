using Broker.Storage.Logs;

namespace Broker.Storage.Topics;

/// <summary>
/// Page and segment sizes a topic's logs were created with, in bits. They are part of the data on disk (an entry
/// never crosses a page, a segment file holds a fixed address range), so a topic keeps the layout it was created
/// with, recorded in its metadata, whatever the broker's settings are later.
/// </summary>
internal sealed record TopicLayout(int LogPageSizeBits, int LogSegmentSizeBits, int GroupStatePageSizeBits)
{
    private const int GroupStateSegmentSizeBits = 24;

    public LogGeometry LogGeometry => LogGeometry.TwoPages(LogPageSizeBits, LogSegmentSizeBits);

    public LogGeometry GroupStateGeometry => LogGeometry.TwoPages(GroupStatePageSizeBits, GroupStateSegmentSizeBits);

    /// <summary>The layout new topics get from the current settings.</summary>
    public static TopicLayout ForNewTopic(StorageOptions options) =>
        new(options.TopicPageSizeBits, Math.Max(options.TopicSegmentSizeBits, options.TopicPageSizeBits), GroupStatePageSizeBits: 15);

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
