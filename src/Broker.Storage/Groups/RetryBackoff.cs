using Broker.Storage.Errors;

namespace Broker.Storage.Groups;

/// <summary>
/// A group's retry schedule: how long a failed message waits before its next delivery when the failure names no delay
/// of its own (a nack without a delay, or a lease that ran out). After failed attempt n the wait is
/// <c>min(Max, Initial × Multiplier^(n−1))</c>, then shortened by up to <see cref="Jitter"/> of itself at random, so
/// workers that failed together do not all come back together. Workers then need no backoff code of their own.
/// </summary>
/// <param name="Initial">The wait after the first failed delivery.</param>
/// <param name="Max">The longest wait, however many deliveries failed.</param>
/// <param name="Multiplier">Growth per failed delivery (1 keeps the wait constant).</param>
/// <param name="Jitter">Fraction (0 to 1) of each wait that is random: the wait is drawn from [wait × (1 − Jitter), wait].</param>
public sealed record RetryBackoff(TimeSpan Initial, TimeSpan Max, double Multiplier = RetryBackoff.DefaultMultiplier, double Jitter = 0)
{
    /// <summary>Doubling, unless the group says otherwise.</summary>
    public const double DefaultMultiplier = 2;

    /// <summary>Largest growth per failed delivery accepted.</summary>
    public const double MaxMultiplier = 10;

    /// <summary>
    /// The wait before the delivery after failed attempt <paramref name="failedAttempt"/> (1 for the first delivery),
    /// with <paramref name="random"/> (uniform in [0, 1)) choosing the jitter.
    /// </summary>
    public TimeSpan DelayAfter(int failedAttempt, double random)
    {
        // Computed in doubles and capped before converting: Multiplier^n overflows a TimeSpan long before n does.
        double ms = Initial.TotalMilliseconds * Math.Pow(Multiplier, Math.Max(0, failedAttempt - 1));
        ms = Math.Min(ms, Max.TotalMilliseconds);
        ms *= 1 - Jitter * Math.Clamp(random, 0, 1);
        return TimeSpan.FromMilliseconds(Math.Max(0, Math.Floor(ms)));
    }

    /// <summary>Null when the schedule is acceptable, else the reason.</summary>
    public string? Problem()
    {
        var longest = GroupPolicy.MaxVisibilityTimeout;
        if (Initial < TimeSpan.FromMilliseconds(1) || Initial > longest)
            return "retry backoff: the initial delay must be between 1 ms and 12 hours";
        if (Max < Initial || Max > longest)
            return "retry backoff: the maximum delay must be at least the initial delay and at most 12 hours";
        if (double.IsNaN(Multiplier) || Multiplier < 1 || Multiplier > MaxMultiplier)
            return $"retry backoff: the multiplier must be between 1 and {MaxMultiplier}";
        if (double.IsNaN(Jitter) || Jitter < 0 || Jitter > 1)
            return "retry backoff: the jitter must be a fraction between 0 and 1";
        return null;
    }
}
