using System.Threading.RateLimiting;
using Broker.Storage.Errors;

namespace Broker.Server.Security;

/// <summary>
/// Who makes a call: an API key with its grants, or <see cref="Anyone"/> when the broker runs without authentication.
/// Every front end (gRPC, SQS, the web view) asks the same questions of it, so a permission means the same
/// everywhere.
/// </summary>
public sealed class Caller
{
    private readonly IReadOnlyList<Grant> _grants;
    private readonly Action<Caller, Permission, string>? _onDenied;
    private readonly TokenBucketRateLimiter? _publishRate;
    private readonly int _publishBurst;

    private Caller(string? keyId, string name, IReadOnlyList<Grant> grants, CancellationToken revoked, Action<Caller, Permission, string>? onDenied,
        TokenBucketRateLimiter? publishRate, int publishBurst)
    {
        KeyId = keyId;
        Name = name;
        _grants = grants;
        Revoked = revoked;
        _onDenied = onDenied;
        _publishRate = publishRate;
        _publishBurst = publishBurst;
    }

    /// <summary>The caller when authentication is off: may do everything.</summary>
    public static Caller Anyone { get; } = new(null, "anyone", [new Grant(null, "*", "*") { Everything = true }], CancellationToken.None, null, null, 0);

    internal static Caller ForKey(ApiKeyRecord key, IReadOnlyList<Grant> grants, CancellationToken revoked, Action<Caller, Permission, string> onDenied,
        TokenBucketRateLimiter? publishRate) =>
        new(key.Id, key.Name, grants, revoked, onDenied, publishRate, key.MaxPublishRate);

    /// <summary>
    /// Waits until the key's publish rate lets <paramref name="messages"/> more through (at once for a key without a
    /// rate, and for <see cref="Anyone"/>). A batch larger than the bucket (one second's worth) takes it in bucket-sized
    /// parts, so it waits as long as that many single messages would: a large batch is no way around the rate.
    /// </summary>
    public ValueTask ThrottlePublishAsync(int messages, CancellationToken cancellationToken)
    {
        if (_publishRate is null)
            return ValueTask.CompletedTask;
        int permits = Math.Max(messages, 1);
        if (permits <= _publishBurst)
        {
            // Fair: while others wait, an attempt fails, so a small batch cannot overtake a waiting large one.
            using var lease = _publishRate.AttemptAcquire(permits);
            if (lease.IsAcquired)
                return ValueTask.CompletedTask;
        }
        return WaitAsync(permits, cancellationToken);
    }

    private async ValueTask WaitAsync(int permits, CancellationToken cancellationToken)
    {
        for (int left = permits; left > 0; left -= _publishBurst)
        {
            using var lease = await _publishRate!.AcquireAsync(Math.Min(left, _publishBurst), cancellationToken).ConfigureAwait(false);
            if (!lease.IsAcquired)
                throw new BrokerException(BrokerErrorCode.InvalidRequest, "the publish rate limiter refused the batch");
        }
    }

    /// <summary>The key's id; null for <see cref="Anyone"/>.</summary>
    public string? KeyId { get; }

    /// <summary>The key's name, for logs.</summary>
    public string Name { get; }

    /// <summary>Cancelled when the key is revoked: calls still open with it end.</summary>
    public CancellationToken Revoked { get; }

    /// <summary>Whether the caller may do <paramref name="action"/> on <paramref name="topic"/> (with <paramref name="group"/>, for consume).</summary>
    public bool Can(Permission action, string topic, string? group = null)
    {
        foreach (var grant in _grants)
        {
            if (grant.Allows(action, topic, group))
                return true;
        }
        return false;
    }

    /// <summary>Whether the caller has any permission on <paramref name="topic"/>: lists show it only those topics.</summary>
    public bool Sees(string topic) => _grants.Any(grant => grant.Touches(topic));

    /// <summary>Throws PermissionDenied (1301) unless the caller may do <paramref name="action"/>; the refusal is logged once, without secrets.</summary>
    public void Demand(Permission action, string topic, string? group = null)
    {
        if (Can(action, topic, group))
            return;
        string what = action switch
        {
            Permission.Keys => "manage API keys",
            Permission.Consume when group is not null => $"consume topic '{topic}' as group '{group}'",
            _ => $"{action.ToString().ToLowerInvariant()} on topic '{topic}'",
        };
        _onDenied?.Invoke(this, action, what);
        throw new BrokerException(BrokerErrorCode.PermissionDenied, $"API key '{Name}' ({KeyId}) may not {what}");
    }

    /// <summary>Throws PermissionDenied unless the caller may do one of <paramref name="first"/> or <paramref name="second"/> on the topic.</summary>
    public void DemandEither(Permission first, Permission second, string topic)
    {
        if (!Can(first, topic))
            Demand(second, topic);
    }
}
