using System.Threading.Channels;
using Broker.Protocol.V1;
using Broker.Server.Grpc;
using Broker.Server.Hosting;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using global::Grpc.Core;

namespace Broker.Server.Sessions;

/// <summary>
/// One consumer's stream after its subscribe. Three loops share one cancellation:
/// <list type="bullet">
/// <item>delivery: while the consumer holds less than max in flight, fetch from the group and queue frames;</item>
/// <item>requests: apply each settle frame (ack, nack, extend, release) at once (credit returns immediately) and
/// queue its answer; a stop frame ends the delivery loop, which then answers <c>stopped</c>;</item>
/// <item>answers: await each frame's result in order (acks: durability) and queue its SettleResponse.</item>
/// </list>
/// All responses go through one bounded channel whose single reader is the only writer of the gRPC stream.
/// When any loop ends (client half-close, disconnect, error, topic closing) the session ends and every message the
/// consumer held becomes visible again to the rest of the group. When the broker drains (<see cref="ShutdownDrain"/>)
/// the delivery loop stops and the session gives its consumer the grace period to settle (<see cref="DrainAsync"/>).
/// </summary>
internal sealed class ConsumerSession(Topic topic, ConsumerGroup group, GroupMember member, int maxItemsPerFrame, ShutdownDrain drain)
{
    private const int MaxDeliveriesPerFetch = 1_000;
    private const int MaxFrameBytes = 1 << 20;
    private const int OutboxFrames = 64;
    private const int MaxUnansweredFrames = 1_024;

    private readonly SettleRequestReader _settleRequests = new(maxItemsPerFrame);

    public async Task<SessionEnd> RunAsync(Subscribed subscribed, IAsyncStreamReader<ConsumeRequest> requests,
        IServerStreamWriter<ConsumeResponse> responses, CancellationToken callCancelled)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(callCancelled, group.Closing);
        // The drain stops deliveries in every session at once, before anything else of the shutdown.
        // A client's stop frame stops deliveries too, and nothing else: the stream stays open for its settles.
        using var clientStop = new CancellationTokenSource();
        using var stopDeliveries = CancellationTokenSource.CreateLinkedTokenSource(stop.Token, drain.Draining, clientStop.Token);
        using var stopReading = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
        var end = SessionEnd.Closed;
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
            deliveries = DeliverUntilStoppedAsync(outbox.Writer, stopDeliveries.Token, clientStop.Token, stop.Token);
            reader = ReadRequestsAsync(requests, unanswered.Writer, clientStop, stopReading.Token, stop.Token);
            answers = AnswerAsync(unanswered.Reader, outbox.Writer, stop.Token);
            var first = await Task.WhenAny(writer, deliveries, reader, answers).ConfigureAwait(false);
            bool drainAfterStop = false;
            if (first == deliveries && deliveries.IsCompletedSuccessfully && ClientStopped(clientStop.Token, stop.Token))
            {
                // Stopped by its client, the stream stays open for settles, and a shutdown still bounds it by the grace.
                // Linked to the session's own stop, so the wait goes away with the session (no registration left behind).
                using var drainOrEnd = CancellationTokenSource.CreateLinkedTokenSource(drain.Draining, stop.Token);
                var drainBegins = Task.Delay(Timeout.Infinite, drainOrEnd.Token).ContinueWith(static _ => { }, TaskScheduler.Default);
                first = await Task.WhenAny(writer, reader, answers, drainBegins).ConfigureAwait(false);
                drainAfterStop = first == drainBegins && drain.Draining.IsCancellationRequested && !stop.IsCancellationRequested;
            }
            if (first == reader && reader.IsCompletedSuccessfully)
            {
                await EndGracefullyAsync(stopDeliveries, deliveries, answers, outbox.Writer, writer).ConfigureAwait(false);
            }
            else if (drainAfterStop
                     || (first == deliveries && deliveries.IsCompletedSuccessfully && drain.Draining.IsCancellationRequested && !stop.IsCancellationRequested))
            {
                bool cut = await DrainAsync(outbox.Writer, stopReading, reader, unanswered.Writer, answers, writer, stop.Token).ConfigureAwait(false);
                end = cut ? SessionEnd.CutAtGraceEnd : SessionEnd.Drained;
            }
            else
            {
                await first.ConfigureAwait(false);
            }
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
        return end;
    }

    /// <summary>
    /// The broker is shutting down and deliveries have stopped: tell the consumer (after the last delivery frame, so
    /// it can release exactly what it never started), let it settle until it holds nothing or the grace is over, then
    /// tell it the stream is done and wait (bounded) for its half-close, answering every settle frame read until then
    /// (acks once durable). True when the consumer still held deliveries at the end: those go back to the group when
    /// the session leaves it.
    /// </summary>
    private async Task<bool> DrainAsync(ChannelWriter<OutboundFrame> outbox, CancellationTokenSource stopReading, Task reader,
        ChannelWriter<(ulong, Task<SettleResult>)> unanswered, Task answers, Task writer, CancellationToken stop)
    {
        var notice = new Draining { GraceMs = (uint)drain.Grace.TotalMilliseconds };
        await outbox.WriteAsync(new OutboundFrame(new ConsumeResponse { Draining = notice }), stop).ConfigureAwait(false);
        await SettledWithinGraceAsync(reader, writer, stop).ConfigureAwait(false);
        await AwaitHalfCloseAsync(outbox, reader, writer, stop).ConfigureAwait(false);
        stopReading.Cancel();
        await reader.ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        // A reader stopped mid-stream leaves the channel open; what it queued is still answered.
        unanswered.TryComplete();
        await answers.ConfigureAwait(false);
        // The writer flushes the rest before the call ends (RunAsync waits for it).
        outbox.TryComplete();
        return group.FreeCredit(member) < member.MaxInFlight;
    }

    /// <summary>
    /// Tells a consumer whose stream is done (<c>drained</c>) to half-close, and waits for that, up to
    /// <see cref="ShutdownDrain.HalfCloseAllowance"/>. Ending the stream first would put the answers just sent at risk:
    /// the broker closes its connections as soon as the drain is over, and an HTTP/2 client still sending on a stream
    /// when its connection closes drops the frames of that stream it has not read yet (SocketsHttpHandler discards
    /// them; the SDK then saw "The HTTP/2 server closed the connection" instead of its last ack's answer). A client
    /// that half-closed has finished sending, so the stream is complete on its side as soon as the status arrives,
    /// and what it has not read yet stays readable.
    /// </summary>
    private async Task AwaitHalfCloseAsync(ChannelWriter<OutboundFrame> outbox, Task reader, Task writer, CancellationToken stop)
    {
        // A client that half-closed or went away already: nothing to wait for.
        if (reader.IsCompleted || writer.IsCompleted)
            return;
        await outbox.WriteAsync(new OutboundFrame(new ConsumeResponse { Drained = new Drained() }), stop).ConfigureAwait(false);
        try
        {
            await Task.WhenAny(reader, writer).WaitAsync(ShutdownDrain.HalfCloseAllowance, stop).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // A client that does not know the notice: its stream ends all the same.
        }
    }

    /// <summary>Waits until the consumer holds nothing, or the grace ends or the client stops talking.</summary>
    private async Task SettledWithinGraceAsync(Task reader, Task writer, CancellationToken stop)
    {
        using var grace = CancellationTokenSource.CreateLinkedTokenSource(stop);
        grace.CancelAfter(drain.Grace);
        while (true)
        {
            var creditReturned = member.CreditReturned.WaitTask;
            if (group.FreeCredit(member) >= member.MaxInFlight)
                return;
            // A client that half-closed or went away settles nothing more.
            if (reader.IsCompleted || writer.IsCompleted)
                return;
            try
            {
                await Task.WhenAny(creditReturned, reader, writer).WaitAsync(grace.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!stop.IsCancellationRequested)
            {
                return;
            }
        }
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
    /// Cancellation, the topic closing or the group reset or deleted, or the client going away (a reset surfaces as an I/O error): the end of the
    /// stream, not a failure to report. The topic-closing case becomes UNAVAILABLE in <see cref="ConsumerService"/>.
    /// </summary>
    private bool IsEndOfStream(Exception error, CancellationToken stop, CancellationToken callCancelled) =>
        error switch
        {
            OperationCanceledException => stop.IsCancellationRequested || group.Closing.IsCancellationRequested,
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

    /// <summary>
    /// Fetches and queues deliveries until <paramref name="stopFetching"/>, then returns (without an error: the
    /// caller tells a drain from the stream's end). A batch already taken from the group is still queued, with
    /// <paramref name="stop"/>: its messages are leased to this consumer and must reach it.
    /// </summary>
    private async Task DeliverAsync(ChannelWriter<OutboundFrame> outbox, CancellationToken stopFetching, CancellationToken stop)
    {
        try
        {
            while (!stopFetching.IsCancellationRequested)
            {
                var creditReturned = member.CreditReturned.WaitTask;
                int free = group.FreeCredit(member);
                if (free <= 0)
                {
                    await creditReturned.WaitAsync(stopFetching).ConfigureAwait(false);
                    continue;
                }
                var batch = await group.FetchAsync(member, Math.Min(free, MaxDeliveriesPerFetch), stopFetching).ConfigureAwait(false);
                await QueueAsync(outbox, batch, stop).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stopFetching.IsCancellationRequested)
        {
        }
    }

    /// <summary>
    /// <see cref="DeliverAsync"/>, then, when it stopped because the client sent a stop frame, the <c>stopped</c> answer:
    /// after the last delivery frame, so the client knows it has everything it will get.
    /// </summary>
    private async Task DeliverUntilStoppedAsync(ChannelWriter<OutboundFrame> outbox, CancellationToken stopFetching,
        CancellationToken clientStop, CancellationToken stop)
    {
        await DeliverAsync(outbox, stopFetching, stop).ConfigureAwait(false);
        if (ClientStopped(clientStop, stop))
            await outbox.WriteAsync(new OutboundFrame(new ConsumeResponse { Stopped = new Stopped() }), stop).ConfigureAwait(false);
    }

    /// <summary>Deliveries stopped for the client's stop frame alone (a drain sends its own notice instead).</summary>
    private bool ClientStopped(CancellationToken clientStop, CancellationToken stop) =>
        clientStop.IsCancellationRequested && !drain.Draining.IsCancellationRequested && !stop.IsCancellationRequested;

    private async Task QueueAsync(ChannelWriter<OutboundFrame> outbox, DeliveryBatch batch, CancellationToken cancellationToken)
    {
        var frame = new Deliveries();
        int frameBytes = 0;
        bool traced = BrokerTracing.Source.HasListeners();
        foreach (var delivery in batch)
        {
            if (traced)
                BrokerTracing.RecordDeliver(topic.Name, group.Name, delivery.Message, delivery.Attempt);
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

    private async Task ReadRequestsAsync(IAsyncStreamReader<ConsumeRequest> requests,
        ChannelWriter<(ulong, Task<SettleResult>)> unanswered, CancellationTokenSource clientStop, CancellationToken stopReading, CancellationToken stop)
    {
        await foreach (var request in requests.ReadAllAsync(stopReading).ConfigureAwait(false))
        {
            if (request.KindCase == ConsumeRequest.KindOneofCase.Stop)
            {
                // Answered by the delivery loop once it has queued its last frame; a second stop changes nothing.
                clientStop.Cancel();
                continue;
            }
            var frame = _settleRequests.Read(request);
            // The in-memory part runs now, synchronously; for acks the task completes once they are durable. A refused
            // frame is answered in its turn like any other, and changes nothing.
            var result = frame.Action is { } action ? group.SettleAsync(action, frame.Deliveries) : SettleRequestReader.Refuse(frame.Refusal!);
            // Queued even if reading stops meanwhile (a drain): what took effect gets its answer.
            await unanswered.WriteAsync((frame.RequestId, result), stop).ConfigureAwait(false);
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

/// <summary>How a session ended: closed by its client or the topic, or by the shutdown's drain (in time, or cut at the grace's end).</summary>
internal enum SessionEnd
{
    Closed,
    Drained,
    CutAtGraceEnd,
}

/// <summary>A response queued for the stream, and the delivery batch whose memory it frees once written.</summary>
internal readonly record struct OutboundFrame(ConsumeResponse Response, DeliveryBatch? Written = null);
