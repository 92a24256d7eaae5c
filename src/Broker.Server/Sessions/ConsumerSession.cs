using System.Threading.Channels;
using Broker.Protocol.V1;
using Broker.Server.Grpc;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using global::Grpc.Core;

namespace Broker.Server.Sessions;

/// <summary>
/// One consumer's stream after its subscribe. Three loops share one cancellation:
/// <list type="bullet">
/// <item>delivery: while the consumer holds less than max in flight, fetch from the group and queue frames;</item>
/// <item>requests: apply each settle frame (ack, nack, extend, release) at once (credit returns immediately) and
/// queue its answer;</item>
/// <item>answers: await each frame's result in order (acks: durability) and queue its SettleResponse.</item>
/// </list>
/// All responses go through one bounded channel whose single reader is the only writer of the gRPC stream.
/// When any loop ends (client half-close, disconnect, error, topic closing) the session ends and every message the
/// consumer held becomes visible again to the rest of the group.
/// </summary>
internal sealed class ConsumerSession(Topic topic, ConsumerGroup group, GroupMember member, int maxItemsPerFrame)
{
    private const int MaxDeliveriesPerFetch = 1_000;
    private const int MaxFrameBytes = 1 << 20;
    private const int OutboxFrames = 64;
    private const int MaxUnansweredFrames = 1_024;

    private readonly SettleRequestReader _settleRequests = new(maxItemsPerFrame);

    public async Task RunAsync(Subscribed subscribed, IAsyncStreamReader<ConsumeRequest> requests,
        IServerStreamWriter<ConsumeResponse> responses, CancellationToken callCancelled)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(callCancelled, topic.Closing);
        using var stopDeliveries = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
        var outbox = Channel.CreateBounded<OutboundFrame>(
            new BoundedChannelOptions(OutboxFrames) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, AllowSynchronousContinuations = true });
        var unanswered = Channel.CreateBounded<(ulong RequestId, Task<SettleResult> Result)>(
            new BoundedChannelOptions(MaxUnansweredFrames) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = true, AllowSynchronousContinuations = true });

        Task writer = Task.CompletedTask, deliveries = Task.CompletedTask, reader = Task.CompletedTask, answers = Task.CompletedTask;
        try
        {
            await outbox.Writer.WriteAsync(new OutboundFrame(new ConsumeResponse { Subscribed = subscribed }), stop.Token).ConfigureAwait(false);
            // The writer stops only when the client goes away or the outbox is complete: cancelling a write in flight
            // would reset the HTTP/2 stream, and the client would see CANCELLED instead of the call's real status.
            writer = WriteAllAsync(outbox.Reader, responses, callCancelled);
            deliveries = DeliverAsync(outbox.Writer, stopDeliveries.Token);
            reader = ReadRequestsAsync(requests, unanswered.Writer, stop.Token);
            answers = AnswerAsync(unanswered.Reader, outbox.Writer, stop.Token);
            var first = await Task.WhenAny(writer, deliveries, reader, answers).ConfigureAwait(false);
            if (first == reader && reader.IsCompletedSuccessfully)
                await EndGracefullyAsync(stopDeliveries, deliveries, answers, outbox.Writer, writer).ConfigureAwait(false);
            else
                await first.ConfigureAwait(false);
        }
        catch (Exception error) when (IsEndOfStream(error, stop.Token, callCancelled))
        {
        }
        finally
        {
            stop.Cancel();
            unanswered.Writer.TryComplete();
            await Task.WhenAll(deliveries, reader, answers).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
            // Flush what is queued; a client that does not read is cut off after a while.
            outbox.Writer.TryComplete();
            await writer.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
            // Only now, with no fetch running for this consumer, can everything it held be given back for good.
            group.Leave(member);
        }
        var failed = new[] { deliveries, reader, answers }
            .FirstOrDefault(t => t.IsFaulted && !IsEndOfStream(t.Exception!.InnerException!, stop.Token, callCancelled));
        if (failed is not null)
            throw failed.Exception!.InnerException!;
    }

    /// <summary>
    /// The client half-closed: stop delivering, answer every settle frame it sent, let the writer flush those
    /// answers, and end the call with OK.
    /// </summary>
    private static async Task EndGracefullyAsync(CancellationTokenSource stopDeliveries, Task deliveries, Task answers,
        ChannelWriter<OutboundFrame> outbox, Task writer)
    {
        stopDeliveries.Cancel();
        await deliveries.ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        await answers.ConfigureAwait(false);
        outbox.TryComplete();
        await writer.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
    }

    /// <summary>
    /// Cancellation, the topic closing, or the client going away (a reset surfaces as an I/O error): the end of the
    /// stream, not a failure to report. The topic-closing case becomes UNAVAILABLE in <see cref="ConsumerService"/>.
    /// </summary>
    private bool IsEndOfStream(Exception error, CancellationToken stop, CancellationToken callCancelled) =>
        error switch
        {
            OperationCanceledException => stop.IsCancellationRequested || topic.Closing.IsCancellationRequested,
            IOException => callCancelled.IsCancellationRequested,
            RpcException { StatusCode: StatusCode.Cancelled } => true,
            _ => false,
        };

    private static async Task WriteAllAsync(ChannelReader<OutboundFrame> outbox, IServerStreamWriter<ConsumeResponse> responses, CancellationToken cancellationToken)
    {
        await foreach (var frame in outbox.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            await responses.WriteAsync(frame.Response, cancellationToken).ConfigureAwait(false);
            // The frame is serialized into the stream's buffers by now: its payloads' memory can serve other reads.
            frame.Written?.ReleaseBuffers();
        }
    }

    private async Task DeliverAsync(ChannelWriter<OutboundFrame> outbox, CancellationToken cancellationToken)
    {
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var creditReturned = member.CreditReturned.WaitTask;
            int free = group.FreeCredit(member);
            if (free <= 0)
            {
                await creditReturned.WaitAsync(cancellationToken).ConfigureAwait(false);
                continue;
            }
            var batch = await group.FetchAsync(member, Math.Min(free, MaxDeliveriesPerFetch), cancellationToken).ConfigureAwait(false);
            var frame = new Deliveries();
            int frameBytes = 0;
            foreach (var delivery in batch)
            {
                var item = ProtoConversions.ToDelivery(topic.Name, delivery);
                int size = item.Payload.Length + item.Key.Length + 64;
                if (frame.Items.Count > 0 && frameBytes + size > MaxFrameBytes)
                {
                    await outbox.WriteAsync(new OutboundFrame(new ConsumeResponse { Deliveries = frame }), cancellationToken).ConfigureAwait(false);
                    frame = new Deliveries();
                    frameBytes = 0;
                }
                frame.Items.Add(item);
                frameBytes += size;
            }
            // The batch's memory goes back with its last frame: the single writer writes frames in order, so the
            // earlier ones are written by then. A frame dropped unwritten (the stream ending) leaves it to the GC.
            if (frame.Items.Count > 0)
                await outbox.WriteAsync(new OutboundFrame(new ConsumeResponse { Deliveries = frame }, batch), cancellationToken).ConfigureAwait(false);
            else
                batch.ReleaseBuffers();
        }
    }

    private async Task ReadRequestsAsync(IAsyncStreamReader<ConsumeRequest> requests,
        ChannelWriter<(ulong, Task<SettleResult>)> unanswered, CancellationToken cancellationToken)
    {
        await foreach (var request in requests.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            var frame = _settleRequests.Read(request);
            // The in-memory part runs now, synchronously; for acks the task completes once they are durable. A refused
            // frame is answered in its turn like any other, and changes nothing.
            var result = frame.Action is { } action ? group.SettleAsync(action, frame.Deliveries) : SettleRequestReader.Refuse(frame.Refusal!);
            await unanswered.WriteAsync((frame.RequestId, result), cancellationToken).ConfigureAwait(false);
        }
        unanswered.TryComplete();
    }

    private static async Task AnswerAsync(ChannelReader<(ulong RequestId, Task<SettleResult> Result)> unanswered,
        ChannelWriter<OutboundFrame> outbox, CancellationToken cancellationToken)
    {
        await foreach (var (requestId, pending) in unanswered.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            var response = new SettleResponse { RequestId = requestId };
            try
            {
                var result = await pending.ConfigureAwait(false);
                response.Accepted = (uint)result.Accepted;
                foreach (var failure in result.Failures)
                {
                    response.Failures.Add(new Protocol.V1.SettleFailure
                    {
                        Delivery = new Protocol.V1.DeliveryRef { Offset = (ulong)failure.Delivery.Offset, Token = failure.Delivery.Token },
                        Error = BrokerStatus.ToError(failure.Code, failure.Message),
                    });
                }
            }
            catch (Exception error)
            {
                // The frame was refused, or durability failed: nothing of this frame is confirmed.
                response.Failures.Add(new Protocol.V1.SettleFailure { Error = BrokerStatus.ToError(error) });
            }
            await outbox.WriteAsync(new OutboundFrame(new ConsumeResponse { Settled = response }), cancellationToken).ConfigureAwait(false);
        }
    }
}

/// <summary>A response queued for the stream, and the delivery batch whose memory it frees once written.</summary>
internal readonly record struct OutboundFrame(ConsumeResponse Response, DeliveryBatch? Written = null);
