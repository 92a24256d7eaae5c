using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Broker.Protocol.V1;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Polly;

namespace Broker.Client;

/// <summary>
/// Consumes one topic in one group (<see cref="BrokerClientOptions.Topic"/>, <see cref="BrokerClientOptions.Group"/>),
/// over one Consume stream that it opens on first use and opens again, on the next listener and with backoff, when it
/// breaks (a broker restart, a dropped connection, a broker shutting down).
/// <para><c>await foreach (var message in consumer)</c> hands out messages one by one and acknowledges the previous one,
/// unless the application settled it, when the next is requested (as the Python client does). <see cref="ReceiveBatchAsync"/>
/// hands out chunks the application settles itself, typically one <see cref="AckAsync"/> after its database commit.</para>
/// <para>Every message this consumer has received and not settled keeps its lease: it is extended every third of the
/// visibility timeout (<see cref="BrokerClientOptions.MaxTimeout"/>), for at most <see cref="BrokerClientOptions.MaxHoldTime"/>.</para>
/// <para>When the stream breaks, the broker takes back what it held (they come again, with a higher attempt). Settling a
/// message from that stream, or a settle whose answer the break cut off, throws <see cref="SettleNotConfirmedException"/>:
/// the SDK never reports such an ack as confirmed, nor sends it again.</para>
/// <para>Disposing acknowledges the last message iteration handed out and the application did not settle (or releases it,
/// with <see cref="BrokerClientOptions.Strict"/>), releases every other message handed out and not settled and every
/// message received but not handed out (they come back, not counted as failed deliveries), and closes the stream. The
/// stream is open while it releases, so the broker may hand a released message straight back to it; closing then gives
/// that one back as a failed delivery (its attempt goes up by one, as for a consumer that went away).</para>
/// </summary>
public sealed partial class BrokerConsumer : IAsyncEnumerable<BrokerMessage>, IAsyncDisposable
{
    private readonly BrokerSettings _settings;
    private readonly ILogger _logger;
    private readonly ListenerSet _listeners;
    private readonly ResiliencePipeline _retry;
    private readonly Subscribe _subscribe;
    private readonly SemaphoreSlim _connectLock = new(1, 1);
    private readonly CancellationTokenSource _closing = new();
    private readonly List<BrokerSubscription> _retired = [];
    private readonly Lock _lock = new();
    private readonly Task _leaseExtender;
    private volatile BrokerSubscription? _subscription;
    private BrokerMessage? _lastIterated;
    private int _reconnects;
    private volatile bool _closed;

    /// <summary>
    /// A consumer configured by <paramref name="options"/> (gaps filled from <c>QUEUE_PLATFORM_*</c>; throws
    /// <see cref="BrokerConfigurationException"/> without listeners or topic). It subscribes on first use.
    /// <paramref name="json"/> is what <see cref="BrokerMessage.Value{T}()"/> uses; default <see cref="JsonSerializerOptions.Web"/>.
    /// </summary>
    public BrokerConsumer(BrokerClientOptions? options = null, JsonSerializerOptions? json = null, ILogger<BrokerConsumer>? logger = null)
        : this(BrokerSettings.Resolve(options), json, logger)
    {
    }

    internal BrokerConsumer(BrokerSettings settings, JsonSerializerOptions? json, ILogger? logger)
    {
        _settings = settings;
        Topic = settings.RequiredTopic;
        Group = settings.EffectiveGroup;
        Json = json ?? JsonSerializerOptions.Web;
        _logger = logger ?? NullLogger.Instance;
        _listeners = new ListenerSet(settings.Listeners, settings.ApiKey, settings.TrustedRoots);
        _retry = TransientRetry.Create(settings.RetryBackoff, (error, delay) => Log.SubscribeRetrying(_logger, Topic, Group, error.Message, delay.TotalMilliseconds));
        _subscribe = new Subscribe
        {
            Topic = Topic,
            Group = Group,
            MaxInFlight = (uint)settings.MaxInFlight,
            Start = settings.Start == BrokerStart.Latest ? StartPosition.Latest : StartPosition.Earliest,
            VisibilityTimeoutMs = (uint)Math.Clamp(settings.MaxTimeout.TotalMilliseconds, 1, TimeSpan.FromHours(12).TotalMilliseconds),
            GroupSettings = settings.MaxDeliveries is null && settings.RedeliveryBackoff is null && !settings.OrderedByKey ? null
                : new GroupOptions
                {
                    MaxDeliveries = settings.MaxDeliveries, RedeliveryBackoff = settings.RedeliveryBackoff, OrderedByKey = settings.OrderedByKey,
                }.ToProto(),
        };
        _leaseExtender = Task.Run(ExtendLeasesAsync);
    }

    /// <summary>The topic consumed.</summary>
    public string Topic { get; }

    /// <summary>The consumer group.</summary>
    public string Group { get; }

    /// <summary>How many times the stream broke and the consumer subscribed again.</summary>
    public int Reconnects => Volatile.Read(ref _reconnects);

    internal JsonSerializerOptions Json { get; }

    /// <summary>Subscribes now (retrying while the broker is unavailable, up to the reconnect timeout) instead of on first use.</summary>
    public async Task ConnectAsync(CancellationToken cancellationToken = default) => await CurrentSubscriptionAsync(cancellationToken).ConfigureAwait(false);

    /// <summary>The next message, waiting as long as it takes; resubscribes when the stream breaks.</summary>
    public async ValueTask<BrokerMessage> ReceiveAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closing.Token);
        while (true)
        {
            var subscription = await CurrentSubscriptionAsync(linked.Token).ConfigureAwait(false);
            try
            {
                var delivery = subscription.TryReceive(out var buffered) ? buffered : await subscription.ReceiveAsync(linked.Token).ConfigureAwait(false);
                // Left in the buffer of a stream that has ended: the broker took it back with the stream, and handing it
                // out would only get the work done twice. The next round subscribes again.
                if (!subscription.IsEnded)
                    return HandOut(subscription, delivery);
            }
            catch (BrokerClientException error) when (TransientRetry.IsTransient(error) && !_closed)
            {
                Retire(subscription, error);
            }
        }
    }

    /// <summary>
    /// Up to <paramref name="maxCount"/> messages: waits up to <paramref name="maxWait"/> for the first, then takes what
    /// arrives until <paramref name="maxCount"/> or until <paramref name="maxWait"/> from the call (subscribing first, on
    /// first use or after a broken stream, is not counted in it). May be empty. The
    /// caller settles them (they are never acknowledged implicitly), usually with one <see cref="AckAsync"/>.
    /// </summary>
    public async Task<IReadOnlyList<BrokerMessage>> ReceiveBatchAsync(int maxCount, TimeSpan maxWait, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        ObjectDisposedException.ThrowIf(_closed, this);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closing.Token);
        // Small at first: a throughput consumer asks for large batches with short waits and often gets a few messages.
        var batch = new List<BrokerMessage>(Math.Min(maxCount, 16));
        // Stopwatch time and a precise timer: Environment.TickCount64 and CancelAfter move in 4 ms ticks here (PreciseTimer).
        long deadline = Stopwatch.GetTimestamp() + PreciseTimer.StopwatchTicks(maxWait);
        while (batch.Count < maxCount)
        {
            // Subscribing (on first use, after a broken stream) is not part of the wait: maxWait bounds only the wait for messages.
            var subscription = await CurrentSubscriptionAsync(linked.Token).ConfigureAwait(false);
            if (subscription.TryReceive(out var buffered))
            {
                // Left in the buffer of a stream that has ended: the broker took it back (see ReceiveAsync).
                if (!subscription.IsEnded)
                    batch.Add(HandOut(subscription, buffered));
                continue;
            }
            try
            {
                if (!await WaitForDeliveryAsync(subscription, deadline, linked.Token).ConfigureAwait(false) && !subscription.IsEnded)
                    break;
            }
            catch (BrokerClientException error) when (TransientRetry.IsTransient(error) && !_closed)
            {
                Retire(subscription, error);
            }
        }
        return batch;
    }

    /// <summary>
    /// Waits until a delivery is buffered (true) or <paramref name="deadline"/> passes (false), without an exception for
    /// the timeout: a throughput consumer asks for short batches many times a second. Throws the stream's error.
    /// </summary>
    private static async ValueTask<bool> WaitForDeliveryAsync(BrokerSubscription subscription, long deadline, CancellationToken cancellationToken)
    {
        var remaining = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), deadline);
        if (remaining <= TimeSpan.Zero)
            return false;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        PreciseTimer.CancelAfter(timeout, remaining);
        var wait = subscription.WaitToReceiveAsync(timeout.Token).AsTask();
        await ((Task)wait).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        if (wait.IsCompletedSuccessfully)
            return wait.Result;
        cancellationToken.ThrowIfCancellationRequested();
        if (wait.IsFaulted)
            await wait.ConfigureAwait(false);   // the stream's error, as it is
        return false;
    }

    /// <summary>Iteration: each step acknowledges the previous message unless the application settled it; ends when the consumer is disposed.</summary>
    public async IAsyncEnumerator<BrokerMessage> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            if (Interlocked.Exchange(ref _lastIterated, null) is { IsSettled: false } previous)
                AckInBackground(previous);
            BrokerMessage next;
            try
            {
                next = await ReceiveAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception error) when (_closed && error is OperationCanceledException or ObjectDisposedException)
            {
                yield break;
            }
            Volatile.Write(ref _lastIterated, next);
            yield return next;
        }
    }

    private BrokerMessage HandOut(BrokerSubscription subscription, ReceivedMessage delivery)
    {
        var message = new BrokerMessage(this, subscription, delivery);
        NoteHandedOut(message);
        return message;
    }

    private async ValueTask<BrokerSubscription> CurrentSubscriptionAsync(CancellationToken cancellationToken)
    {
        if (_subscription is { IsEnded: false } open)
            return open;
        await _connectLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_subscription is { } current)
            {
                if (!current.IsEnded)
                    return current;
                Retire(current, null);
            }
            var subscription = await _retry.ExecuteAsync(_settings.ReconnectTimeout, this,
                static (consumer, token) => consumer.SubscribeOnceAsync(token), cancellationToken).ConfigureAwait(false);
            _subscription = subscription;
            return subscription;
        }
        finally
        {
            _connectLock.Release();
        }
    }

    private async ValueTask<BrokerSubscription> SubscribeOnceAsync(CancellationToken cancellationToken)
    {
        var (index, channel) = _listeners.Current;
        try
        {
            var subscription = await BrokerSubscription.StartAsync(new Protocol.V1.Consumer.ConsumerClient(channel), _subscribe,
                cancellationToken, OnArrived).ConfigureAwait(false);
            Log.Subscribed(_logger, Topic, Group, _listeners.AddressOf(index).ToString());
            return subscription;
        }
        catch (BrokerClientException error) when (TransientRetry.IsTransient(error))
        {
            _listeners.MoveOnFrom(index);
            throw;
        }
        catch (BrokerClientException error) when (cancellationToken.IsCancellationRequested)
        {
            // The caller gave up (gRPC reports it as a CANCELLED call): a cancellation, not a broker failure.
            throw new OperationCanceledException("subscribing was cancelled", error, cancellationToken);
        }
    }

    /// <summary>The stream of <paramref name="subscription"/> ended: its leases are the broker's again; the next receive subscribes anew.</summary>
    private void Retire(BrokerSubscription subscription, BrokerClientException? error)
    {
        lock (_lock)
        {
            if (_retired.Contains(subscription))
                return;
            _retired.Add(subscription);
        }
        if (_subscription == subscription)
            _subscription = null;
        ForgetHeld(subscription);
        Interlocked.Increment(ref _reconnects);
        Log.StreamEnded(_logger, Topic, Group, error?.Message ?? "the stream ended");
    }

    /// <summary>Settles what the application and the stream still hold (see the class summary), then closes the stream.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_closed)
            return;
        _closed = true;
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            var settles = new List<Task>();
            var last = Interlocked.Exchange(ref _lastIterated, null) is { IsSettled: false } unsettledLast ? unsettledLast : null;
            // The ack goes before the stop (a broker without stop frames ends the stream on one); releases go after it:
            // a release on an open stream can be delivered straight back to it, and what a stream holds when it ends
            // counts as a failed delivery.
            if (last is not null && !_settings.Strict)
                settles.Add(QuietlyAsync(SettleAsync([last], SettleKind.Ack, default, null, timeout.Token)));
            if (_subscription is { } open)
                await open.StopDeliveriesAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            if (last is not null && _settings.Strict)
                settles.Add(QuietlyAsync(SettleAsync([last], SettleKind.Release, default, null, timeout.Token)));
            var unsettled = UnsettledHandedOut();
            if (unsettled.Count > 0)
                settles.Add(QuietlyAsync(SettleAsync(unsettled, SettleKind.Release, default, null, timeout.Token)));
            settles.AddRange(_backgroundSettles.Keys);
            await Task.WhenAll(settles).ConfigureAwait(false);
        }
        _closing.Cancel();
        await _leaseExtender.ConfigureAwait(false);
        await _connectLock.WaitAsync().ConfigureAwait(false);
        List<BrokerSubscription> streams;
        lock (_lock)
            streams = [.. _retired];
        if (_subscription is { } current)
            streams.Add(current);
        foreach (var stream in streams)
            await stream.DisposeAsync().ConfigureAwait(false);
        _listeners.Dispose();
        _closing.Dispose();
    }

    private static async Task QuietlyAsync(Task settle)
    {
        try
        {
            await settle.ConfigureAwait(false);
        }
        catch (Exception error) when (error is BrokerClientException or SettleNotConfirmedException or OperationCanceledException)
        {
            // Closing: whatever was not settled comes back from the broker.
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 4101, Level = LogLevel.Information, Message = "Consuming {Topic} in group {Group} via {Listener}")]
        public static partial void Subscribed(ILogger logger, string topic, string group, string listener);

        [LoggerMessage(EventId = 4102, Level = LogLevel.Warning, Message = "The consume stream of {Topic}/{Group} ended ({Error}); subscribing again")]
        public static partial void StreamEnded(ILogger logger, string topic, string group, string error);

        [LoggerMessage(EventId = 4103, Level = LogLevel.Information, Message = "Subscribing to {Topic}/{Group} failed transiently ({Error}); retrying in {DelayMs} ms")]
        public static partial void SubscribeRetrying(ILogger logger, string topic, string group, string error, double delayMs);

        [LoggerMessage(EventId = 4104, Level = LogLevel.Warning, Message = "Acknowledging {Message} on the next iteration failed: {Error}")]
        public static partial void IterationAckFailed(ILogger logger, string message, string error);

        [LoggerMessage(EventId = 4105, Level = LogLevel.Debug, Message = "Extending {Count} lease(s) failed: {Error}")]
        public static partial void ExtendFailed(ILogger logger, int count, string error);
    }
}
