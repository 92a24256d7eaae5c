using System.Collections.Concurrent;
using System.Threading.Channels;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.Client;

/// <summary>
/// One consumer in a group: an open Consume stream. Read deliveries with <see cref="ReceiveAsync"/> or
/// <see cref="ReadAllAsync"/>; ack with <see cref="AckAsync(ReceivedMessage[])"/>, which returns once the broker made
/// the acks durable. Disposing ends the stream; whatever was not acked is redelivered to the group.
/// </summary>
public sealed class BrokerSubscription : IAsyncDisposable
{
    private readonly AsyncDuplexStreamingCall<ConsumeRequest, ConsumeResponse> _call;
    private readonly Channel<ReceivedMessage> _deliveries = Channel.CreateUnbounded<ReceivedMessage>(new UnboundedChannelOptions { SingleWriter = true });
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<AckResponse>> _pendingAcks = new();
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly CancellationTokenSource _stop = new();
    private Task _readLoop = Task.CompletedTask;
    private volatile BrokerClientException? _ended;
    private long _nextAckId;

    private BrokerSubscription(AsyncDuplexStreamingCall<ConsumeRequest, ConsumeResponse> call, Subscribed subscribed)
    {
        _call = call;
        Subscribed = subscribed;
    }

    /// <summary>The broker's confirmation: topic, group, the max in flight in force, whether the group was created.</summary>
    public Subscribed Subscribed { get; }

    internal static async Task<BrokerSubscription> StartAsync(Protocol.V1.Consumer.ConsumerClient client, Subscribe subscribe, CancellationToken cancellationToken)
    {
        var call = client.Consume(cancellationToken: CancellationToken.None);
        try
        {
            await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = subscribe }, cancellationToken).ConfigureAwait(false);
            if (!await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false))
                throw new BrokerClientException(StatusCode.Unavailable, 0, "the broker closed the stream before confirming the subscription");
            var first = call.ResponseStream.Current;
            if (first.KindCase != ConsumeResponse.KindOneofCase.Subscribed)
                throw new BrokerClientException(StatusCode.Internal, 0, $"expected 'subscribed', got {first.KindCase}");
            var subscription = new BrokerSubscription(call, first.Subscribed);
            subscription._readLoop = subscription.ReadLoopAsync();
            return subscription;
        }
        catch (RpcException error)
        {
            call.Dispose();
            throw BrokerClientException.From(error);
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

    /// <summary>Every delivery, as it arrives, until the stream ends.</summary>
    public IAsyncEnumerable<ReceivedMessage> ReadAllAsync(CancellationToken cancellationToken = default) =>
        _deliveries.Reader.ReadAllAsync(cancellationToken);

    /// <summary>Acks messages in one frame; returns once the broker confirmed them durable (or refused some).</summary>
    public Task<AckResult> AckAsync(params ReceivedMessage[] messages) => AckAsync(messages, CancellationToken.None);

    /// <summary>Acks messages in one frame; returns once the broker confirmed them durable (or refused some).</summary>
    public Task<AckResult> AckAsync(IEnumerable<ReceivedMessage> messages, CancellationToken cancellationToken) =>
        AckAsync(messages.Select(m => (m.Offset, m.Token)), cancellationToken);

    /// <summary>Acks deliveries by offset and token (for example tokens kept from an earlier stream).</summary>
    public async Task<AckResult> AckAsync(IEnumerable<(long Offset, ulong Token)> deliveries, CancellationToken cancellationToken = default)
    {
        var ack = new Ack { AckId = (ulong)Interlocked.Increment(ref _nextAckId) };
        foreach (var (offset, token) in deliveries)
            ack.Deliveries.Add(new DeliveryRef { Offset = (ulong)offset, Token = token });
        var answer = new TaskCompletionSource<AckResponse>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pendingAcks[ack.AckId] = answer;
        if (_ended is { } ended)
        {
            // The stream ended before (or while) this ack was registered: nobody will answer it.
            _pendingAcks.TryRemove(ack.AckId, out _);
            throw ended;
        }
        await SendAsync(new ConsumeRequest { Ack = ack }, cancellationToken).ConfigureAwait(false);
        var response = await answer.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        var refused = response.Failures
            .Select(f => new AckRefusal((long)(f.Delivery?.Offset ?? 0), f.Delivery?.Token ?? 0, BrokerClientException.From(f.Error)))
            .ToList();
        return new AckResult((int)response.Accepted, refused);
    }

    private async Task SendAsync(ConsumeRequest request, CancellationToken cancellationToken)
    {
        await _sendLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await _call.RequestStream.WriteAsync(request, cancellationToken).ConfigureAwait(false);
        }
        catch (RpcException error)
        {
            throw BrokerClientException.From(error);
        }
        catch (Exception error) when (error is not OperationCanceledException)
        {
            // A broken connection surfaces from the request stream as I/O or "call is complete" errors.
            throw BrokerClientException.ConnectionLost(error);
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
                    foreach (var delivery in response.Deliveries.Items)
                        _deliveries.Writer.TryWrite(ReceivedMessage.FromProto(delivery));
                }
                else if (response.KindCase == ConsumeResponse.KindOneofCase.AckResponse
                         && _pendingAcks.TryRemove(response.AckResponse.AckId, out var answer))
                {
                    answer.TrySetResult(response.AckResponse);
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
        _deliveries.Writer.TryComplete(ended);
        foreach (var pending in _pendingAcks.Values)
            pending.TrySetException(ended);
        _pendingAcks.Clear();
    }

    /// <summary>Ends the stream: the broker makes every unacked delivery of this consumer visible to the group again.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await _sendLock.WaitAsync().ConfigureAwait(false);
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
