using System.Threading.Channels;
using Broker.Protocol.V1;
using Broker.Server.Core;
using Broker.Server.Hosting;
using Broker.Storage.Errors;
using Broker.Storage.Topics;
using global::Grpc.Core;

namespace Broker.Server.Grpc;

/// <summary>
/// Publish and PublishStream. A response is written only once its batch is durable. On the stream, batches are
/// appended in arrival order and confirmed in the same order; up to <see cref="MaxUnconfirmedBatches"/> batches wait
/// for their commit at once, so one stream fills a group commit without waiting a round trip per batch. When the
/// broker drains, a stream stops reading, confirms every batch it accepted once durable, and ends with ShuttingDown.
/// </summary>
internal sealed partial class PublisherService(Publishing publishing, ShutdownDrain drain, ILogger<PublisherService> logger) : Publisher.PublisherBase
{
    private const int MaxUnconfirmedBatches = 256;

    public override async Task<PublishResponse> Publish(PublishRequest request, ServerCallContext context)
    {
        var topic = await AdmitAsync(request, context, context.CancellationToken).ConfigureAwait(false);
        var result = await Publishing.Append(topic, ProtoConversions.ToAppendMessages(request)).ConfigureAwait(false);
        return ProtoConversions.ToPublishResponse(result);
    }

    public override async Task PublishStream(IAsyncStreamReader<PublishRequest> requestStream,
        IServerStreamWriter<PublishResponse> responseStream, ServerCallContext context)
    {
        var unconfirmed = Channel.CreateBounded<(ulong RequestId, Task<AppendResult> Durable)>(
            new BoundedChannelOptions(MaxUnconfirmedBatches) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = true, AllowSynchronousContinuations = true });
        var confirmations = ConfirmInOrderAsync(unconfirmed.Reader, responseStream, context.CancellationToken);
        using var stopReading = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, drain.Draining);
        bool drained = false;
        try
        {
            await foreach (var request in requestStream.ReadAllAsync(stopReading.Token).ConfigureAwait(false))
            {
                Task<AppendResult> durable;
                try
                {
                    // The topic is awaited here (it may be opening on first use), before the next request is read, so
                    // the batches of one stream are appended in the order they arrived.
                    var topic = await AdmitAsync(request, context, stopReading.Token).ConfigureAwait(false);
                    durable = Publishing.Append(topic, ProtoConversions.ToAppendMessages(request));
                }
                catch (OperationCanceledException) when (stopReading.IsCancellationRequested)
                {
                    // The drain (or the call's end) came while the batch waited for its key's publish rate: it stays
                    // unanswered and unstored, like a batch not read yet, for the client to send again.
                    throw;
                }
                catch (Exception error)
                {
                    // One bad batch fails alone; the stream goes on.
                    durable = Task.FromException<AppendResult>(error);
                }
                await unconfirmed.Writer.WriteAsync((request.RequestId, durable), context.CancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (drain.Draining.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
        {
            // Stopped by the drain: the batches accepted so far are confirmed below, then the stream ends with 1201.
            drained = true;
        }
        finally
        {
            unconfirmed.Writer.TryComplete();
            await confirmations.ConfigureAwait(false);
        }
        if (drained)
        {
            await AwaitHalfCloseAsync(requestStream, responseStream, context.CancellationToken).ConfigureAwait(false);
            throw BrokerStatus.ToRpcException(BrokerErrorCode.ShuttingDown, "the broker is shutting down; batches not confirmed on this stream were not accepted");
        }
    }

    /// <summary>
    /// Tells the client the stream is drained (every batch read is answered) and waits, at most
    /// <see cref="ShutdownDrain.HalfCloseAllowance"/>, for its half-close, dropping batches it sent meanwhile (unanswered:
    /// not stored). Ending the stream while the client still sends would let its HTTP/2 stack discard the answers it had
    /// not read yet when the broker closes the connection right after (the consume stream's "drained", the same cause).
    /// </summary>
    private static async Task AwaitHalfCloseAsync(IAsyncStreamReader<PublishRequest> requestStream, IServerStreamWriter<PublishResponse> responseStream,
        CancellationToken cancellationToken)
    {
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        wait.CancelAfter(ShutdownDrain.HalfCloseAllowance);
        try
        {
            await responseStream.WriteAsync(new PublishResponse { Drained = true }, wait.Token).ConfigureAwait(false);
            while (await requestStream.MoveNext(wait.Token).ConfigureAwait(false))
            {
            }
        }
        catch (Exception error) when (error is OperationCanceledException or IOException or InvalidOperationException or RpcException)
        {
            // The client did not half-close in time, or went away: the stream ends all the same.
        }
    }

    /// <summary>
    /// The batch's topic once <see cref="Publishing"/> admits it (grant, publish rate, topic): on a stream the next
    /// batch is not read meanwhile, so a producer past its rate feels backpressure.
    /// </summary>
    private ValueTask<Topic> AdmitAsync(PublishRequest request, ServerCallContext context, CancellationToken stopReading)
    {
        if (string.IsNullOrEmpty(request.Topic))
            throw new BrokerException(BrokerErrorCode.InvalidRequest, "topic must be set");
        return publishing.AdmitAsync(AuthInterceptor.CallerOf(context), request.Topic, request.Messages.Count, TopicLookup.CreateWhenAllowed,
            stopReading);
    }

    private async Task ConfirmInOrderAsync(ChannelReader<(ulong RequestId, Task<AppendResult> Durable)> unconfirmed,
        IServerStreamWriter<PublishResponse> responses, CancellationToken cancellationToken)
    {
        await foreach (var (requestId, durable) in unconfirmed.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            PublishResponse response;
            try
            {
                response = ProtoConversions.ToPublishResponse(await durable.ConfigureAwait(false), requestId);
            }
            catch (Exception error)
            {
                if (error is not BrokerException)
                    Log.UnexpectedBatchError(logger, error);
                response = new PublishResponse { RequestId = requestId, Error = BrokerStatus.ToError(error) };
            }
            await responses.WriteAsync(response, cancellationToken).ConfigureAwait(false);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2201, Level = LogLevel.Error, Message = "Unexpected error appending a batch on a publish stream")]
        public static partial void UnexpectedBatchError(ILogger logger, Exception error);
    }
}
