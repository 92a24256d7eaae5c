using System.Collections.Concurrent;
using Broker.Protocol.V1;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;

namespace Broker.Client;

/// <summary>
/// One open PublishStream to one listener: batches pipelined on it, each answered by request_id once durable (or
/// with its own error). When the stream ends, every batch still waiting fails with UNAVAILABLE and the session is
/// <see cref="Broken"/>: its owner opens a new one (on the next listener) for the retries.
/// <para>Batches go out as <see cref="ProducerBatch"/> encoded them: Publisher.PublishStream called with a marshaller that
/// writes the batch's bytes and the request id, the same bytes the generated PublishRequest marshaller would write.</para>
/// </summary>
internal sealed class PublishStreamSession : IAsyncDisposable
{
    private static readonly Method<EncodedPublish, PublishResponse> PublishStream = new(
        MethodType.DuplexStreaming,
        Publisher.Descriptor.FullName,
        "PublishStream",
        new Marshaller<EncodedPublish>(EncodedPublish.Write, static (DeserializationContext _) => throw new NotSupportedException("a client never reads a request")),
        new Marshaller<PublishResponse>(
            static (PublishResponse response, SerializationContext context) => context.Complete(response.ToByteArray()),
            static (DeserializationContext context) => PublishResponse.Parser.ParseFrom(context.PayloadAsReadOnlySequence())));

    private readonly AsyncDuplexStreamingCall<EncodedPublish, PublishResponse> _call;
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<PublishResponse>> _waiting = new();
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly Task _readLoop;
    private volatile BrokerClientException? _ended;
    // The broker said "drained": it reads nothing more, and this session half-closes; new batches go to another session.
    private volatile bool _drained;
    private long _nextRequestId;

    public PublishStreamSession(GrpcChannel channel, int listenerIndex)
    {
        ListenerIndex = listenerIndex;
        _call = channel.CreateCallInvoker().AsyncDuplexStreamingCall(PublishStream, null, new CallOptions());
        _readLoop = ReadLoopAsync();
    }

    public int ListenerIndex { get; }

    public bool Broken => _ended is not null || _drained;

    /// <summary>Sends one batch; completes with its answer once durable. Throws <see cref="BrokerClientException"/>
    /// for the batch's own error, or UNAVAILABLE when the stream broke before the answer (the batch may be stored).</summary>
    public async ValueTask<PublishResponse> PublishAsync(ReadOnlyMemory<byte> encodedBatch, CancellationToken cancellationToken)
    {
        if (_ended is { } ended)
            throw ended;
        if (_drained)
            throw Drained();
        ulong id = (ulong)Interlocked.Increment(ref _nextRequestId);
        var answer = new TaskCompletionSource<PublishResponse>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiting[id] = answer;
        if (_ended is { } endedMeanwhile && _waiting.TryRemove(id, out _))
            throw endedMeanwhile;
        try
        {
            await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _waiting.TryRemove(id, out _);
            throw;
        }
        try
        {
            if (_drained)
            {
                _waiting.TryRemove(id, out _);
                throw Drained();
            }
            // Not cancellable: a write cut halfway would break the stream for every other batch on it. The batch's bytes
            // are copied into the stream before the write completes.
            await _call.RequestStream.WriteAsync(new EncodedPublish(encodedBatch, id), CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception error)
        {
            _waiting.TryRemove(id, out _);
            // The stream is unusable: the read loop reports why; wait for it so every batch fails with the same cause.
            await _readLoop.ConfigureAwait(false);
            throw _ended ?? BrokerClientException.ConnectionLost(error);
        }
        finally
        {
            _writeLock.Release();
        }
        var response = await answer.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (response.Error is { } refused)
            throw BrokerClientException.From(refused);
        return response;
    }

    private async Task ReadLoopAsync()
    {
        BrokerClientException ended;
        try
        {
            while (await _call.ResponseStream.MoveNext(CancellationToken.None).ConfigureAwait(false))
            {
                var response = _call.ResponseStream.Current;
                if (response.Drained)
                {
                    // Every batch the broker read is answered; half-close so the answers still in flight reach us
                    // before the broker closes the connection. What stays unanswered fails with 1201 and is retried.
                    _drained = true;
                    _ = HalfCloseAsync();
                    continue;
                }
                if (_waiting.TryRemove(response.RequestId, out var answer))
                    answer.TrySetResult(response);
            }
            ended = new BrokerClientException(StatusCode.Unavailable, 0, "the broker ended the publish stream");
        }
        catch (RpcException error)
        {
            var converted = BrokerClientException.From(error);
            // A stream cut by the broker's status or by a lost connection: its unanswered batches are retried.
            ended = converted.Status is StatusCode.Unavailable or StatusCode.Cancelled
                ? new BrokerClientException(StatusCode.Unavailable, converted.ErrorCode, converted.Message, error)
                : converted;
        }
        catch (Exception error)
        {
            ended = BrokerClientException.ConnectionLost(error);
        }
        _ended = ended;
        foreach (var id in _waiting.Keys)
        {
            if (_waiting.TryRemove(id, out var answer))
                answer.TrySetException(ended);
        }
    }

    private static BrokerClientException Drained() =>
        new(StatusCode.Unavailable, 1201, "the broker is shutting down and reads no more batches on this stream");

    private async Task HalfCloseAsync()
    {
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_ended is null)
                await _call.RequestStream.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception error) when (error is RpcException or InvalidOperationException or IOException)
        {
            // The stream broke meanwhile: the read loop reports it.
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _writeLock.WaitAsync().ConfigureAwait(false);
            if (_ended is null && !_drained)
                await _call.RequestStream.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception error) when (error is RpcException or InvalidOperationException or IOException)
        {
            // Already broken: nothing to close.
        }
        finally
        {
            _writeLock.Release();
        }
        using (var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            await _readLoop.WaitAsync(grace.Token).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        }
        _call.Dispose();
        await _readLoop.ConfigureAwait(false);
    }
}

/// <summary>A PublishRequest as bytes: the body a <see cref="ProducerBatch"/> encoded, then the stream's request id.</summary>
internal sealed class EncodedPublish(ReadOnlyMemory<byte> body, ulong requestId)
{
    private const byte RequestIdTag = 3 << 3;   // PublishRequest.request_id, a varint

    /// <summary>Writes the request into gRPC's buffer: the body in pieces (no copy of it as one array), then the id.</summary>
    public static void Write(EncodedPublish request, SerializationContext context)
    {
        var body = request.Body.Span;
        Span<byte> requestId = stackalloc byte[11];
        requestId[0] = RequestIdTag;
        int idBytes = 1 + ProducerBatch.WriteVarint(requestId[1..], request.RequestId);
        context.SetPayloadLength(body.Length + idBytes);
        var writer = context.GetBufferWriter();
        while (!body.IsEmpty)
        {
            var span = writer.GetSpan(Math.Min(body.Length, 64 << 10));
            int count = Math.Min(span.Length, body.Length);
            body[..count].CopyTo(span);
            writer.Advance(count);
            body = body[count..];
        }
        requestId[..idBytes].CopyTo(writer.GetSpan(idBytes));
        writer.Advance(idBytes);
        context.Complete();
    }

    public ReadOnlyMemory<byte> Body { get; } = body;

    public ulong RequestId { get; } = requestId;
}
