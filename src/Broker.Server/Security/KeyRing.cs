using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Text;
using System.Threading.RateLimiting;
using Broker.Server.Hosting;
using Broker.Storage.Errors;

namespace Broker.Server.Security;

/// <summary>
/// The broker's API keys (docs/security.md): read from the keys file at start, changed only through
/// <see cref="Create"/> and <see cref="Revoke"/> (the Admin service), each change durable in the file before it is
/// answered. Lookups read an immutable snapshot, so authenticating a call takes no lock. A revoked key's open calls
/// end: each key carries a token that its revocation cancels.
/// </summary>
public sealed partial class KeyRing : IDisposable
{
    /// <summary>The name a first start gives the key it creates when authentication is on and there is no keys file.</summary>
    public const string BootstrapKeyName = "bootstrap";

    /// <summary>The rate limiters of revoked keys, disposed with the ring (a few bytes and a timer each).</summary>
    private readonly System.Collections.Concurrent.ConcurrentQueue<TokenBucketRateLimiter> _retiredRates = new();

    private sealed record Entry(ApiKeyRecord Record, byte[] Hash, Caller Caller, CancellationTokenSource Revocation, TokenBucketRateLimiter? PublishRate);

    private readonly string _path;
    private readonly TimeProvider _time;
    private readonly ILogger<KeyRing> _logger;
    private readonly Lock _writeGate = new();
    private volatile FrozenDictionary<string, Entry> _keys = FrozenDictionary<string, Entry>.Empty;

    public KeyRing(BrokerOptions options, TimeProvider time, ILogger<KeyRing> logger)
    {
        _path = options.KeysFilePath;
        _time = time;
        _logger = logger;
        Required = options.RequireApiKeys;
        bool exists = File.Exists(_path);
        _keys = Build(ApiKeyFile.Read(_path));
        if (Required && !exists)
            Bootstrap(options.BootstrapTokenPath);
        else if (Required && _keys.Count == 0)
            Log.NoKeys(_logger, _path);
    }

    /// <summary>Whether calls must carry a key (<see cref="BrokerOptions.RequireApiKeys"/>).</summary>
    public bool Required { get; }

    /// <summary>
    /// The caller a credential stands for: <see cref="Caller.Anyone"/> when authentication is off (a credential sent
    /// anyway is not checked), otherwise the key's caller, or Unauthenticated (1300).
    /// </summary>
    public Caller Authenticate(string? token)
    {
        if (!Required)
            return Caller.Anyone;
        if (string.IsNullOrEmpty(token))
            throw new BrokerException(BrokerErrorCode.Unauthenticated, "this broker requires an API key (authorization: Bearer <key>)");
        if (!ApiKeyFile.TrySplitToken(token, out string id, out string secret)
            || !_keys.TryGetValue(id, out var entry)
            || !CryptographicOperations.FixedTimeEquals(Hash(secret), entry.Hash))
        {
            throw new BrokerException(BrokerErrorCode.Unauthenticated, "the API key is not valid (unknown, revoked or mistyped)");
        }
        return entry.Caller;
    }

    /// <summary>The key an SQS request names as its access key id, with its signing secret; null if there is none.</summary>
    public (Caller Caller, string Secret)? FindSigningKey(string accessKeyId) =>
        _keys.TryGetValue(accessKeyId, out var entry) && entry.Record.SigningSecret is { } secret ? (entry.Caller, secret) : null;

    /// <summary>Messages of <paramref name="keyId"/>'s publishes waiting for its publish rate now (operators and tests watch it).</summary>
    public long PublishesWaiting(string keyId) =>
        _keys.TryGetValue(keyId, out var entry) && entry.PublishRate?.GetStatistics() is { } statistics ? statistics.CurrentQueuedCount : 0;

    /// <summary>Every key, without secrets, oldest first.</summary>
    public IReadOnlyList<ApiKeyRecord> List() => [.. _keys.Values.Select(entry => entry.Record).OrderBy(key => key.CreatedUnixMs).ThenBy(key => key.Id, StringComparer.Ordinal)];

    /// <summary>Creates a key, durably; returns it with its token (the only time the token exists outside the caller).</summary>
    public (ApiKeyRecord Key, string Token) Create(string name, IReadOnlyList<string> grants, bool forSqs, int maxPublishRate = 0)
    {
        if (maxPublishRate is < 0 or > 100_000_000)
            throw new BrokerException(BrokerErrorCode.InvalidRequest, "max_publish_rate is 0 (no limit) to 100,000,000 messages a second");
        if (name.Length is 0 or > 100 || name.Any(char.IsControl))
            throw new BrokerException(BrokerErrorCode.InvalidRequest, "a key name is 1-100 characters, none of them control characters");
        if (grants.Count == 0)
            throw new BrokerException(BrokerErrorCode.InvalidRequest, "a key needs at least one grant, for example publish:orders or consume:orders:workers");
        ApiKeyRecord key;
        string token;
        try
        {
            (key, token) = ApiKeyFile.Create(name, grants, forSqs, _time.GetUtcNow().ToUnixTimeMilliseconds(), maxPublishRate);
        }
        catch (ArgumentException error)
        {
            throw new BrokerException(BrokerErrorCode.InvalidRequest, error.Message);
        }
        lock (_writeGate)
        {
            var keys = _keys.Values.Select(entry => entry.Record).Append(key).ToList();
            ApiKeyFile.Write(_path, keys);
            _keys = Build(keys, _keys);
        }
        Log.Created(_logger, key.Id, key.Name);
        return (key, token);
    }

    /// <summary>Revokes a key, durably: new calls with it fail at once and its open calls end. ApiKeyNotFound (1302) for an unknown id.</summary>
    public void Revoke(string id)
    {
        Entry? gone;
        lock (_writeGate)
        {
            if (!_keys.TryGetValue(id, out gone))
                throw new BrokerException(BrokerErrorCode.ApiKeyNotFound, $"no API key has the id '{id}'");
            var keys = _keys.Values.Where(entry => entry != gone).Select(entry => entry.Record).ToList();
            ApiKeyFile.Write(_path, keys);
            _keys = Build(keys, _keys);
        }
        Log.Revoked(_logger, gone.Record.Id, gone.Record.Name);
        gone.Revocation.Cancel();
        // Not disposed here: a publish of the revoked key may be acquiring from it right now, and a disposed limiter
        // throws ObjectDisposedException (an internal error) where the revocation's cancellation ends the call cleanly.
        if (gone.PublishRate is not null)
            _retiredRates.Enqueue(gone.PublishRate);
    }

    public void Dispose()
    {
        foreach (var entry in _keys.Values)
        {
            entry.Revocation.Dispose();
            entry.PublishRate?.Dispose();
        }
        while (_retiredRates.TryDequeue(out var rate))
            rate.Dispose();
    }


    private void Bootstrap(string tokenPath)
    {
        // First start with authentication on: without a key nobody could create one. This one can do everything;
        // its token goes to a file only the broker's user can read (never to the log), for the operator to use once.
        var (key, token) = ApiKeyFile.Create(BootstrapKeyName, ["*"], forSqs: false, _time.GetUtcNow().ToUnixTimeMilliseconds());
        Storage.Files.DurableFile.Replace(tokenPath, stream => stream.Write(Encoding.UTF8.GetBytes(token + "\n")), ownerOnly: true);
        ApiKeyFile.Write(_path, [key]);
        _keys = Build([key]);
        Log.Bootstrapped(_logger, key.Id, tokenPath);
    }

    /// <summary>The lookup table for <paramref name="records"/>, keeping the callers (and revocation tokens) of keys that stay.</summary>
    private FrozenDictionary<string, Entry> Build(IEnumerable<ApiKeyRecord> records, FrozenDictionary<string, Entry>? previous = null) =>
        records.ToFrozenDictionary(record => record.Id, record =>
        {
            if (previous is not null && previous.TryGetValue(record.Id, out var kept))
                return kept;
            var grants = record.Grants.Select(text => Grant.TryParse(text, out var grant, out _) ? grant : throw new InvalidDataException(text)).ToList();
            var revocation = new CancellationTokenSource();
            var publishRate = record.MaxPublishRate > 0 ? NewPublishRate(record.MaxPublishRate) : null;
            var caller = Caller.ForKey(record, grants, revocation.Token, (who, _, what) => Log.Denied(_logger, who.KeyId!, who.Name, what), publishRate);
            return new Entry(record, Convert.FromHexString(record.SecretHash["sha256:".Length..]), caller, revocation, publishRate);
        }, StringComparer.Ordinal);

    /// <summary>
    /// A bucket of one second's worth, refilled about ten times a second (once per token for rates under ten). It runs
    /// on real time, not the broker's clock: the runtime's limiters read Stopwatch.
    /// </summary>
    private static TokenBucketRateLimiter NewPublishRate(int perSecond)
    {
        int perRefill = Math.Max(1, perSecond / 10);
        return new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
        {
            TokenLimit = perSecond,
            TokensPerPeriod = perRefill,
            ReplenishmentPeriod = TimeSpan.FromSeconds(perRefill / (double)perSecond),
            AutoReplenishment = true,
            QueueLimit = int.MaxValue,
            QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
        });
    }

    private static byte[] Hash(string secret) => SHA256.HashData(Encoding.UTF8.GetBytes(secret));

    private static partial class Log
    {
        [LoggerMessage(EventId = 2601, Level = LogLevel.Warning,
            Message = "Authentication is on and there was no keys file: created key {KeyId} with every permission; its token is in {TokenPath}. Create your own keys with 'brokerctl keys create', then revoke this one")]
        public static partial void Bootstrapped(ILogger logger, string keyId, string tokenPath);

        [LoggerMessage(EventId = 2602, Level = LogLevel.Warning, Message = "Authentication is on and {KeysFile} holds no key: every call is refused")]
        public static partial void NoKeys(ILogger logger, string keysFile);

        [LoggerMessage(EventId = 2603, Level = LogLevel.Information, Message = "API key {KeyId} ({Name}) created")]
        public static partial void Created(ILogger logger, string keyId, string name);

        [LoggerMessage(EventId = 2604, Level = LogLevel.Information, Message = "API key {KeyId} ({Name}) revoked")]
        public static partial void Revoked(ILogger logger, string keyId, string name);

        [LoggerMessage(EventId = 2605, Level = LogLevel.Warning, Message = "Denied: API key {KeyId} ({Name}) may not {What}")]
        public static partial void Denied(ILogger logger, string keyId, string name, string what);
    }
}
