namespace Broker.Client;

/// <summary>Where a consumer group that does not exist yet starts reading.</summary>
public enum BrokerStart
{
    /// <summary>The oldest message still stored (the default).</summary>
    Earliest,
    /// <summary>Only messages published after the group is created.</summary>
    Latest,
}

/// <summary>
/// Settings of a <see cref="BrokerProducer"/>, a <see cref="BrokerConsumer"/> and the hosted worker pool, named like
/// estela's queue adapter. Each property left null is taken from its <c>QUEUE_PLATFORM_*</c> environment variable
/// (named in its documentation), then from the default. So, in order of precedence: what code sets (directly or by
/// binding an <c>IConfiguration</c> section, whose keys are these property names), the environment, the defaults.
/// A required setting missing from all of them is a <see cref="BrokerConfigurationException"/> naming the variable;
/// other <c>QUEUE_PLATFORM_*</c> variables are ignored (deployments pass every one to every process).
/// </summary>
public sealed class BrokerClientOptions
{
    /// <summary>
    /// The brokers, comma-separated: <c>host</c>, <c>host:port</c>, <c>http://host:port</c> or <c>https://host:port</c> (TLS; see <see cref="Tls"/>); a listener without a port
    /// gets <see cref="Port"/>. Required. <c>QUEUE_PLATFORM_LISTENERS</c>. A failed call moves on to the next one.
    /// </summary>
    public string? Listeners { get; set; }

    /// <summary>
    /// TLS for the listeners given without a scheme: true dials them as <c>https://</c>. Default false, or true when
    /// <see cref="CaFile"/> is set; a listener's own <c>http://</c> or <c>https://</c> always wins.
    /// <c>QUEUE_PLATFORM_TLS</c> (true, false).
    /// </summary>
    public bool? Tls { get; set; }

    /// <summary>
    /// PEM file of the CA certificate(s) that signed the broker's certificate: only they are trusted on TLS
    /// connections, instead of the system's roots. Default: none (the system's roots). <c>QUEUE_PLATFORM_CA_FILE</c>.
    /// </summary>
    public string? CaFile { get; set; }

    /// <summary>Port of the listeners that name none. Default 7100. <c>QUEUE_PLATFORM_PORT</c>.</summary>
    public int? Port { get; set; }

    /// <summary>The topic a consumer reads; required for consumers. <c>QUEUE_PLATFORM_TOPIC</c>.</summary>
    public string? Topic { get; set; }

    /// <summary>The consumer group. Default <c>group_&lt;topic&gt;</c>. <c>QUEUE_PLATFORM_GROUP</c>.</summary>
    public string? Group { get; set; }

    /// <summary>Where a group created by this consumer starts. Default earliest. <c>QUEUE_PLATFORM_START</c> (earliest, latest).</summary>
    public BrokerStart? Start { get; set; }

    /// <summary>
    /// How long a consumer may take for a message or batch before the broker lends it to another consumer: this
    /// consumer's visibility timeout. Default 300 s. <c>QUEUE_PLATFORM_MAX_TIMEOUT</c> (seconds). While the application
    /// holds a message its lease is extended automatically, up to <see cref="MaxHoldTime"/>.
    /// </summary>
    public TimeSpan? MaxTimeout { get; set; }

    /// <summary>
    /// How long automatic lease extension keeps a message the application holds (a hung handler must not keep it
    /// forever); after that its lease runs out and it goes to another consumer. Default 1 hour.
    /// <c>QUEUE_PLATFORM_MAX_HOLD_TIME</c> (seconds).
    /// </summary>
    public TimeSpan? MaxHoldTime { get; set; }

    /// <summary>Most deliveries a consumer holds unsettled, prefetched ones included. Default 256. <c>QUEUE_PLATFORM_MAX_IN_FLIGHT</c>.</summary>
    public int? MaxInFlight { get; set; }

    /// <summary>Deliveries after which a failing message goes to the dead-letter topic (for a group this consumer creates). Default: the broker's (5). <c>QUEUE_PLATFORM_MAX_DELIVERIES</c>.</summary>
    public int? MaxDeliveries { get; set; }

    /// <summary>
    /// The broker's wait before delivering a failed message again (for a group this consumer creates), when the failure
    /// names no delay: a nack without one, a lease that ran out. Default: no wait. Set in code or configuration only.
    /// </summary>
    public RedeliveryBackoff? RedeliveryBackoff { get; set; }

    /// <summary>
    /// For a group this consumer creates: messages with the same key are delivered one at a time, in publish order.
    /// Default false. <c>QUEUE_PLATFORM_ORDERED_BY_KEY</c>.
    /// </summary>
    public bool? OrderedByKey { get; set; }

    /// <summary>
    /// What disposing a consumer does with the last message iteration handed out and the application did not settle:
    /// false (default) acknowledges it, as a Kafka consumer commits what it read; true releases it (it comes back).
    /// <c>QUEUE_PLATFORM_STRICT</c>.
    /// </summary>
    public bool? Strict { get; set; }

    /// <summary>How long a batch waits, from its first message, for more before the producer publishes it. Default 5 ms. <c>QUEUE_PLATFORM_LINGER</c> (seconds).</summary>
    public TimeSpan? Linger { get; set; }

    /// <summary>Most messages in one publish batch. Default 1000. <c>QUEUE_PLATFORM_MAX_BATCH_MESSAGES</c>.</summary>
    public int? MaxBatchMessages { get; set; }

    /// <summary>Most bytes (encoded messages: payloads, keys, headers) in one publish batch; a larger message goes alone. Default 4 MiB. <c>QUEUE_PLATFORM_MAX_BATCH_BYTES</c>.</summary>
    public int? MaxBatchBytes { get; set; }

    /// <summary>
    /// Most messages the producer holds that are not yet published (buffered or in flight); a send then waits for
    /// room (backpressure). Default 10000. <c>QUEUE_PLATFORM_BUFFER_MESSAGES</c>.
    /// </summary>
    public int? BufferMessages { get; set; }

    /// <summary>
    /// How long the producer keeps retrying a batch that fails with UNAVAILABLE (broker down, restarting, shutting
    /// down) before the batch fails. Default 120 s. <c>QUEUE_PLATFORM_DELIVERY_TIMEOUT</c> (seconds).
    /// </summary>
    public TimeSpan? DeliveryTimeout { get; set; }

    /// <summary>First pause between retries; doubled each time (with jitter) up to 2 s. Default 50 ms. <c>QUEUE_PLATFORM_RETRY_BACKOFF</c> (seconds).</summary>
    public TimeSpan? RetryBackoff { get; set; }

    /// <summary>How long a consumer keeps subscribing again after its stream broke before it gives up. Default 120 s. <c>QUEUE_PLATFORM_RECONNECT_TIMEOUT</c> (seconds).</summary>
    public TimeSpan? ReconnectTimeout { get; set; }

    /// <summary>
    /// The API key calls carry, for a broker that requires one (docs/security.md); none by default.
    /// <c>QUEUE_PLATFORM_API_KEY</c>. Keep it out of source control: the environment or a secret store.
    /// </summary>
    public string? ApiKey { get; set; }

    /// <summary>A copy, so a caller's later changes do not reach a running client.</summary>
    public BrokerClientOptions Clone() => (BrokerClientOptions)MemberwiseClone();
}
