using Broker.Storage.Logs;

namespace Broker.Storage;

/// <summary>Settings of the storage layer. Defaults suit a single broker on a small machine.</summary>
public sealed class StorageOptions
{
    /// <summary>Root folder: topics live in <c>&lt;DataDirectory&gt;/topics/&lt;name&gt;/</c>.</summary>
    public string DataDirectory { get; set; } = "data";

    /// <summary>
    /// Largest message accepted, counting key + payload + every header's UTF-8 name and value + 6 bytes per header.
    /// Default 1 MiB.
    /// </summary>
    public int MaxMessageBytes { get; set; } = 1 << 20;

    /// <summary>Most messages in one publish batch. Default 10,000.</summary>
    public int MaxBatchMessages { get; set; } = 10_000;

    /// <summary>Most acks in one ack frame. Default 10,000.</summary>
    public int MaxAcksPerFrame { get; set; } = 10_000;

    /// <summary>Size of one topic log file on disk, in bits (26 = 64 MiB): the unit in which disk space is freed.</summary>
    public int TopicSegmentSizeBits { get; set; } = 26;

    /// <summary>The group-state log is checkpointed (snapshots written, older records dropped) past this size. Default 4 MiB.</summary>
    public long GroupStateCheckpointBytes { get; set; } = 4 << 20;

    /// <summary>How often topics give back disk below their groups' ack floors and checkpoint group state. Default 1 s.</summary>
    public TimeSpan MaintenanceInterval { get; set; } = TimeSpan.FromSeconds(1);

    internal LogGeometry TopicLogGeometry =>
        LogGeometry.ForLargestEntry(MaxMessageBytes + 64, minimumPageSizeBits: 20, TopicSegmentSizeBits);

    internal LogGeometry GroupStateLogGeometry =>
        LogGeometry.ForLargestEntry(MaxAcksPerFrame * 8 + 1024, minimumPageSizeBits: 18, segmentSizeBits: 24);

    internal string TopicsDirectory => Path.Combine(Path.GetFullPath(DataDirectory), "topics");

    internal string TrashDirectory => Path.Combine(Path.GetFullPath(DataDirectory), "trash");

    /// <summary>Throws <see cref="ArgumentException"/> when a setting is out of range.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(DataDirectory))
            throw new ArgumentException("DataDirectory must be set");
        if (MaxMessageBytes is < 1 or > 64 << 20)
            throw new ArgumentException("MaxMessageBytes must be between 1 byte and 64 MiB");
        if (MaxBatchMessages is < 1 or > 1_000_000)
            throw new ArgumentException("MaxBatchMessages must be between 1 and 1,000,000");
        if (MaxAcksPerFrame is < 1 or > 1_000_000)
            throw new ArgumentException("MaxAcksPerFrame must be between 1 and 1,000,000");
        if (GroupStateCheckpointBytes < 1)
            throw new ArgumentException("GroupStateCheckpointBytes must be positive");
        if (MaintenanceInterval <= TimeSpan.Zero)
            throw new ArgumentException("MaintenanceInterval must be positive");
        if (TopicSegmentSizeBits is < 20 or > 34)
            throw new ArgumentException("TopicSegmentSizeBits must be between 20 and 34");
    }
}
