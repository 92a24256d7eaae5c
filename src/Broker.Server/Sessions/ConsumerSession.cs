using System.Threading.Channels;
using Broker.Protocol.V1;
using Broker.Server.Grpc;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using global::Grpc.Core;
using AckFailure = Broker.Protocol.V1.AckFailure;

namespace Broker.Server.Sessions;

/// <summary>
/// One consumer's stream after its subscribe. Three loops share one cancellation:
/// <list type="bullet">
/// <item>delivery: while the consumer holds less than max in flight, fetch from the group and queue frames;</item>
/// <item>requests: apply each ack frame in memory at once (credit returns immediately) and queue its confirmation;</item>
/// <item>confirmations: await each ack frame's durability in order and queue its AckResponse.</item>
/// </list>
/// All responses go through one bounded channel whose single reader is the only writer of the gRPC stream.
/// When any loop ends (client half-close, disconnect, error, topic closing) the session ends and every message the
/// consumer held becomes visible again to the rest of the group.
/// </summary>
internal sealed class ConsumerSession(Topic topic, ConsumerGroup group, int maxInFlight, int maxAcksPerFrame)
{
    private const int MaxDeliveriesPerFetch = 1_000;
    private const int MaxFrameBytes = 1 << 20;
    private const int OutboxFrames = 64;
    private const int MaxUnconfirmedAckFrames = 1_024;

    public async Task RunAsync(Subscribed subscribed, IAsyncStreamReader<ConsumeRequest> requests,
        IServerStreamWriter<ConsumeResponse> responses, CancellationToken callCancelled)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(callCancelled, topic.Closing);
        var outbox = Channel.CreateBounded<ConsumeResponse>(
            new BoundedChannelOptions(OutboxFrames) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true });
        var unconfirmed = Channel.CreateBounded<(ulong AckId, Task<(int, IReadOnlyList<Storage.Groups.AckFailure>)> Durable)>(
            new BoundedChannelOptions(MaxUnconfirmedAckFrames) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = true });

        await outbox.Writer.WriteAsync(new ConsumeResponse { Subscribed = subscribed }, stop.Token).ConfigureAwait(false);
        var member = group.Join(maxInFlight);
        var writer = WriteAllAsync(outbox.Reader, responses, stop.Token);
        var deliveries = DeliverAsync(member, outbox.Writer, stop.Token);
        var reader = ReadRequestsAsync(requests, unconfirmed.Writer, stop.Token);
        var confirmations = ConfirmAcksAsync(unconfirmed.Reader, outbox.Writer, stop.Token);
        try
        {
            var first = await Task.WhenAny(writer, deliveries, reader, confirmations).ConfigureAwait(false);
            if (first == reader && reader.IsCompletedSuccessfully)
            {
                // The client half-closed: confirm the acks it sent, then end.
                await confirmations.ConfigureAwait(false);
            }
            await first.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        finally
        {
            stop.Cancel();
            group.Leave(member);
            outbox.Writer.TryComplete();
            unconfirmed.Writer.TryComplete();
            await Task.WhenAll(writer, deliveries, reader, confirmations).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        }
        var failed = new[] { writer, deliveries, reader, confirmations }.FirstOrDefault(t => t.IsFaulted && t.Exception!.InnerException is not OperationCanceledException);
        if (failed is not null)
            throw failed.Exception!.InnerException!;
    }

    private static async Task WriteAllAsync(ChannelReader<ConsumeResponse> outbox, IServerStreamWriter<ConsumeResponse> responses, CancellationToken cancellationToken)
    {
        await foreach (var response in outbox.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            await responses.WriteAsync(response, cancellationToken).ConfigureAwait(false);
    }

    private async Task DeliverAsync(GroupMember member, ChannelWriter<ConsumeResponse> outbox, CancellationToken cancellationToken)
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
                    await outbox.WriteAsync(new ConsumeResponse { Deliveries = frame }, cancellationToken).ConfigureAwait(false);
                    frame = new Deliveries();
                    frameBytes = 0;
                }
                frame.Items.Add(item);
                frameBytes += size;
            }
            if (frame.Items.Count > 0)
                await outbox.WriteAsync(new ConsumeResponse { Deliveries = frame }, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task ReadRequestsAsync(IAsyncStreamReader<ConsumeRequest> requests,
        ChannelWriter<(ulong, Task<(int, IReadOnlyList<Storage.Groups.AckFailure>)>)> unconfirmed, CancellationToken cancellationToken)
    {
        await foreach (var request in requests.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            switch (request.KindCase)
            {
                case ConsumeRequest.KindOneofCase.Ack:
                    var ack = request.Ack;
                    if (ack.Deliveries.Count > maxAcksPerFrame)
                        throw BrokerStatus.InvalidRequest($"an ack frame holds at most {maxAcksPerFrame} deliveries; this one has {ack.Deliveries.Count}");
                    var acks = new AckRequest[ack.Deliveries.Count];
                    for (int i = 0; i < acks.Length; i++)
                        acks[i] = new AckRequest((long)ack.Deliveries[i].Offset, ack.Deliveries[i].Token);
                    // The in-memory part runs now, synchronously; the task completes when the acks are durable.
                    var durable = group.AcknowledgeAsync(acks, CancellationToken.None);
                    await unconfirmed.WriteAsync((ack.AckId, durable), cancellationToken).ConfigureAwait(false);
                    break;
                case ConsumeRequest.KindOneofCase.Subscribe:
                    throw BrokerStatus.InvalidRequest("this stream is subscribed already; open another stream for another subscription");
                default:
                    throw BrokerStatus.InvalidRequest("a Consume request must carry 'subscribe' or 'ack'");
            }
        }
        unconfirmed.TryComplete();
    }

    private static async Task ConfirmAcksAsync(ChannelReader<(ulong AckId, Task<(int, IReadOnlyList<Storage.Groups.AckFailure>)> Durable)> unconfirmed,
        ChannelWriter<ConsumeResponse> outbox, CancellationToken cancellationToken)
    {
        await foreach (var (ackId, durable) in unconfirmed.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            var response = new AckResponse { AckId = ackId };
            try
            {
                var (accepted, failures) = await durable.ConfigureAwait(false);
                response.Accepted = (uint)accepted;
                foreach (var failure in failures)
                {
                    response.Failures.Add(new AckFailure
                    {
                        Delivery = new DeliveryRef { Offset = (ulong)failure.Request.Offset, Token = failure.Request.Token },
                        Error = BrokerStatus.ToError(failure.Code, failure.Message),
                    });
                }
            }
            catch (Exception error)
            {
                // The acks' durability failed: none of this frame is confirmed.
                response.Failures.Add(new AckFailure { Error = BrokerStatus.ToError(error) });
            }
            await outbox.WriteAsync(new ConsumeResponse { AckResponse = response }, cancellationToken).ConfigureAwait(false);
        }
    }
}
