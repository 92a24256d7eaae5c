using Broker.Protocol.V1;
using Broker.Server.Hosting;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using global::Grpc.Core;

namespace Broker.Server.Grpc;

/// <summary>Topic administration, each call a thin translation to <see cref="TopicStore"/>, and the process's own numbers.</summary>
internal sealed class AdminService(TopicStore store, ShutdownDrain drain) : Admin.AdminBase
{
    public override async Task<CreateTopicResponse> CreateTopic(CreateTopicRequest request, ServerCallContext context) =>
        new() { Created = await store.CreateTopicAsync(request.Name, request.IfNotExists, context.CancellationToken).ConfigureAwait(false) };

    public override async Task<DeleteTopicResponse> DeleteTopic(DeleteTopicRequest request, ServerCallContext context)
    {
        await store.DeleteTopicAsync(request.Name, context.CancellationToken).ConfigureAwait(false);
        return new DeleteTopicResponse();
    }

    public override Task<ListTopicsResponse> ListTopics(ListTopicsRequest request, ServerCallContext context) =>
        Task.FromResult(new ListTopicsResponse { Names = { store.ListTopics() } });

    public override async Task<TopicDescription> DescribeTopic(DescribeTopicRequest request, ServerCallContext context)
    {
        var topic = await store.GetTopicAsync(request.Name, context.CancellationToken).ConfigureAwait(false);
        var info = await topic.DescribeAsync(context.CancellationToken).ConfigureAwait(false);
        return ProtoConversions.ToDescription(info, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
    }

    public override async Task<CreateGroupResponse> CreateGroup(CreateGroupRequest request, ServerCallContext context)
    {
        var topic = await store.GetTopicAsync(request.Topic, context.CancellationToken).ConfigureAwait(false);
        var start = ProtoConversions.ToStart(request.Start, request.StartOffset, request.StartTimeUnixMs);
        var (_, created) = await topic.GetOrCreateGroupAsync(request.Group, start, ProtoConversions.ToPolicy(request.Settings), context.CancellationToken)
            .ConfigureAwait(false);
        if (!created && !request.IfNotExists)
            throw BrokerStatus.ToRpcException(BrokerErrorCode.GroupAlreadyExists, $"group '{request.Group}' of topic '{request.Topic}' already exists");
        return new CreateGroupResponse { Created = created };
    }

    public override async Task<RedriveResponse> Redrive(RedriveRequest request, ServerCallContext context)
    {
        // A redrive can run long: the drain stops it (each letter moved so far is moved durably; the rest stay put).
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, drain.Draining);
        var result = await DeadLetterRedrive.RedriveAsync(store, request.DeadLetterTopic, (int)Math.Min(request.MaxMessages, int.MaxValue), stop.Token)
            .ConfigureAwait(false);
        return new RedriveResponse { Moved = (uint)result.Moved, Skipped = (uint)result.Skipped };
    }

    public override Task<ServerStats> GetServerStats(GetServerStatsRequest request, ServerCallContext context)
    {
        var stats = ProcessStats.Capture();
        stats.OpenTopics = (uint)store.OpenTopicCount;
        return Task.FromResult(stats);
    }
}
