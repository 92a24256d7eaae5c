using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Broker.Client;

/// <summary>Settling messages, and keeping the leases of what this consumer holds.</summary>
public sealed partial class BrokerConsumer
{
    /// <summary>
    /// A delivery this consumer received and has not settled: its lease is extended until <see cref="BrokerClientOptions.MaxHoldTime"/>
    /// from <see cref="ArrivedAt"/>; <see cref="HandedOut"/> is what the application got (null while it waits in the stream's buffer).
    /// </summary>
    private struct HeldDelivery(BrokerSubscription subscription, long arrivedAt)
    {
        public readonly BrokerSubscription Subscription = subscription;
        public readonly long ArrivedAt = arrivedAt;
        public BrokerMessage? HandedOut;
    }

    // Every delivery received and not settled, by reference, under _heldLock: one entry per message, added a frame at a
    // time by the stream's read loop and removed a settle at a time (two concurrent dictionaries paid for each message).
    private readonly Dictionary<ReceivedMessage, HeldDelivery> _held = new(ReferenceEqualityComparer.Instance);
    private readonly Lock _heldLock = new();
    private readonly ConcurrentDictionary<Task, byte> _backgroundSettles = new();

    private void OnArrived(BrokerSubscription subscription, ReceivedMessage[] frame)
    {
        long now = Environment.TickCount64;
        lock (_heldLock)
        {
            foreach (var delivery in frame)
                _held[delivery] = new HeldDelivery(subscription, now);
        }
    }

    private void NoteHandedOut(BrokerMessage message)
    {
        lock (_heldLock)
        {
            ref var held = ref CollectionsMarshal.GetValueRefOrNullRef(_held, message.Delivery);
            // Absent when its stream ended meanwhile: the broker took the lease back.
            if (!Unsafe.IsNullRef(ref held))
                held.HandedOut = message;
        }
    }

    /// <summary>Forgets what <paramref name="subscription"/> held: its stream ended, and the broker took its leases back.</summary>
    private void ForgetHeld(BrokerSubscription subscription)
    {
        lock (_heldLock)
        {
            foreach (var (delivery, held) in _held)
            {
                if (held.Subscription == subscription)
                    _held.Remove(delivery);
            }
        }
    }

    /// <summary>Messages handed to the application and not settled (from streams still open).</summary>
    private List<BrokerMessage> UnsettledHandedOut()
    {
        lock (_heldLock)
            return [.. _held.Values.Select(h => h.HandedOut).OfType<BrokerMessage>().Where(m => !m.IsSettled)];
    }

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
        lock (_heldLock)
        {
            // Each message leaves the held set as it is marked: when a later one turns out settled already, those
            // before it are neither extended nor held any longer (their leases run out on the broker as before).
            foreach (var message in messages)
            {
                if (!message.TryMarkSettled())
                    throw new InvalidOperationException($"{message} was already settled");
                _held.Remove(message.Delivery);
            }
        }
        int accepted = 0;
        var refused = new List<SettleRefusal>();
        var notConfirmed = new List<BrokerMessage>();
        Exception? cause = null;
        foreach (var (subscription, stream, deliveries) in BySubscription(messages))
        {
            try
            {
                var result = await (kind switch
                {
                    SettleKind.Ack => subscription.AckAsync(deliveries, cancellationToken),
                    SettleKind.Nack => subscription.NackAsync(deliveries, delay, reason, cancellationToken),
                    SettleKind.DeadLetter => subscription.DeadLetterAsync(deliveries, reason ?? "dead-lettered by the consumer", null, cancellationToken),
                    _ => subscription.ReleaseAsync(deliveries, cancellationToken),
                }).ConfigureAwait(false);
                accepted += result.Accepted;
                refused.AddRange(result.Refused);
            }
            catch (BrokerClientException error) when (subscription.IsEnded)
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

    /// <summary>
    /// The messages per stream they came on, with their deliveries: one group without grouping in the usual case (every
    /// message from the current stream), by stream after a reconnect.
    /// </summary>
    private static IEnumerable<(BrokerSubscription Subscription, IEnumerable<BrokerMessage> Messages, List<ReceivedMessage> Deliveries)> BySubscription(
        IReadOnlyCollection<BrokerMessage> messages)
    {
        BrokerSubscription? only = null;
        bool several = false;
        var deliveries = new List<ReceivedMessage>(messages.Count);
        foreach (var message in messages)
        {
            only ??= message.Subscription;
            several |= message.Subscription != only;
            deliveries.Add(message.Delivery);
        }
        if (only is null)
            return [];
        if (!several)
            return [(only, messages, deliveries)];
        return messages.GroupBy(m => m.Subscription).Select(stream => (stream.Key, (IEnumerable<BrokerMessage>)stream, stream.Select(m => m.Delivery).ToList()));
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
                var due = new Dictionary<BrokerSubscription, List<ReceivedMessage>>();
                lock (_heldLock)
                {
                    foreach (var (delivery, held) in _held)
                    {
                        if (held.ArrivedAt <= tooOld || held.Subscription.IsEnded)
                            continue;
                        if (!due.TryGetValue(held.Subscription, out var deliveries))
                            due[held.Subscription] = deliveries = [];
                        deliveries.Add(delivery);
                    }
                }
                foreach (var (stream, deliveries) in due)
                    await ExtendAsync(stream, deliveries).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // Closing.
        }
    }

    private async Task ExtendAsync(BrokerSubscription stream, List<ReceivedMessage> deliveries)
    {
        try
        {
            var result = await stream.ExtendAsync(deliveries, null, _closing.Token).ConfigureAwait(false);
            if (result.Refused.Count == 0)
                return;
            // A refused extend means the lease is gone (expired or settled meanwhile): stop extending it.
            var refused = result.Refused.Select(r => (r.Offset, r.Token)).ToHashSet();
            lock (_heldLock)
            {
                foreach (var delivery in deliveries)
                {
                    if (refused.Contains((delivery.Offset, delivery.Token)))
                        _held.Remove(delivery);
                }
            }
        }
        catch (BrokerClientException error)
        {
            Log.ExtendFailed(_logger, deliveries.Count, error.Message);
        }
    }
}
