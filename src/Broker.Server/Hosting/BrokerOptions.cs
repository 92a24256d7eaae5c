using System.Net;
using Broker.Storage;

namespace Broker.Server.Hosting;

/// <summary>
/// Everything the broker process is configured with. Sources, later ones winning: defaults, <c>appsettings.json</c> in
/// the folder of the server's binary (when present), the JSON file named by <c>--config</c>, environment variables prefixed <c>BROKER_</c> (<c>BROKER_PORT=7100</c>), command line
/// (<c>--port 7100 --data ./data --host 127.0.0.1</c>, or any property as <c>--MaxMessageBytes 2097152</c>).
/// </summary>
public sealed class BrokerOptions
{
    /// <summary>The port the broker listens on unless told otherwise.</summary>
    public const int DefaultPort = 7100;

    /// <summary>Address to listen on. Loopback by default: exposing the broker is a deliberate choice.</summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>TCP port; 0 picks a free one (the chosen address is printed and exposed by <see cref="BrokerHost.Address"/>).</summary>
    public int Port { get; set; } = DefaultPort;

    /// <summary>The HTTP/1.1 port (metrics, health) unless told otherwise.</summary>
    public const int DefaultHttpPort = 7180;

    /// <summary>
    /// Port of the HTTP/1.1 listener, on <see cref="Host"/>: Prometheus metrics at <c>/metrics</c>, health at
    /// <c>/healthz</c> (the SQS API and the web view will join them). Its own port because one cleartext port cannot
    /// serve both HTTP/2 (gRPC) and HTTP/1.1. Default 7180, or 0 (a free port) when <see cref="Port"/> is 0, so that
    /// whoever asks for any free gRPC port (tests) does not collide on a fixed HTTP one; -1 turns the listener off.
    /// </summary>
    public int? HttpPort { get; set; }

    internal int? EffectiveHttpPort => HttpPort switch
    {
        null => Port == 0 ? 0 : DefaultHttpPort,
        -1 => null,
        var port => port,
    };

    /// <summary>
    /// PEM file of the TLS certificate both listeners serve (gRPC and HTTP), optionally followed by its intermediates
    /// (a fullchain.pem). Empty (the default): cleartext. Set together with <see cref="TlsKeyFile"/>. Read again when
    /// either file changes (docs/security.md, "TLS").
    /// </summary>
    public string TlsCertificateFile { get; set; } = "";

    /// <summary>PEM file of the private key of <see cref="TlsCertificateFile"/> (unencrypted). Empty (the default): cleartext.</summary>
    public string TlsKeyFile { get; set; } = "";

    internal bool TlsEnabled => TlsCertificateFile.Length > 0;

    /// <summary>
    /// Console log format: <c>simple</c> (one line per event, the default) or <c>json</c> (one JSON object per line, for
    /// log shippers).
    /// </summary>
    public string LogFormat { get; set; } = "simple";

    /// <summary>
    /// Lowest level logged: Trace, Debug, Information, Warning (the default), Error, Critical or None. The shutdown's
    /// phases are logged at Information unless this is Error or above.
    /// </summary>
    public LogLevel LogLevel { get; set; } = LogLevel.Warning;

    /// <summary>Folder of the FASTER files.</summary>
    public string DataDirectory { get; set; } = "data";

    /// <summary>
    /// When true (the default, like Kafka's auto.create.topics.enable), a publish or subscribe that names a topic that
    /// does not exist creates it first, durably, as <c>Admin.CreateTopic</c> would; a name that breaks the naming rules
    /// is still refused (1002). Off for locked-down deployments: only <c>Admin.CreateTopic</c> creates topics, and a
    /// publish or subscribe to an unknown topic fails with NOT_FOUND (1001).
    /// </summary>
    public bool AutoCreateTopics { get; set; } = true;

    /// <summary>
    /// When true, every call must carry an API key (gRPC: <c>authorization: Bearer &lt;key&gt;</c>; SQS: a SigV4
    /// signature made with a key created for SQS; HTTP: Bearer or Basic) and may do only what the key's grants allow
    /// (docs/security.md). Off by default, for a broker on loopback; required to listen beyond it (see
    /// <see cref="AllowUnauthenticatedRemote"/>).
    /// </summary>
    public bool RequireApiKeys { get; set; }

    /// <summary>The keys file; empty (the default) is <c>keys.json</c> in <see cref="DataDirectory"/>.</summary>
    public string KeysFile { get; set; } = "";

    /// <summary>
    /// What answers without a key while <see cref="RequireApiKeys"/> is on, a comma-separated list of <c>health</c> (the
    /// gRPC health service and <c>/healthz</c>) and <c>metrics</c> (<c>/metrics</c>); empty closes both. Default
    /// <c>health</c>: probes rarely carry credentials, and health tells nothing about the data.
    /// </summary>
    public string OpenEndpoints { get; set; } = "health";

    /// <summary>
    /// Lets the broker listen on an address other than loopback without <see cref="RequireApiKeys"/>: anyone who
    /// reaches the port could then read and delete every queue. Off by default, so such a start fails with a message
    /// saying so; set it only behind a network boundary you trust.
    /// </summary>
    public bool AllowUnauthenticatedRemote { get; set; }

    /// <summary>
    /// Host names (comma-separated) the web view and its API answer to while <see cref="RequireApiKeys"/> is off, besides
    /// <c>localhost</c> and IP addresses. Without keys nothing else guards them, and a web page can point a host name
    /// of its own at 127.0.0.1 (DNS rebinding) and then read the view or press its buttons from the user's browser:
    /// the Host header then names the page's domain, so the broker refuses it (403).
    /// </summary>
    public string WebHosts { get; set; } = "";

    internal bool IsWebHost(string host) =>
        host.Equals("localhost", StringComparison.OrdinalIgnoreCase)
        || IPAddress.TryParse(host.Trim('[', ']'), out _)
        || WebHosts.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Contains(host, StringComparer.OrdinalIgnoreCase);

    internal string KeysFilePath => KeysFile.Length > 0 ? KeysFile : Path.Combine(DataDirectory, "keys.json");

    internal string BootstrapTokenPath => Path.Combine(Path.GetDirectoryName(Path.GetFullPath(KeysFilePath))!, "bootstrap.token");

    internal bool IsOpen(string endpoint) =>
        !RequireApiKeys || OpenEndpoints.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Contains(endpoint, StringComparer.OrdinalIgnoreCase);

    /// <summary>Largest message (key + payload + headers), in bytes. Default 1 MiB.</summary>
    public int MaxMessageBytes { get; set; } = 1 << 20;

    /// <summary>
    /// The largest SQS request body, refused as it arrives: ten messages of <see cref="MaxMessageBytes"/>, base64 (the
    /// query protocol's encoding of binary attributes grows them by a third) and their attributes, with room to spare.
    /// </summary>
    public long MaxSqsRequestBytes => 16L * MaxMessageBytes + (64 << 10);

    /// <summary>Most messages in one publish batch.</summary>
    public int MaxBatchMessages { get; set; } = 10_000;

    /// <summary>Size of one topic log file, in bits (26 = 64 MiB): the unit in which a drained topic frees disk.</summary>
    public int TopicSegmentSizeBits { get; set; } = 26;

    /// <summary>Page size of a topic log in bits (18 = 256 KiB); each open topic keeps four pages in memory (two past the page budget). See <see cref="StorageOptions.TopicPageSizeBits"/>.</summary>
    public int TopicPageSizeBits { get; set; } = 18;

    /// <summary>Page memory in MiB that topics may take at full page size; later topics get 64 KiB pages. See <see cref="StorageOptions.TopicPageBudgetMiB"/>.</summary>
    public int TopicPageBudgetMiB { get; set; } = 64;

    /// <summary>Most logs committing at once. See <see cref="StorageOptions.MaxConcurrentCommits"/>.</summary>
    public int MaxConcurrentCommits { get; set; } = 16;

    /// <summary>How often topics free disk below their groups' ack floors and checkpoint group state, in ms.</summary>
    public int MaintenanceIntervalMs { get; set; } = 1000;

    /// <summary>Group-state log size past which it is checkpointed, in bytes. Default 4 MiB.</summary>
    public long GroupStateCheckpointBytes { get; set; } = 4 << 20;

    /// <summary>Largest gRPC request frame, in bytes (a whole publish batch must fit). Default 64 MiB.</summary>
    public int MaxRequestBytes { get; set; } = 64 << 20;

    /// <summary>
    /// Most calls (HTTP/2 streams) open at once on one connection; Kestrel's default, set here so it is visible. A
    /// client that opens more waits for a free stream unless it opens more connections (the C# client does, see
    /// <c>BrokerClient</c>). Each open stream can buffer up to 8 MiB of request data. At least 100: .NET's HTTP/2 client
    /// assumes 100 on a new connection until the broker's settings arrive, and a burst of calls past a lower limit
    /// would be refused (REFUSED_STREAM) instead of waiting or moving to another connection.
    /// </summary>
    public int MaxStreamsPerConnection { get; set; } = 100;

    /// <summary>
    /// Most streams (Consume, PublishStream, health watches) one client holds open at once, across its connections: a
    /// client is its API key, or its IP address without keys. Past it a new stream fails with RESOURCE_EXHAUSTED (1303)
    /// and the client's other streams, and every other client, go on. Default 10000.
    /// </summary>
    public int MaxStreamsPerClient { get; set; } = 10_000;

    /// <summary>
    /// Time a new connection has to send the HTTP/2 preface (the first 24 bytes); one that sends nothing, or half of
    /// it, is closed after this. Default 10 s.
    /// </summary>
    public int HandshakeTimeoutMs { get; set; } = 10_000;

    /// <summary>
    /// A connection with no open call for this long is closed (Kestrel's keep-alive timeout); clients reconnect on
    /// their next call. Default 130 s. Keep it above the clients' own idle timeout (.NET's pooled connections: 1
    /// minute), so that clients close idle connections first: a call that starts just as the broker closes the
    /// connection fails.
    /// </summary>
    public int IdleConnectionTimeoutMs { get; set; } = 130_000;

    /// <summary>
    /// Lowest number of thread-pool threads kept ready. FasterLog's commit path blocks pool threads; with .NET's
    /// default minimum (the core count) commits were measured to stall under a busy writer. 0 = 64.
    /// </summary>
    public int MinThreadPoolThreads { get; set; }

    /// <summary>
    /// How long a group still counts as live for retention after its last consumer left, and every group after the
    /// broker started, in ms (docs/semantics.md, "Retention"). Default 300000 (5 minutes).
    /// </summary>
    public int RetentionIdleGraceMs { get; set; } = 300_000;

    /// <summary>
    /// How long a message id is remembered for deduplication, in ms (docs/semantics.md, "Deduplication"): a publish
    /// with the id of a message published less than this long ago stores nothing. Default 300000 (5 minutes); 1 s to 7 days.
    /// </summary>
    public long DeduplicationWindowMs { get; set; } = 300_000;

    /// <summary>
    /// Where to send traces (publish and deliver spans, docs/operations.md), as OTLP over gRPC, for example
    /// <c>http://127.0.0.1:4317</c>; empty (the default): no tracing, and no cost for it.
    /// </summary>
    public string OtlpEndpoint { get; set; } = "";

    /// <summary>Most message ids one topic remembers (about 70 bytes each); past that the oldest leave the window early. Default 500000.</summary>
    public int MaxDeduplicationIds { get; set; } = 500_000;

    /// <summary>
    /// Retention by age given to each dead-letter topic the broker creates, in ms (docs/semantics.md, "Retention");
    /// 0 (the default) keeps dead letters until they are redriven.
    /// </summary>
    public long DeadLetterMaxAgeMs { get; set; }

    /// <summary>
    /// At shutdown, how long consumers get to settle what they hold (acks still work and are durable) before their
    /// streams end, in ms. Default 5000. See docs/semantics.md, "Shutdown".
    /// </summary>
    public int ShutdownGraceMs { get; set; } = 5000;

    /// <summary>The most <see cref="ShutdownGraceMs"/> may be: a stop that takes longer is a hang to a supervisor.</summary>
    public const int MaxShutdownGraceMs = 10 * 60 * 1000;

    internal TimeSpan ShutdownGrace => TimeSpan.FromMilliseconds(ShutdownGraceMs);

    /// <summary>
    /// The host's stop timeout, after which Kestrel aborts what is still open. Longer than everything
    /// <see cref="ShutdownDrain"/> waits for (the grace, the consumers' half-close, their last answers, other calls),
    /// so a drain that keeps its own bounds never gets aborted.
    /// </summary>
    internal TimeSpan HostShutdownTimeout => ShutdownGrace + ShutdownDrain.HalfCloseAllowance + ShutdownDrain.ConsumerFlushAllowance
        + ShutdownDrain.CallsTimeout + TimeSpan.FromSeconds(10);

    internal StorageOptions ToStorageOptions() => new()
    {
        DataDirectory = DataDirectory,
        MaxMessageBytes = MaxMessageBytes,
        MaxBatchMessages = MaxBatchMessages,
        TopicSegmentSizeBits = TopicSegmentSizeBits,
        TopicPageSizeBits = TopicPageSizeBits,
        TopicPageBudgetMiB = TopicPageBudgetMiB,
        MaxConcurrentCommits = MaxConcurrentCommits,
        MaintenanceInterval = TimeSpan.FromMilliseconds(MaintenanceIntervalMs),
        GroupStateCheckpointBytes = GroupStateCheckpointBytes,
        DeadLetterMaxAgeMs = DeadLetterMaxAgeMs,
        RetentionIdleGrace = TimeSpan.FromMilliseconds(RetentionIdleGraceMs),
        DeduplicationWindow = TimeSpan.FromMilliseconds(DeduplicationWindowMs),
        MaxDeduplicationIds = MaxDeduplicationIds,
    };

    internal IPAddress ParseHost() =>
        IPAddress.TryParse(Host, out var address)
            ? address
            : throw new ArgumentException($"Host must be an IP address (for example 127.0.0.1 or 0.0.0.0), not '{Host}'");

    /// <summary>Throws <see cref="ArgumentException"/> for a setting out of range.</summary>
    public void Validate()
    {
        var host = ParseHost();
        if (!IPAddress.IsLoopback(host) && !RequireApiKeys && !AllowUnauthenticatedRemote)
            throw new ArgumentException($"Host {Host} is not a loopback address and RequireApiKeys is off: anyone reaching the port could read and delete every queue. "
                + "Turn on RequireApiKeys (docs/security.md), or set AllowUnauthenticatedRemote if a network boundary you trust guards the port");
        if (OpenEndpoints.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).FirstOrDefault(item => item is not ("health" or "metrics")) is { } unknown)
            throw new ArgumentException($"OpenEndpoints lists health and metrics only, not '{unknown}'");
        if (Port is < 0 or > 65535)
            throw new ArgumentException($"Port must be between 0 and 65535, not {Port}");
        if (LogFormat is not ("simple" or "json"))
            throw new ArgumentException($"LogFormat must be simple or json, not '{LogFormat}'");
        if (HttpPort is < -1 or > 65535)
            throw new ArgumentException($"HttpPort must be between 0 and 65535, or -1 for no HTTP listener, not {HttpPort}");
        if (EffectiveHttpPort is { } httpPort && httpPort != 0 && httpPort == Port)
            throw new ArgumentException($"HttpPort must differ from Port ({Port}): one cleartext port cannot serve both HTTP/2 and HTTP/1.1");
        if (MaxRequestBytes < MaxMessageBytes + 1024)
            throw new ArgumentException("MaxRequestBytes must exceed MaxMessageBytes");
        if (ShutdownGraceMs is < 0 or > MaxShutdownGraceMs)
            throw new ArgumentException($"ShutdownGraceMs must be between 0 and {MaxShutdownGraceMs}, not {ShutdownGraceMs}");
        if (MaxStreamsPerClient < 1)
            throw new ArgumentException("MaxStreamsPerClient must be at least 1");
        if (MaxStreamsPerConnection is < 100 or > 100_000)
            throw new ArgumentException("MaxStreamsPerConnection must be between 100 and 100,000");
        if (HandshakeTimeoutMs is < 1 or > 3_600_000)
            throw new ArgumentException("HandshakeTimeoutMs must be between 1 ms and 1 hour");
        if (IdleConnectionTimeoutMs < 1)
            throw new ArgumentException("IdleConnectionTimeoutMs must be positive");
        if (OtlpEndpoint.Length > 0 && !(Uri.TryCreate(OtlpEndpoint, UriKind.Absolute, out var otlp) && otlp.Scheme is "http" or "https"))
            throw new ArgumentException($"OtlpEndpoint must be an http:// or https:// address, not '{OtlpEndpoint}'");
        if (string.IsNullOrWhiteSpace(TlsCertificateFile) != string.IsNullOrWhiteSpace(TlsKeyFile))
            throw new ArgumentException("TlsCertificateFile and TlsKeyFile go together: set both for TLS, or neither for cleartext");
        ToStorageOptions().Validate();
    }
}
