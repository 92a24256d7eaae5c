using System.Collections;
using System.Globalization;
using System.Security.Cryptography.X509Certificates;

namespace Broker.Client;

/// <summary>
/// <see cref="BrokerClientOptions"/> with every gap filled from the <c>QUEUE_PLATFORM_*</c> environment and the
/// defaults, checked once: the clients read only this.
/// </summary>
internal sealed record BrokerSettings
{
    internal const string Prefix = "QUEUE_PLATFORM_";
    internal const int DefaultPort = 7100;

    public required IReadOnlyList<Uri> Listeners { get; init; }
    /// <summary>The CAs of <see cref="BrokerClientOptions.CaFile"/>, trusted instead of the system store; null: the system store.</summary>
    public X509Certificate2Collection? TrustedRoots { get; init; }
    public string? Topic { get; init; }
    public string? Group { get; init; }
    public BrokerStart Start { get; init; }
    public TimeSpan MaxTimeout { get; init; }
    public TimeSpan MaxHoldTime { get; init; }
    public int MaxInFlight { get; init; }
    public int? MaxDeliveries { get; init; }
    public RedeliveryBackoff? RedeliveryBackoff { get; init; }
    public bool OrderedByKey { get; init; }
    public bool Strict { get; init; }
    public TimeSpan Linger { get; init; }
    public int MaxBatchMessages { get; init; }
    public int MaxBatchBytes { get; init; }
    public int BufferMessages { get; init; }
    public TimeSpan DeliveryTimeout { get; init; }
    public TimeSpan RetryBackoff { get; init; }
    public TimeSpan ReconnectTimeout { get; init; }
    public string? ApiKey { get; init; }

    /// <summary>The topic, for a consumer: required.</summary>
    public string RequiredTopic => Topic ?? throw Missing("TOPIC", nameof(BrokerClientOptions.Topic), "the topic to consume");

    /// <summary>The group, for a consumer: <c>group_&lt;topic&gt;</c> unless set.</summary>
    public string EffectiveGroup => Group ?? "group_" + RequiredTopic;

    /// <summary>Reads <paramref name="options"/>, then the environment (<paramref name="environment"/> in tests), then the defaults.</summary>
    public static BrokerSettings Resolve(BrokerClientOptions? options, IReadOnlyDictionary<string, string?>? environment = null)
    {
        options ??= new BrokerClientOptions();
        var env = environment ?? ReadEnvironment();
        var reader = new EnvironmentReader(env);
        int port = options.Port ?? reader.Int("PORT", nameof(options.Port)) ?? DefaultPort;
        if (port is <= 0 or > 65535)
            throw Invalid("PORT", nameof(options.Port), port.ToString(CultureInfo.InvariantCulture), "a port from 1 to 65535");
        string? listeners = Blank(options.Listeners) ?? Blank(reader.Text("LISTENERS"));
        if (listeners is null || listeners.Trim(' ', ',').Length == 0)
            throw Missing("LISTENERS", nameof(options.Listeners), "the broker's addresses, comma-separated (host or host:port; QUEUE_PLATFORM_PORT for the rest, default 7100)");
        string? caFile = Blank(options.CaFile) ?? Blank(reader.Text("CA_FILE"));
        bool tls = options.Tls ?? reader.Flag("TLS", nameof(options.Tls)) ?? caFile is not null;
        return new BrokerSettings
        {
            Listeners = ParseListeners(listeners, port, tls),
            TrustedRoots = ReadCaFile(caFile),
            Topic = Blank(options.Topic) ?? Blank(reader.Text("TOPIC")),
            Group = Blank(options.Group) ?? Blank(reader.Text("GROUP")),
            Start = options.Start ?? reader.Start("START", nameof(options.Start)) ?? BrokerStart.Earliest,
            MaxTimeout = Positive(options.MaxTimeout ?? reader.Seconds("MAX_TIMEOUT", nameof(options.MaxTimeout)) ?? TimeSpan.FromSeconds(300), "MAX_TIMEOUT", nameof(options.MaxTimeout)),
            MaxHoldTime = Positive(options.MaxHoldTime ?? reader.Seconds("MAX_HOLD_TIME", nameof(options.MaxHoldTime)) ?? TimeSpan.FromHours(1), "MAX_HOLD_TIME", nameof(options.MaxHoldTime)),
            MaxInFlight = AtLeastOne(options.MaxInFlight ?? reader.Int("MAX_IN_FLIGHT", nameof(options.MaxInFlight)) ?? 256, "MAX_IN_FLIGHT", nameof(options.MaxInFlight)),
            MaxDeliveries = options.MaxDeliveries ?? reader.Int("MAX_DELIVERIES", nameof(options.MaxDeliveries)),
            RedeliveryBackoff = options.RedeliveryBackoff,
            OrderedByKey = options.OrderedByKey ?? reader.Flag("ORDERED_BY_KEY", nameof(options.OrderedByKey)) ?? false,
            Strict = options.Strict ?? reader.Flag("STRICT", nameof(options.Strict)) ?? false,
            Linger = options.Linger ?? reader.Seconds("LINGER", nameof(options.Linger)) ?? TimeSpan.FromMilliseconds(5),
            MaxBatchMessages = AtLeastOne(options.MaxBatchMessages ?? reader.Int("MAX_BATCH_MESSAGES", nameof(options.MaxBatchMessages)) ?? 1000, "MAX_BATCH_MESSAGES", nameof(options.MaxBatchMessages)),
            MaxBatchBytes = AtLeastOne(options.MaxBatchBytes ?? reader.Int("MAX_BATCH_BYTES", nameof(options.MaxBatchBytes)) ?? 4 << 20, "MAX_BATCH_BYTES", nameof(options.MaxBatchBytes)),
            BufferMessages = AtLeastOne(options.BufferMessages ?? reader.Int("BUFFER_MESSAGES", nameof(options.BufferMessages)) ?? 10_000, "BUFFER_MESSAGES", nameof(options.BufferMessages)),
            DeliveryTimeout = Positive(options.DeliveryTimeout ?? reader.Seconds("DELIVERY_TIMEOUT", nameof(options.DeliveryTimeout)) ?? TimeSpan.FromSeconds(120), "DELIVERY_TIMEOUT", nameof(options.DeliveryTimeout)),
            RetryBackoff = Positive(options.RetryBackoff ?? reader.Seconds("RETRY_BACKOFF", nameof(options.RetryBackoff)) ?? TimeSpan.FromMilliseconds(50), "RETRY_BACKOFF", nameof(options.RetryBackoff)),
            ApiKey = Blank(options.ApiKey) ?? Blank(reader.Text("API_KEY")),
            ReconnectTimeout = Positive(options.ReconnectTimeout ?? reader.Seconds("RECONNECT_TIMEOUT", nameof(options.ReconnectTimeout)) ?? TimeSpan.FromSeconds(120), "RECONNECT_TIMEOUT", nameof(options.ReconnectTimeout)),
        };
    }

    /// <summary>
    /// <c>"a,b:7200"</c> → <c>http://a:7100/</c>, <c>http://b:7200/</c>; a listener without a port gets
    /// <paramref name="port"/>, one without a scheme <c>https://</c> when <paramref name="tls"/>.
    /// </summary>
    internal static IReadOnlyList<Uri> ParseListeners(string listeners, int port, bool tls = false)
    {
        var uris = new List<Uri>();
        foreach (string raw in listeners.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            string text = raw.Contains("://", StringComparison.Ordinal) ? raw : (tls ? "https://" : "http://") + raw;
            if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Host.Length == 0)
                throw Invalid("LISTENERS", nameof(BrokerClientOptions.Listeners), raw, "host, host:port, http://host:port or https://host:port");
            uris.Add(new UriBuilder(uri.Scheme, uri.Host, HasExplicitPort(text) ? uri.Port : port).Uri);
        }
        return uris;
    }

    private static bool HasExplicitPort(string text)
    {
        // After the scheme, an authority ending in ":digits" (an IPv6 literal is bracketed, so its colons do not count).
        string authority = text[(text.IndexOf("://", StringComparison.Ordinal) + 3)..].Split('/')[0];
        int colon = authority.LastIndexOf(':');
        return colon > authority.LastIndexOf(']') && colon < authority.Length - 1 && authority[(colon + 1)..].All(char.IsAsciiDigit);
    }

    /// <summary>The CAs in <paramref name="caFile"/>, read now so that a wrong path fails at configuration, naming the setting.</summary>
    private static X509Certificate2Collection? ReadCaFile(string? caFile)
    {
        try
        {
            return new BrokerTlsOptions { CaFile = caFile }.LoadTrustedRoots();
        }
        catch (ArgumentException error)
        {
            throw Invalid("CA_FILE", nameof(BrokerClientOptions.CaFile), caFile!, $"a readable PEM file of CA certificates ({error.Message})");
        }
    }

    private static IReadOnlyDictionary<string, string?> ReadEnvironment()
    {
        var variables = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            if (entry.Key is string name && name.StartsWith(Prefix, StringComparison.Ordinal))
                variables[name] = entry.Value as string;
        }
        return variables;
    }

    private static string? Blank(string? text) => string.IsNullOrWhiteSpace(text) ? null : text.Trim();

    private static TimeSpan Positive(TimeSpan value, string variable, string property) =>
        value > TimeSpan.Zero ? value : throw Invalid(variable, property, value.ToString(), "a duration above zero");

    private static int AtLeastOne(int value, string variable, string property) =>
        value >= 1 ? value : throw Invalid(variable, property, value.ToString(CultureInfo.InvariantCulture), "a number of at least 1");

    internal static BrokerConfigurationException Missing(string variable, string property, string what) =>
        new(Prefix + variable, $"{Prefix}{variable} is not set (nor {nameof(BrokerClientOptions)}.{property}): {what}");

    internal static BrokerConfigurationException Invalid(string variable, string property, string value, string expected) =>
        new(Prefix + variable, $"{Prefix}{variable} (or {nameof(BrokerClientOptions)}.{property}) is '{value}': expected {expected}");

    /// <summary>Typed reads of the <c>QUEUE_PLATFORM_*</c> variables; an unreadable value names its variable.</summary>
    private readonly struct EnvironmentReader(IReadOnlyDictionary<string, string?> environment)
    {
        public string? Text(string name) =>
            environment.TryGetValue(Prefix + name, out string? value) && !string.IsNullOrWhiteSpace(value) ? value.Trim() : null;

        public int? Int(string name, string property) => Text(name) is not { } text ? null
            : int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value
            : throw Invalid(name, property, text, "a whole number");

        public TimeSpan? Seconds(string name, string property) => Text(name) is not { } text ? null
            : double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && double.IsFinite(value) && value >= 0 && value < 1e9
                ? TimeSpan.FromSeconds(value)
                : throw Invalid(name, property, text, "seconds, for example 300 or 0.5");

        public bool? Flag(string name, string property) => Text(name)?.ToLowerInvariant() switch
        {
            null => null,
            "1" or "true" or "yes" or "on" => true,
            "0" or "false" or "no" or "off" => false,
            var text => throw Invalid(name, property, text, "true or false"),
        };

        public BrokerStart? Start(string name, string property) => Text(name)?.ToLowerInvariant() switch
        {
            null => null,
            "earliest" => BrokerStart.Earliest,
            "latest" => BrokerStart.Latest,
            var text => throw Invalid(name, property, text, "earliest or latest"),
        };
    }
}
