using Broker.Protocol.V1;
using Grpc.Core;
using Grpc.Net.Client;

namespace Broker.Client;

/// <summary>A group's delivery rules, fixed when it is created; null fields take the broker's defaults.</summary>
public sealed record GroupOptions
{
    /// <summary>Lease per delivery before an unacked message becomes visible again (default 30 s).</summary>
    public TimeSpan? VisibilityTimeout { get; init; }

    /// <summary>Deliveries after which a failing message is dead-lettered (default 5).</summary>
    public int? MaxDeliveries { get; init; }

    /// <summary>Where dead letters go (default "&lt;topic&gt;.dlq").</summary>
    public string? DeadLetterTopic { get; init; }

    /// <summary>
    /// How long a failed message waits before the broker delivers it again, when the failure names no delay (a nack
    /// without one, a lease that ran out). Default: no wait.
    /// </summary>
    public RedeliveryBackoff? RedeliveryBackoff { get; init; }

    /// <summary>
    /// Ordering keys: messages with the same key reach the group in publish order, one at a time (the next once the
    /// previous one is acknowledged or dead-lettered); different keys in parallel. Default false.
    /// </summary>
    public bool OrderedByKey { get; init; }

    /// <summary>
    /// Routing: the group receives only messages whose key matches one of these AMQP topic patterns (words separated by
    /// '.', <c>*</c> one word, <c>#</c> zero or more; no wildcard: an exact key). Default: any key.
    /// </summary>
    public IReadOnlyList<string>? KeyPatterns { get; init; }

    /// <summary>Routing: the group receives only messages carrying every one of these headers with exactly that value.</summary>
    public IReadOnlyDictionary<string, string>? HeaderFilter { get; init; }

    /// <summary>
    /// 2 to 32: hand out ready messages by their priority, highest first, with at least one delivery in 10 going to the
    /// oldest ready message (anti-starvation). Default: publish order.
    /// </summary>
    public int? PriorityLevels { get; init; }

    /// <summary>Hand out the newest ready message first (LIFO). Not with <see cref="PriorityLevels"/>.</summary>
    public bool NewestFirst { get; init; }

    internal GroupSettings ToProto() => new()
    {
        PriorityLevels = (uint)Math.Max(0, PriorityLevels ?? 0),
        NewestFirst = NewestFirst,
        OrderedByKey = OrderedByKey,
        Filter = KeyPatterns is null && HeaderFilter is null ? null
            : new GroupFilter { KeyPatterns = { KeyPatterns ?? [] }, Headers = { (HeaderFilter ?? new Dictionary<string, string>()).ToDictionary() } },
        VisibilityTimeoutMs = VisibilityTimeout is { } timeout ? (uint)Math.Clamp(timeout.TotalMilliseconds, 1, uint.MaxValue) : 0,
        MaxDeliveries = (uint)Math.Max(0, MaxDeliveries ?? 0),
        DeadLetterTopic = DeadLetterTopic ?? "",
        RetryBackoff = RedeliveryBackoff?.ToProto(),
    };
}

/// <summary>
/// A group's retry schedule, applied by the broker: after failed delivery n a message waits
/// <c>min(Max, Initial × Multiplier^(n−1))</c>, shortened at random by up to <see cref="Jitter"/> of itself, so
/// handlers need no backoff code. Example: <c>new RedeliveryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(10), Jitter: 0.2)</c>.
/// </summary>
/// <param name="Initial">The wait after the first failed delivery (1 ms to 12 hours).</param>
/// <param name="Max">The longest wait (at least <paramref name="Initial"/>, at most 12 hours).</param>
/// <param name="Multiplier">Growth per failed delivery, 1 to 10 (default 2).</param>
/// <param name="Jitter">Random fraction of each wait, 0 to 1 (default 0).</param>
public sealed record RedeliveryBackoff(TimeSpan Initial, TimeSpan Max, double Multiplier = 2, double Jitter = 0)
{
    internal Protocol.V1.RetryBackoff ToProto() => new()
    {
        // Out-of-range values are sent as they are (saturated), for the broker to refuse with its reason.
        InitialMs = (uint)Math.Clamp(Initial.TotalMilliseconds, 0, uint.MaxValue),
        MaxMs = (uint)Math.Clamp(Max.TotalMilliseconds, 0, uint.MaxValue),
        Multiplier = Multiplier,
        Jitter = Jitter,
    };
}

/// <summary>Where a group that does not exist yet starts.</summary>
public readonly record struct StartAt(StartPosition Position, long Offset = 0, DateTimeOffset Time = default)
{
    /// <summary>The oldest message still stored (the default).</summary>
    public static StartAt Earliest => new(StartPosition.Earliest);
    /// <summary>Only messages published after the group is created.</summary>
    public static StartAt Latest => new(StartPosition.Latest);
    /// <summary>The message at <paramref name="offset"/>.</summary>
    public static StartAt AtOffset(long offset) => new(StartPosition.Offset, offset);
    /// <summary>The first message published at or after <paramref name="time"/>.</summary>
    public static StartAt AtTime(DateTimeOffset time) => new(StartPosition.Timestamp, 0, time);
}

/// <summary>Options of a subscription.</summary>
public sealed record SubscribeOptions
{
    /// <summary>Most deliveries held unsettled at once; 0 lets the broker choose (256).</summary>
    public int MaxInFlight { get; init; }

    /// <summary>Where a group created by this subscribe starts.</summary>
    public StartAt Start { get; init; } = StartAt.Earliest;

    /// <summary>Rules of a group created by this subscribe.</summary>
    public GroupOptions? Group { get; init; }

    /// <summary>This consumer's lease per delivery, overriding the group's visibility timeout.</summary>
    public TimeSpan? VisibilityTimeout { get; init; }
}

/// <summary>
/// A connection to one broker: topic administration, durable publishing and consumer-group subscriptions.
/// Thread-safe; share one per process: it opens as many HTTP/2 connections as its open calls need (each
/// subscription holds one call open for its lifetime). Failures surface as <see cref="BrokerClientException"/>.
/// </summary>
public sealed partial class BrokerClient : IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly Publisher.PublisherClient _publisher;
    private readonly Protocol.V1.Consumer.ConsumerClient _consumer;
    private readonly Admin.AdminClient _admin;

    /// <summary>
    /// Connects to a broker at <paramref name="address"/>, for example http://127.0.0.1:7100; every call carries
    /// <paramref name="apiKey"/> when the broker requires keys (docs/security.md). An <c>https://</c> address is checked
    /// as <paramref name="tls"/> says (its CA file instead of the system's trusted roots); a CA file that cannot be read
    /// throws <see cref="ArgumentException"/>.
    /// </summary>
    public BrokerClient(Uri address, string? apiKey = null, BrokerTlsOptions? tls = null)
    {
        _channel = BrokerChannel.Create(address, apiKey, tls?.LoadTrustedRoots());
        _publisher = new Publisher.PublisherClient(_channel);
        _consumer = new Protocol.V1.Consumer.ConsumerClient(_channel);
        _admin = new Admin.AdminClient(_channel);
    }

    /// <summary>The underlying channel, for calling the generated clients directly.</summary>
    public GrpcChannel Channel => _channel;

    /// <summary>Creates a topic; returns false when it existed and <paramref name="ifNotExists"/> is true.</summary>
    public Task<bool> CreateTopicAsync(string name, bool ifNotExists = true, CancellationToken cancellationToken = default) =>
        Call(async () => (await _admin.CreateTopicAsync(new CreateTopicRequest { Name = name, IfNotExists = ifNotExists }, cancellationToken: cancellationToken)).Created);

    /// <summary>Deletes a topic with all its messages and groups.</summary>
    public Task DeleteTopicAsync(string name, CancellationToken cancellationToken = default) =>
        Call(async () => await _admin.DeleteTopicAsync(new DeleteTopicRequest { Name = name }, cancellationToken: cancellationToken));

    /// <summary>Names of all topics.</summary>
    public Task<IReadOnlyList<string>> ListTopicsAsync(CancellationToken cancellationToken = default) =>
        Call(async () => (IReadOnlyList<string>)(await _admin.ListTopicsAsync(new ListTopicsRequest(), cancellationToken: cancellationToken)).Names.ToList());

    /// <summary>Offsets, size and groups of a topic.</summary>
    public Task<TopicDescription> DescribeTopicAsync(string name, CancellationToken cancellationToken = default) =>
        Call(async () => await _admin.DescribeTopicAsync(new DescribeTopicRequest { Name = name }, cancellationToken: cancellationToken));

    /// <summary>Creates a consumer group ahead of its consumers; returns false when it existed and <paramref name="ifNotExists"/> is true.</summary>
    public Task<bool> CreateGroupAsync(string topic, string group, StartAt? start = null, GroupOptions? options = null,
        bool ifNotExists = true, CancellationToken cancellationToken = default)
    {
        var at = start ?? StartAt.Earliest;
        var request = new CreateGroupRequest
        {
            Topic = topic,
            Group = group,
            Start = at.Position,
            StartOffset = (ulong)Math.Max(0, at.Offset),
            StartTimeUnixMs = at.Time.ToUnixTimeMilliseconds(),
            Settings = options?.ToProto(),
            IfNotExists = ifNotExists,
        };
        return Call(async () => (await _admin.CreateGroupAsync(request, cancellationToken: cancellationToken)).Created);
    }

    /// <summary>
    /// Moves dead letters of <paramref name="deadLetterTopic"/> back to their original topics, or all to
    /// <paramref name="targetTopic"/> when given (all when <paramref name="maxMessages"/> is 0).
    /// </summary>
    public Task<RedriveResponse> RedriveAsync(string deadLetterTopic, int maxMessages = 0, CancellationToken cancellationToken = default, string? targetTopic = null) =>
        Call(async () => await _admin.RedriveAsync(new RedriveRequest
        {
            DeadLetterTopic = deadLetterTopic, MaxMessages = (uint)Math.Max(0, maxMessages), TargetTopic = targetTopic ?? "",
        }, cancellationToken: cancellationToken));

    /// <summary>The broker process's own numbers (CPU, memory, garbage collection, thread pool), counted since it started.</summary>
    public Task<ServerStats> GetServerStatsAsync(CancellationToken cancellationToken = default) =>
        Call(async () => await _admin.GetServerStatsAsync(new GetServerStatsRequest(), cancellationToken: cancellationToken));

    /// <summary>Publishes a batch, all or nothing; returns once every message is durable on the broker.</summary>
    public Task<PublishResult> PublishAsync(string topic, IEnumerable<OutgoingMessage> messages, CancellationToken cancellationToken = default)
    {
        var request = new PublishRequest { Topic = topic };
        foreach (var message in messages)
            request.Messages.Add(message.ToProto());
        return Call(async () =>
        {
            var response = await _publisher.PublishAsync(request, cancellationToken: cancellationToken);
            return PublishResult.FromProto(response);
        });
    }

    /// <summary>Joins <paramref name="group"/> of <paramref name="topic"/>; returns once the broker confirmed the subscription.</summary>
    public Task<BrokerSubscription> SubscribeAsync(string topic, string group, SubscribeOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new SubscribeOptions();
        var subscribe = new Subscribe
        {
            Topic = topic,
            Group = group,
            MaxInFlight = (uint)Math.Max(0, options.MaxInFlight),
            Start = options.Start.Position,
            StartOffset = (ulong)Math.Max(0, options.Start.Offset),
            StartTimeUnixMs = options.Start.Time.ToUnixTimeMilliseconds(),
            GroupSettings = options.Group?.ToProto(),
            VisibilityTimeoutMs = options.VisibilityTimeout is { } lease ? (uint)Math.Clamp(lease.TotalMilliseconds, 1, uint.MaxValue) : 0,
        };
        return BrokerSubscription.StartAsync(_consumer, subscribe, cancellationToken);
    }

    private static async Task<T> Call<T>(Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (RpcException error)
        {
            throw BrokerClientException.From(error);
        }
        catch (Exception error) when (error is HttpRequestException or IOException)
        {
            throw BrokerClientException.ConnectionLost(error);
        }
    }

    /// <summary>Closes the connection.</summary>
    public void Dispose() => _channel.Dispose();
}
