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

    /// <summary>
    /// Page size of a topic log, in bits (18 = 256 KiB). Each open topic keeps four such pages in memory (two for
    /// topics past <see cref="TopicPageBudgetMiB"/>, which get 64 KiB pages), so this sets the broker's memory per
    /// topic; larger pages mean fewer, larger writes for a single busy topic. Messages larger than a page are stored as
    /// fragments. Default 18.
    /// </summary>
    public int TopicPageSizeBits { get; set; } = 18;

    /// <summary>
    /// Page memory, in MiB, that topics may take at <see cref="TopicPageSizeBits"/>: a topic created while the pages
    /// of all topics (open or not, itself included) fit in this budget gets full-size pages; later topics get 64 KiB
    /// pages, as do dead-letter topics. A topic keeps its page size for life. Default 64 (about 60 topics with four
    /// 256 KiB pages in memory).
    /// </summary>
    public int TopicPageBudgetMiB { get; set; } = 64;

    /// <summary>
    /// Most logs committing at the same time, and the number of threads that write to disk. Commits waiting for a
    /// slot hold no thread and batch more into their next commit. Default 16.
    /// </summary>
    public int MaxConcurrentCommits { get; set; } = 16;

    /// <summary>
    /// How long a group stays <em>live</em> for retention after its last consumer left (and after the broker started,
    /// for every group): retention never deletes what a live group has not acknowledged. Longer than workers take to
    /// reconnect after a broker restart or a redeploy. Default 5 minutes.
    /// </summary>
    public TimeSpan RetentionIdleGrace { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Retention by age, in ms, given to each dead-letter topic the broker creates (<c>&lt;topic&gt;.dlq</c>, and a
    /// group's named dead-letter topic when missing): letters nobody redrives are deleted once older than this (a
    /// group on the dead-letter topic with a consumer subscribed still holds them). 0 (the default) keeps them until
    /// redriven or until retention is set with UpdateTopic. Topics created before keep theirs.
    /// </summary>
    public long DeadLetterMaxAgeMs { get; set; }

    /// <summary>
    /// How long a message id is remembered: a publish carrying the id of a message published less than this long ago
    /// is answered with that message's offset and stores nothing. Default 5 minutes; 1 second to 7 days.
    /// </summary>
    public TimeSpan DeduplicationWindow { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Most message ids one topic remembers (about 70 bytes each); past that the oldest leave the window early.
    /// Default 500,000 (about 35 MiB for a topic that uses them at full rate).
    /// </summary>
    public int MaxDeduplicationIds { get; set; } = 500_000;

    /// <summary>
    /// Most messages a group ordered by key holds read ahead while they wait for their key's turn (about 50 bytes each);
    /// at the limit it reads no further until a turn passes. Default 100,000; tests lower it.
    /// </summary>
    internal int MaxWaitingForTurn { get; init; } = 100_000;

    /// <summary>Longest message id accepted, in UTF-8 bytes (as SQS's MessageDeduplicationId).</summary>
    public const int MaxMessageIdBytes = 128;

    /// <summary>Room for the headers the broker itself adds (dead-letter provenance) on top of <see cref="MaxMessageBytes"/>.</summary>
    internal const int TrustedHeadroomBytes = 16 << 10;

    /// <summary>How far ahead a scheduled message's delivery time may lie: ten years, so any real schedule fits.</summary>
    public static readonly TimeSpan MaxScheduleHorizon = TimeSpan.FromDays(3650);

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
        if (MaxConcurrentCommits is < 1 or > 1024)
            throw new ArgumentException("MaxConcurrentCommits must be between 1 and 1,024");
        if (TopicPageSizeBits is < 12 or > 26 || TopicPageSizeBits > TopicSegmentSizeBits)
            throw new ArgumentException("TopicPageSizeBits must be between 12 and 26, and not above TopicSegmentSizeBits");
        if (RetentionIdleGrace < TimeSpan.Zero)
            throw new ArgumentException("RetentionIdleGrace must not be negative");
        if (DeadLetterMaxAgeMs < 0)
            throw new ArgumentException("DeadLetterMaxAgeMs must not be negative (0 means no limit)");
        if (DeduplicationWindow < TimeSpan.FromSeconds(1) || DeduplicationWindow > TimeSpan.FromDays(7))
            throw new ArgumentException("DeduplicationWindow must be between 1 second and 7 days");
        if (MaxDeduplicationIds is < 1 or > 100_000_000)
            throw new ArgumentException("MaxDeduplicationIds must be between 1 and 100,000,000");
        if (TopicPageBudgetMiB is < 0 or > 1 << 20)
            throw new ArgumentException("TopicPageBudgetMiB must be between 0 and 1,048,576");
    }
}
