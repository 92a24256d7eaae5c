using System.Threading.Channels;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.Perf.Floor;

/// <summary>Confirms each publish as soon as it is read: no log, no commit.</summary>
internal sealed class FloorPublisher(MemoryTopics topics) : Publisher.PublisherBase
{
    public override async Task PublishStream(IAsyncStreamReader<PublishRequest> requestStream, IServerStreamWriter<PublishResponse> responseStream, ServerCallContext context)
    {
        await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken))
        {
            long first = topics.GetOrCreate(request.Topic).Publish(request.Messages);
            await responseStream.WriteAsync(new PublishResponse { RequestId = request.RequestId, FirstOffset = (ulong)first, Count = (uint)request.Messages.Count });
        }
    }
}

/// <summary>
/// The consume stream with the broker's shape (a subscribe, delivery frames of what is waiting up to max in flight,
/// one settle answer per ack frame, one writer per response stream), and no group state: an ack only frees credit.
/// </summary>
internal sealed class FloorConsumer(MemoryTopics topics) : Consumer.ConsumerBase
{
    public override async Task Consume(IAsyncStreamReader<ConsumeRequest> requestStream, IServerStreamWriter<ConsumeResponse> responseStream, ServerCallContext context)
    {
        if (!await requestStream.MoveNext(context.CancellationToken) || requestStream.Current.KindCase != ConsumeRequest.KindOneofCase.Subscribe)
            return;
        var subscribe = requestStream.Current.Subscribe;
        var waiting = topics.GetOrCreate(subscribe.Topic).Group(subscribe.Group);
        int maxInFlight = (int)Math.Max(1, subscribe.MaxInFlight);
        using var credit = new SemaphoreSlim(maxInFlight);
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        var outbox = Channel.CreateBounded<ConsumeResponse>(new BoundedChannelOptions(64) { SingleReader = true, AllowSynchronousContinuations = true });
        var writing = WriteAllAsync(outbox.Reader, responseStream);
        await outbox.Writer.WriteAsync(new ConsumeResponse { Subscribed = new Subscribed { Topic = subscribe.Topic, Group = subscribe.Group, MaxInFlight = (uint)maxInFlight } });
        var delivering = DeliverAsync(waiting, credit, outbox.Writer, ended.Token);
        try
        {
            await foreach (var request in requestStream.ReadAllAsync(context.CancellationToken))
            {
                if (request.KindCase != ConsumeRequest.KindOneofCase.Ack)
                    continue;
                credit.Release(request.Ack.Deliveries.Count);
                await outbox.Writer.WriteAsync(new ConsumeResponse { Settled = new SettleResponse { RequestId = request.Ack.RequestId, Accepted = (uint)request.Ack.Deliveries.Count } });
            }
        }
        catch (Exception error) when (error is IOException or OperationCanceledException)
        {
            // The client went away: end the stream as the broker would.
        }
        await ended.CancelAsync();
        await delivering;
        outbox.Writer.TryComplete();
        await writing;
    }

    private static async Task DeliverAsync(ChannelReader<Delivery> waiting, SemaphoreSlim credit, ChannelWriter<ConsumeResponse> outbox, CancellationToken ended)
    {
        try
        {
            while (await waiting.WaitToReadAsync(ended))
            {
                await credit.WaitAsync(ended);
                // Each message in the frame holds one credit; a credit taken for a message that is not there goes back.
                var frame = new Deliveries();
                while (true)
                {
                    if (!waiting.TryRead(out var delivery))
                    {
                        credit.Release();
                        break;
                    }
                    frame.Items.Add(delivery);
                    if (!credit.Wait(0))
                        break;
                }
                if (frame.Items.Count > 0)
                    await outbox.WriteAsync(new ConsumeResponse { Deliveries = frame }, ended);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static async Task WriteAllAsync(ChannelReader<ConsumeResponse> outbox, IServerStreamWriter<ConsumeResponse> responseStream)
    {
        try
        {
            await foreach (var response in outbox.ReadAllAsync())
                await responseStream.WriteAsync(response);
        }
        catch (Exception error) when (error is IOException or InvalidOperationException)
        {
            // The stream ended while a frame was being written.
        }
    }
}

/// <summary>The admin calls the runner makes; server stats describe this process, so the runner's costs compare.</summary>
internal sealed class FloorAdmin(MemoryTopics topics) : Admin.AdminBase
{
    public override Task<CreateTopicResponse> CreateTopic(CreateTopicRequest request, ServerCallContext context)
    {
        topics.GetOrCreate(request.Name);
        return Task.FromResult(new CreateTopicResponse { Created = true });
    }

    public override Task<DeleteTopicResponse> DeleteTopic(DeleteTopicRequest request, ServerCallContext context)
    {
        topics.Delete(request.Name);
        return Task.FromResult(new DeleteTopicResponse());
    }

    public override Task<CreateGroupResponse> CreateGroup(CreateGroupRequest request, ServerCallContext context)
    {
        topics.GetOrCreate(request.Topic).Group(request.Group);
        return Task.FromResult(new CreateGroupResponse { Created = true });
    }

    public override Task<ServerStats> GetServerStats(GetServerStatsRequest request, ServerCallContext context) =>
        Task.FromResult(Broker.Server.Grpc.ProcessStats.Capture());
}
