using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Broker.Client;

/// <summary>Settling messages, and keeping the leases of what this consumer holds.</summary>
public sealed partial class BrokerConsumer
{
    /// <summary>A delivery this consumer received and has not settled: its lease is extended until <see cref="BrokerClientOptions.MaxHoldTime"/> from <c>ArrivedAt</c>.</summary>
    private readonly record struct Lease(BrokerSubscription Subscription, long Offset, ulong Token);

    private readonly ConcurrentDictionary<Lease, (ReceivedMessage Delivery, long ArrivedAt)> _leases = new();
    private readonly ConcurrentDictionary<BrokerMessage, byte> _handedOut = new(ReferenceEqualityComparer.Instance);
    private readonly ConcurrentDictionary<Task, byte> _backgroundSettles = new();
    private Action<BrokerSubscription, ReceivedMessage>? _arrivedHandler;

    private Action<BrokerSubscription, ReceivedMessage> OnArrived => _arrivedHandler ??= (subscription, delivery) =>
        _leases[new Lease(subscription, delivery.Offset, delivery.Token)] = (delivery, Environment.TickCount64);

    /// <summary>
    /// Acknowledges <paramref name="messages"/> in one frame; returns once the acks are durable. Items the broker refused
    /// (a lease that expired first: error 1101, the work may be done twice) are in <see cref="SettleResult.Refused"/>.
    /// Throws <see cref="SettleNotConfirmedException"/> for messages whose stream ended before the answer.
    /// </summary>
    public Task<SettleResult> AckAsync(IReadOnlyCollection<BrokerMessage> messages, CancellationToken cancellationToken = default) =>
        SettleAsync(messages, SettleKind.Ack, default, null, cancellationToken);

    /// <summary>These failed: visible again after <paramref name="delay"/>, <paramref name="reason"/> kept as their last error; dead letters after the group's max deliveries.</summary>
    public Task<SettleResult> NackAsync(IReadOnlyCollection<BrokerMessage> messages, TimeSpan delay = default, string? reason = null,
        CancellationToken cancellationToken = default) =>
        SettleAsync(messages, SettleKind.Nack, delay, reason, cancellationToken);

    /// <summary>These can never succeed: to the dead-letter topic now, with <paramref name="reason"/>.</summary>
    public Task<SettleResult> DeadLetterAsync(IReadOnlyCollection<BrokerMessage> messages, string reason, CancellationToken cancellationToken = default) =>
        SettleAsync(messages, SettleKind.DeadLetter, default, reason, cancellationToken);

    /// <summary>Never started: visible again at once, not counted as failed deliveries.</summary>
    public Task<SettleResult> ReleaseAsync(IReadOnlyCollection<BrokerMessage> messages, CancellationToken cancellationToken = default) =>
        SettleAsync(messages, SettleKind.Release, default, null, cancellationToken);

    internal async Task SettleOneAsync(BrokerMessage message, SettleKind kind, TimeSpan delay, string? reason, CancellationToken cancellationToken)
    {
        var result = await SettleAsync([message], kind, delay, reason, cancellationToken).ConfigureAwait(false);
        if (result.Refused.Count > 0)
            throw result.Refused[0].Reason;
    }

    private async Task<SettleResult> SettleAsync(IReadOnlyCollection<BrokerMessage> messages, SettleKind kind, TimeSpan delay, string? reason,
        CancellationToken cancellationToken)
    {
        foreach (var message in messages)
        {
            if (!message.TryMarkSettled())
                throw new InvalidOperationException($"{message} was already settled");
            _handedOut.TryRemove(message, out _);
            _leases.TryRemove(new Lease(message.Subscription, message.Offset, message.Delivery.Token), out _);
        }
        int accepted = 0;
        var refused = new List<SettleRefusal>();
        var notConfirmed = new List<BrokerMessage>();
        Exception? cause = null;
        foreach (var stream in messages.GroupBy(m => m.Subscription))
        {
            var deliveries = stream.Select(m => m.Delivery).ToList();
            try
            {
                var result = await (kind switch
                {
                    SettleKind.Ack => stream.Key.AckAsync(deliveries, cancellationToken),
                    SettleKind.Nack => stream.Key.NackAsync(deliveries, delay, reason, cancellationToken),
                    SettleKind.DeadLetter => stream.Key.DeadLetterAsync(deliveries, reason ?? "dead-lettered by the consumer", null, cancellationToken),
                    _ => stream.Key.ReleaseAsync(deliveries, cancellationToken),
                }).ConfigureAwait(false);
                accepted += result.Accepted;
                refused.AddRange(result.Refused);
            }
            catch (BrokerClientException error) when (stream.Key.IsEnded)
            {
                // Sent and cut off, or never sent: either way unknown to this client, so reported, never assumed.
                notConfirmed.AddRange(stream);
                cause = error;
            }
        }
        if (notConfirmed.Count > 0)
            throw new SettleNotConfirmedException(notConfirmed, cause);
        return new SettleResult(accepted, refused);
    }

    /// <summary>Iteration's implicit ack: not awaited by the loop (acks of successive messages overlap), but logged when it fails and awaited at dispose.</summary>
    private void AckInBackground(BrokerMessage message)
    {
        var ack = AckLoggingFailuresAsync(message);
        _backgroundSettles[ack] = 0;
        _ = ack.ContinueWith(done => _backgroundSettles.TryRemove(done, out _), TaskScheduler.Default);
    }

    private async Task AckLoggingFailuresAsync(BrokerMessage message)
    {
        try
        {
            var result = await SettleAsync([message], SettleKind.Ack, default, null, CancellationToken.None).ConfigureAwait(false);
            if (result.Refused.Count > 0)
                Log.IterationAckFailed(_logger, message.ToString(), result.Refused[0].Reason.Message);
        }
        catch (Exception error) when (error is BrokerClientException or SettleNotConfirmedException)
        {
            Log.IterationAckFailed(_logger, message.ToString(), error.Message);
        }
    }

    /// <summary>Every third of the visibility timeout, extends the lease of each delivery held and not yet held too long.</summary>
    private async Task ExtendLeasesAsync()
    {
        var period = TimeSpan.FromMilliseconds(Math.Max(50, _settings.MaxTimeout.TotalMilliseconds / 3));
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(_closing.Token).ConfigureAwait(false))
            {
                long tooOld = Environment.TickCount64 - (long)_settings.MaxHoldTime.TotalMilliseconds;
                var due = _leases.Where(l => l.Value.ArrivedAt > tooOld && !l.Key.Subscription.IsEnded).GroupBy(l => l.Key.Subscription);
                foreach (var stream in due)
                    await ExtendAsync(stream.Key, stream.ToList()).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // Closing.
        }
    }

    private async Task ExtendAsync(BrokerSubscription stream, List<KeyValuePair<Lease, (ReceivedMessage Delivery, long ArrivedAt)>> leases)
    {
        try
        {
            var result = await stream.ExtendAsync(leases.Select(l => l.Value.Delivery), null, _closing.Token).ConfigureAwait(false);
            // A refused extend means the lease is gone (expired or settled meanwhile): stop extending it.
            foreach (var refusal in result.Refused)
                _leases.TryRemove(new Lease(stream, refusal.Offset, refusal.Token), out _);
        }
        catch (BrokerClientException error)
        {
            Log.ExtendFailed(_logger, leases.Count, error.Message);
        }
    }
}
