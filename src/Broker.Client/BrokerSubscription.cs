using System.Collections.Concurrent;
using System.Threading.Channels;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.Client;

/// <summary>
/// One consumer in a group: an open Consume stream. Read deliveries with <see cref="ReceiveAsync"/> or
/// <see cref="ReadAllAsync"/>; settle each with ack, nack, dead-letter, extend or release. An ack returns once the
/// broker made it durable. Disposing ends the stream; whatever was not settled is redelivered to the group.
/// <para>When the broker shuts down it stops delivering and says so: the subscription then releases the deliveries
/// that arrived but were never handed to the application (they do not count as failed), and
/// <see cref="ReceiveAsync"/> throws <see cref="BrokerClientException"/> with UNAVAILABLE and error 1201
/// (ShuttingDown). For the broker's grace period what the application holds can still be acked (durably), nacked or
/// released. Once the broker says the stream is done (the application holds nothing, or the grace is over) the
/// subscription half-closes it, so every answer already sent still reaches it, and settling throws the same error.</para>
/// A settle call returns the deliveries the broker refused one by one (<see cref="SettleResult.Refused"/>), and throws
/// <see cref="BrokerClientException"/> when the broker refused the whole frame (for example a nack delay over 12 hours,
/// or its disk failed): then nothing of it is confirmed, and the subscription stays open.
/// </summary>
public sealed class BrokerSubscription : IAsyncDisposable
{
    // docs/errors.md: ShuttingDown, the code of every failure caused by the broker stopping.
    private const int ShuttingDownErrorCode = 1201;

    private readonly AsyncDuplexStreamingCall<ConsumeRequest, ConsumeResponse> _call;

    private readonly Channel<ReceivedMessage> _deliveries = Channel.CreateUnbounded<ReceivedMessage>(new UnboundedChannelOptions { SingleWriter = true });
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<SettleResponse>> _pendingAnswers = new();
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly CancellationTokenSource _stop = new();
    private Task _readLoop = Task.CompletedTask;
    private volatile BrokerClientException? _ended;
    // Set, under the send lock, once this side of the stream is closed (half-close): nothing more can be sent.
    private volatile BrokerClientException? _sendingClosed;
    // Set once no delivery follows: the broker's answer to our stop, its draining notice, or the end of the stream.
    private readonly TaskCompletionSource _noMoreDeliveries = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _nextRequestId;

    private readonly Action<BrokerSubscription, ReceivedMessage[]>? _arrived;

    private BrokerSubscription(AsyncDuplexStreamingCall<ConsumeRequest, ConsumeResponse> call, Subscribed subscribed, Action<BrokerSubscription, ReceivedMessage[]>? arrived)
    {
        _call = call;
        Subscribed = subscribed;
        _arrived = arrived;
    }

    /// <summary>
    /// True once the stream has ended, or the broker said it is done (during a shutdown) and it was half-closed: no
    /// delivery arrives and no new settle can be sent.
    /// </summary>
    internal bool IsEnded => _ended is not null || _sendingClosed is not null;

    /// <summary>The broker's confirmation: topic, group, the max in flight in force, whether the group was created.</summary>
    public Subscribed Subscribed { get; }

    /// <param name="client">The Consumer service client.</param>
    /// <param name="subscribe">The subscribe frame.</param>
    /// <param name="cancellationToken">Cancels waiting for the confirmation.</param>
    /// <param name="arrived">Called by the read loop with each delivery frame as it arrives, before any of it can be received (the consumer tracks leases from there).</param>
    internal static async Task<BrokerSubscription> StartAsync(Protocol.V1.Consumer.ConsumerClient client, Subscribe subscribe,
        CancellationToken cancellationToken, Action<BrokerSubscription, ReceivedMessage[]>? arrived = null)
    {
        var call = client.Consume(cancellationToken: CancellationToken.None);
        try
        {
            try
            {
                await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = subscribe }, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception writeFailed) when (writeFailed is RpcException or InvalidOperationException && !cancellationToken.IsCancellationRequested)
            {
                // The broker can end the call (a refused key, a limit) before the subscribe is written; the write then
                // fails with CANCELLED or "the call is complete", and the call's own status says why: read it.
                await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false);
                throw writeFailed is RpcException rpc ? BrokerClientException.From(rpc) : BrokerClientException.ConnectionLost(writeFailed);
            }
            if (!await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false))
                throw new BrokerClientException(StatusCode.Unavailable, 0, "the broker closed the stream before confirming the subscription");
            var first = call.ResponseStream.Current;
            if (first.KindCase != ConsumeResponse.KindOneofCase.Subscribed)
                throw new BrokerClientException(StatusCode.Internal, 0, $"expected 'subscribed', got {first.KindCase}");
            var subscription = new BrokerSubscription(call, first.Subscribed, arrived);
            subscription._readLoop = subscription.ReadLoopAsync();
            return subscription;
        }
        catch (RpcException error)
        {
            call.Dispose();
            throw BrokerClientException.From(error);
        }
        catch (Exception error) when (error is HttpRequestException or IOException)
        {
            // The stream was refused or the connection lost before the broker answered.
            call.Dispose();
            throw BrokerClientException.ConnectionLost(error);
        }
        catch
        {
            call.Dispose();
            throw;
        }
    }

    /// <summary>The next delivery; throws <see cref="BrokerClientException"/> when the stream ended with an error.</summary>
    public async ValueTask<ReceivedMessage> ReceiveAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await _deliveries.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException closed) when (closed.InnerException is BrokerClientException inner)
        {
            throw new BrokerClientException(inner.Status, inner.ErrorCode, inner.Message, inner);
        }
    }

    /// <summary>A delivery that has already arrived, without waiting; false when none is buffered.</summary>
    public bool TryReceive(out ReceivedMessage message) => _deliveries.Reader.TryRead(out message!);

    /// <summary>True once a delivery is buffered; false when the stream ended cleanly; throws the stream's error.</summary>
    internal ValueTask<bool> WaitToReceiveAsync(CancellationToken cancellationToken) => _deliveries.Reader.WaitToReadAsync(cancellationToken);

    /// <summary>Every delivery, as it arrives, until the stream ends.</summary>
    public IAsyncEnumerable<ReceivedMessage> ReadAllAsync(CancellationToken cancellationToken = default) =>
        _deliveries.Reader.ReadAllAsync(cancellationToken);

    /// <summary>Acks messages in one frame; returns once the broker made the acks durable (or refused some).</summary>
    public Task<SettleResult> AckAsync(params ReceivedMessage[] messages) => AckAsync(messages, CancellationToken.None);

    /// <summary>Acks messages in one frame; returns once the broker made the acks durable (or refused some).</summary>
    public Task<SettleResult> AckAsync(IEnumerable<ReceivedMessage> messages, CancellationToken cancellationToken)
    {
        var ack = new Ack();
        ack.Deliveries.Add(Refs(messages));
        return SettleAsync(id => { ack.RequestId = id; return new ConsumeRequest { Ack = ack }; }, cancellationToken);
    }

    /// <summary>Acks deliveries by offset and token (for example tokens kept from an earlier stream).</summary>
    public Task<SettleResult> AckAsync(IEnumerable<(long Offset, ulong Token)> deliveries, CancellationToken cancellationToken = default)
    {
        var ack = new Ack();
        ack.Deliveries.Add(Refs(deliveries));
        return SettleAsync(id => { ack.RequestId = id; return new ConsumeRequest { Ack = ack }; }, cancellationToken);
    }

    /// <summary>
    /// These messages failed: they become visible again after <paramref name="delay"/> (at once by default), or go to
    /// the dead-letter topic when they have had the group's maximum deliveries.
    /// </summary>
    public Task<SettleResult> NackAsync(IEnumerable<ReceivedMessage> messages, TimeSpan delay = default, string? lastError = null,
        CancellationToken cancellationToken = default)
    {
        var nack = new Nack { Action = NackAction.Retry, DelayMs = Milliseconds(delay), LastError = lastError ?? "" };
        nack.Deliveries.Add(Refs(messages));
        return SettleAsync(id => { nack.RequestId = id; return new ConsumeRequest { Nack = nack }; }, cancellationToken);
    }

    /// <summary>These messages can never succeed: to the dead-letter topic now, with a reason.</summary>
    public Task<SettleResult> DeadLetterAsync(IEnumerable<ReceivedMessage> messages, string reason, string? lastError = null,
        CancellationToken cancellationToken = default)
    {
        var nack = new Nack { Action = NackAction.DeadLetter, Reason = reason, LastError = lastError ?? "" };
        nack.Deliveries.Add(Refs(messages));
        return SettleAsync(id => { nack.RequestId = id; return new ConsumeRequest { Nack = nack }; }, cancellationToken);
    }

    /// <summary>Still working on these messages: their leases run <paramref name="by"/> from now (the visibility timeout when null).</summary>
    public Task<SettleResult> ExtendAsync(IEnumerable<ReceivedMessage> messages, TimeSpan? by = null, CancellationToken cancellationToken = default)
    {
        var extend = new Extend { ExtendMs = by is { } duration ? Math.Max(1, Milliseconds(duration)) : 0 };
        extend.Deliveries.Add(Refs(messages));
        return SettleAsync(id => { extend.RequestId = id; return new ConsumeRequest { Extend = extend }; }, cancellationToken);
    }

    /// <summary>Never started these messages: visible again at once, and the delivery does not count toward max deliveries.</summary>
    public Task<SettleResult> ReleaseAsync(IEnumerable<ReceivedMessage> messages, CancellationToken cancellationToken = default)
    {
        var release = new Release();
        release.Deliveries.Add(Refs(messages));
        return SettleAsync(id => { release.RequestId = id; return new ConsumeRequest { Release = release }; }, cancellationToken);
    }

    private Task<SettleResult> ReleaseAsync(IEnumerable<(long Offset, ulong Token)> deliveries, CancellationToken cancellationToken)
    {
        var release = new Release();
        release.Deliveries.Add(Refs(deliveries));
        return SettleAsync(id => { release.RequestId = id; return new ConsumeRequest { Release = release }; }, cancellationToken);
    }

    /// <summary>The references of messages in one array (a settle of a thousand messages builds them in one pass).</summary>
    private static DeliveryRef[] Refs(IEnumerable<ReceivedMessage> messages)
    {
        if (messages is not IReadOnlyList<ReceivedMessage> list)
            return [.. messages.Select(m => new DeliveryRef { Offset = (ulong)m.Offset, Token = m.Token })];
        var refs = new DeliveryRef[list.Count];
        for (int i = 0; i < refs.Length; i++)
            refs[i] = new DeliveryRef { Offset = (ulong)list[i].Offset, Token = list[i].Token };
        return refs;
    }

    private static IEnumerable<DeliveryRef> Refs(IEnumerable<(long Offset, ulong Token)> deliveries) =>
        deliveries.Select(d => new DeliveryRef { Offset = (ulong)d.Offset, Token = d.Token });

    private static uint Milliseconds(TimeSpan duration) => (uint)Math.Clamp(duration.TotalMilliseconds, 0, uint.MaxValue);

    private async Task<SettleResult> SettleAsync(Func<ulong, ConsumeRequest> build, CancellationToken cancellationToken)
    {
        ulong requestId = (ulong)Interlocked.Increment(ref _nextRequestId);
        var answer = new TaskCompletionSource<SettleResponse>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pendingAnswers[requestId] = answer;
        if (_ended is { } ended)
        {
            // The stream ended before (or while) this request was registered: nobody will answer it.
            _pendingAnswers.TryRemove(requestId, out _);
            throw ended;
        }
        try
        {
            await SendAsync(build(requestId), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            _pendingAnswers.TryRemove(requestId, out _);
            throw;
        }
        var response = await answer.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        // A failure that names no delivery is about the whole frame (a value out of range, too many deliveries, or the
        // broker's disk failed): nothing of it is confirmed, so the call fails rather than reporting partial success.
        if (response.Failures.FirstOrDefault(f => f.Delivery is null) is { } wholeFrame)
            throw BrokerClientException.From(wholeFrame.Error);
        var refused = response.Failures
            .Select(f => new SettleRefusal((long)(f.Delivery?.Offset ?? 0), f.Delivery?.Token ?? 0, BrokerClientException.From(f.Error)))
            .ToList();
        return new SettleResult((int)response.Accepted, refused);
    }

    private async Task SendAsync(ConsumeRequest request, CancellationToken cancellationToken)
    {
        await _sendLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_sendingClosed is { } closed)
                throw closed;
            await _call.RequestStream.WriteAsync(request, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException error)
        {
            throw BrokerClientException.From(error);
        }
        catch (Exception error) when (error is not OperationCanceledException and not BrokerClientException)
        {
            // A broken connection surfaces from the request stream as I/O or "call is complete" errors.
            throw BrokerClientException.ConnectionLost(error);
        }
        finally
        {
            _sendLock.Release();
        }
    }

    private async Task ReleaseUnreadAsync()
    {
        var unread = new List<(long, ulong)>();
        while (_deliveries.Reader.TryRead(out var message))
            unread.Add((message.Offset, message.Token));
        if (unread.Count == 0 || _ended is not null)
            return;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await ReleaseAsync(unread, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception error) when (error is BrokerClientException or OperationCanceledException)
        {
            // The stream is going away anyway; the broker then counts these as failed deliveries.
        }
    }

    /// <summary>
    /// The broker is draining and sent its last delivery before this notice: hand nothing more to the application,
    /// and give back what it never got, so those messages are not counted as failed deliveries.
    /// </summary>
    private async Task ReleaseUnreadForShutdownAsync(Draining notice)
    {
        var unread = new List<(long, ulong)>();
        while (_deliveries.Reader.TryRead(out var message))
            unread.Add((message.Offset, message.Token));
        // Called from the read loop, the only writer: nothing can arrive between the reads above and this.
        _deliveries.Writer.TryComplete(new BrokerClientException(StatusCode.Unavailable, ShuttingDownErrorCode,
            $"the broker is shutting down: no more deliveries; settle what you hold within {notice.GraceMs} ms"));
        if (unread.Count == 0)
            return;
        try
        {
            await ReleaseAsync(unread, CancellationToken.None).ConfigureAwait(false);
        }
        catch (BrokerClientException)
        {
            // The stream ended first: the broker then counts these as failed deliveries.
        }
    }

    /// <summary>
    /// The broker is shutting down and this stream is done (this consumer holds nothing, or the grace is over): close
    /// the sending side. The broker ends the stream only after that, because it closes its connections right after the
    /// drain, and the HTTP/2 client drops the unread frames of a stream still sending when its connection closes: the
    /// answers to the last settles would be lost. Half-closed, the stream is complete as soon as the status arrives,
    /// and every frame before it stays readable.
    /// </summary>
    private async Task HalfCloseForShutdownAsync()
    {
        await _sendLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_sendingClosed is not null || _ended is not null)
                return;
            _sendingClosed = new BrokerClientException(StatusCode.Unavailable, ShuttingDownErrorCode,
                "the broker is shutting down and this subscription's stream is done: nothing more can be settled on it");
            await _call.RequestStream.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception error) when (error is RpcException or InvalidOperationException or IOException or HttpRequestException)
        {
            // The stream broke meanwhile: the read loop reports that.
        }
        finally
        {
            _sendLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        BrokerClientException? ended = null;
        try
        {
            await foreach (var response in _call.ResponseStream.ReadAllAsync(_stop.Token).ConfigureAwait(false))
            {
                if (response.KindCase == ConsumeResponse.KindOneofCase.Deliveries)
                {
                    var items = response.Deliveries.Items;
                    var frame = new ReceivedMessage[items.Count];
                    for (int i = 0; i < frame.Length; i++)
                        frame[i] = ReceivedMessage.FromProto(items[i], Subscribed.Topic);
                    _arrived?.Invoke(this, frame);
                    foreach (var message in frame)
                        _deliveries.Writer.TryWrite(message);
                }
                else if (response.KindCase == ConsumeResponse.KindOneofCase.Draining)
                {
                    _noMoreDeliveries.TrySetResult();
                    // Not awaited here: this loop is what delivers the release's answer.
                    _ = ReleaseUnreadForShutdownAsync(response.Draining);
                }
                else if (response.KindCase == ConsumeResponse.KindOneofCase.Drained)
                {
                    // Not awaited here: a settle being sent holds the send lock, and its answer comes through this loop.
                    _ = HalfCloseForShutdownAsync();
                }
                else if (response.KindCase == ConsumeResponse.KindOneofCase.Stopped)
                {
                    _noMoreDeliveries.TrySetResult();
                }
                else if (response.KindCase == ConsumeResponse.KindOneofCase.Settled
                         && _pendingAnswers.TryRemove(response.Settled.RequestId, out var answer))
                {
                    answer.TrySetResult(response.Settled);
                }
            }
        }
        catch (RpcException error)
        {
            ended = BrokerClientException.From(error);
        }
        catch (OperationCanceledException)
        {
            ended = new BrokerClientException(StatusCode.Cancelled, 0, "the subscription was closed");
        }
        catch (Exception error)
        {
            ended = BrokerClientException.ConnectionLost(error);
        }
        ended ??= new BrokerClientException(StatusCode.Unavailable, 0, "the broker ended the stream");
        _ended = ended;
        _noMoreDeliveries.TrySetResult();
        _deliveries.Writer.TryComplete(ended);
        foreach (var pending in _pendingAnswers.Values)
            pending.TrySetException(ended);
        _pendingAnswers.Clear();
    }

    /// <summary>
    /// Asks the broker to deliver nothing more on this stream (a stop frame) and waits for its answer, up to
    /// <paramref name="timeout"/>: after it, what has arrived is all there is, so releasing it cannot race a delivery
    /// that would come straight back to this closing stream (docs/semantics.md, "Closing cleanly"). Settles keep
    /// working. Returns false when the answer did not come in time (or the stream had ended).
    /// </summary>
    internal async Task<bool> StopDeliveriesAsync(TimeSpan timeout)
    {
        if (_ended is not null)
            return false;
        try
        {
            using var deadline = new CancellationTokenSource(timeout);
            await SendAsync(new ConsumeRequest { Stop = new Stop() }, deadline.Token).ConfigureAwait(false);
            await _noMoreDeliveries.Task.WaitAsync(deadline.Token).ConfigureAwait(false);
            return _ended is null;
        }
        catch (Exception error) when (error is BrokerClientException or OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>
    /// Ends the stream. Deliveries stop first (<see cref="StopDeliveriesAsync"/>); those that arrived but were never
    /// handed to the application are then released (they do not count as failed deliveries); whatever the application
    /// received and did not settle becomes visible to the group again as a failed delivery.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        await StopDeliveriesAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        await ReleaseUnreadAsync().ConfigureAwait(false);
        try
        {
            await _sendLock.WaitAsync().ConfigureAwait(false);
            // Half-closed already when the broker said (during a shutdown) that the stream is done.
            if (_sendingClosed is null)
                await _call.RequestStream.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception error) when (error is RpcException or InvalidOperationException)
        {
        }
        finally
        {
            _sendLock.Release();
        }
        using (var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            await _readLoop.WaitAsync(grace.Token).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        }
        _stop.Cancel();
        await _readLoop.ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        _call.Dispose();
        _stop.Dispose();
    }
}
