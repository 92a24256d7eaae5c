using System.Diagnostics;
using Grpc.Core;
using Polly;
using Polly.Retry;

namespace Broker.Client;

/// <summary>
/// The SDK's one retry policy (Polly): a call that failed with UNAVAILABLE (the broker is down, restarting or shutting
/// down, a listener refused the connection, the connection broke) is tried again with exponential backoff and jitter,
/// from <see cref="BrokerSettings.RetryBackoff"/> up to 2 s between tries, until the operation's deadline. Every other
/// failure (an invalid name, an oversized message, a full disk) is final at once.
/// </summary>
internal static class TransientRetry
{
    private static readonly ResiliencePropertyKey<long> DeadlineKey = new("broker.deadline-timestamp");
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(2);

    public static bool IsTransient(Exception error) => error is BrokerClientException { Status: StatusCode.Unavailable };

    /// <summary>A pipeline; <paramref name="onRetry"/> sees each failure before its backoff (for logging).</summary>
    public static ResiliencePipeline Create(TimeSpan firstBackoff, Action<Exception, TimeSpan>? onRetry = null) =>
        new ResiliencePipelineBuilder().AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = static args => ValueTask.FromResult(
                args.Outcome.Exception is { } error && IsTransient(error)
                && Stopwatch.GetTimestamp() < args.Context.Properties.GetValue(DeadlineKey, long.MaxValue)),
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
            Delay = firstBackoff,
            MaxDelay = MaxBackoff,
            MaxRetryAttempts = int.MaxValue,
            OnRetry = args =>
            {
                if (args.Outcome.Exception is { } error)
                    onRetry?.Invoke(error, args.RetryDelay);
                return default;
            },
        }).Build();

    /// <summary>Runs <paramref name="operation"/>, retrying transient failures until <paramref name="timeout"/> from now has passed.</summary>
    public static async ValueTask<T> ExecuteAsync<T, TState>(this ResiliencePipeline pipeline, TimeSpan timeout, TState state,
        Func<TState, CancellationToken, ValueTask<T>> operation, CancellationToken cancellationToken)
    {
        var context = ResilienceContextPool.Shared.Get(cancellationToken);
        try
        {
            context.Properties.Set(DeadlineKey, Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency));
            return await pipeline.ExecuteAsync(static (context, args) => args.operation(args.state, context.CancellationToken),
                context, (operation, state)).ConfigureAwait(false);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }
}
